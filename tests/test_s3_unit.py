"""The host side of S3 on its own, against a real S3 HTTP endpoint (moto's
server on loopback): URIs, downloads under temporary names with size checks,
multipart uploads, symlinks and unchanged files skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distproc.agent.s3 import MULTIPART_BYTES, S3TransferError, download_objects, parse_s3_uri, upload_tree
from tests.s3server import MotoServer, start_moto_server


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/data/part-0", ("bucket", "data/part-0")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/a%20b", ("bucket", "a b")),
        ("https://bucket.s3.amazonaws.com/data/x", ("bucket", "data/x")),
        ("https://my.bucket.s3.eu-west-1.amazonaws.com/k", ("my.bucket", "k")),
        ("https://s3.eu-west-1.amazonaws.com/bucket/data/x", ("bucket", "data/x")),
        ("https://s3.amazonaws.com/bucket/", ("bucket", "")),
    ],
)
def test_s3_and_https_uris_name_a_bucket_and_key(uri: str, expected: tuple[str, str]) -> None:
    """The URI forms AWS accepts for S3Uri, virtual-hosted and path style."""
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["https://example.com/bucket/x", "s3:///key", "ftp://bucket/x"])
def test_other_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match=uri.split("/")[0]):
        parse_s3_uri(uri)


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    moto = start_moto_server("127.0.0.1")
    yield moto
    moto.stop()


@pytest.fixture
def s3(server: MotoServer) -> Any:
    client = server.client()
    client.create_bucket(Bucket="unit")
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="unit"):
        for obj in page.get("Contents", ()):
            client.delete_object(Bucket="unit", Key=obj["Key"])
    client.delete_bucket(Bucket="unit")


def _obj(key: str, size: int, rel: str) -> dict[str, Any]:
    return {"bucket": "unit", "key": key, "size": size, "rel": rel}


def test_small_and_large_objects_land_whole_under_their_paths(s3: Any, tmp_path: Path) -> None:
    """Small objects in one GET, large ones in ranged parts: every byte lands, no temporary name stays."""
    small, large = b"x" * 1000, os.urandom(MULTIPART_BYTES + 12345)
    s3.put_object(Bucket="unit", Key="in/a/small.bin", Body=small)
    s3.put_object(Bucket="unit", Key="in/large.bin", Body=large)
    seen: list[tuple[int, int]] = []
    files, size = download_objects(
        s3,
        [_obj("in/a/small.bin", len(small), "a/small.bin"), _obj("in/large.bin", len(large), "large.bin")],
        str(tmp_path),
        progress=lambda n, b: seen.append((n, b)),
    )
    assert (files, size) == (2, len(small) + len(large))
    assert (tmp_path / "a" / "small.bin").read_bytes() == small
    assert (tmp_path / "large.bin").read_bytes() == large
    assert seen[-1] == (2, len(small) + len(large))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["large.bin", "small.bin"]


def test_an_object_whose_size_differs_from_the_listing_fails_and_leaves_nothing(s3: Any, tmp_path: Path) -> None:
    """A size that does not match the listing (the object changed, or a cut transfer) fails, naming the key."""
    s3.put_object(Bucket="unit", Key="in/changed.csv", Body=b"12345")
    with pytest.raises(S3TransferError, match=r"s3://unit/in/changed\.csv: got 5 bytes, listed 9"):
        download_objects(s3, [_obj("in/changed.csv", 9, "changed.csv")], str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_missing_object_fails_with_its_key_and_code(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(S3TransferError, match=r"s3://unit/in/gone: NoSuchKey") as info:
        download_objects(s3, [_obj("in/gone", 3, "gone")], str(tmp_path))
    assert info.value.client_error


def test_a_key_outside_local_path_is_refused_before_anything_is_written(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket="unit", Key="in/ok", Body=b"ok")
    dest = tmp_path / "dest"
    dest.mkdir()
    objects = [_obj("in/ok", 2, "ok"), _obj("in/../../evil", 4, "../../evil")]
    with pytest.raises(S3TransferError, match="would land outside LocalPath"):
        download_objects(s3, objects, str(dest))
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_uploads_go_multipart_when_large_skip_symlinks_and_unchanged_files(s3: Any, tmp_path: Path) -> None:
    """Files of 8 MiB and more go in parts; links are never followed; a second pass sends only what changed."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "small.txt").write_text("small")
    (tmp_path / "big.bin").write_bytes(os.urandom(2 * MULTIPART_BYTES + 1))
    (tmp_path / "link").symlink_to("/etc/passwd")
    done = upload_tree(s3, str(tmp_path), "unit", "out/")
    assert sorted(done) == ["big.bin", "sub/small.txt"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="unit", Prefix="out/")["Contents"])
    assert keys == ["out/big.bin", "out/sub/small.txt"]
    # A multipart upload's ETag ends in -<parts>.
    assert s3.head_object(Bucket="unit", Key="out/big.bin")["ETag"].strip('"').endswith("-3")

    s3.delete_object(Bucket="unit", Key="out/sub/small.txt")
    (tmp_path / "new.txt").write_text("new")
    again = upload_tree(s3, str(tmp_path), "unit", "out/", already=done)
    assert sorted(again) == ["big.bin", "new.txt", "sub/small.txt"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="unit", Prefix="out/")["Contents"])
    # small.txt was unchanged since the first pass, so it was not sent again.
    assert keys == ["out/big.bin", "out/new.txt"]


def test_assume_role_forwards_short_lived_credentials_of_the_role(
    server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--assume-role: STS AssumeRole of RoleArn gives temporary credentials (with a session token) for the hosts."""
    from distproc.staging.s3 import S3Settings, forwarded_credentials

    role = "arn:aws:iam::123456789012:role/processing"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    creds = forwarded_credentials(S3Settings(endpoint_url=server.endpoint_url, region="us-east-1"), role)
    assert creds["access_key_id"].startswith("ASIA")  # STS's temporary keys
    assert creds["session_token"] and creds["secret_access_key"] != "testing"


def test_assume_role_needs_forwarding_and_a_role_arn(tmp_path: Path) -> None:
    """--assume-role without --aws-credentials forward, or on a job without RoleArn, is invalid input (exit 2)."""
    import json
    import subprocess
    import sys

    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "ProcessingJobName": "no-role",
                "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}},
                "AppSpecification": {"ImageUri": "busybox"},
            }
        )
    )
    inventory = Path(__file__).parent.parent / "inventory" / "local.yaml"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "distproc",
                "--home",
                str(tmp_path / "home"),
                "run",
                "-i",
                str(inventory),
                *extra,
                str(job),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    alone = run("--assume-role")
    assert alone.returncode == 2 and "--assume-role needs --aws-credentials forward" in alone.stderr
    no_role = run("--aws-credentials", "forward", "--assume-role")
    assert no_role.returncode == 2 and "RoleArn" in no_role.stderr and "Traceback" not in no_role.stderr


# -- one classification of S3 errors on both sides --------------------------------------------


def _client_error(code: str) -> Exception:
    """botocore's own exception, as it raises it for an error answer with this code."""
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}}, "GetObject")


@pytest.mark.parametrize(
    ("code", "jobs_fault"),
    [
        ("NoSuchKey", True),
        ("AccessDenied", True),
        ("403", True),
        ("AllBucketsNotFound", True),  # the coordinator's copy had it, the agent's did not
        ("InternalError", False),
        ("SlowDown", False),
        ("SizeMismatch", False),  # the agent's own code, never an S3 answer: not in the S3 set
    ],
)
def test_the_coordinator_and_the_host_agree_whose_fault_an_s3_error_is(code: str, jobs_fault: bool) -> None:
    """Listing (coordinator) and transfers (host) read one set of client codes, so one error is judged once.

    The two copies had drifted: an AllBucketsNotFound answer was the job's fault
    when the coordinator listed and the platform's when a host downloaded.
    """
    from distproc.agent.s3 import CLIENT_CODES, _error
    from distproc.staging.s3 import _fail

    on_host = _error(_client_error(code), "unit", "in/x")
    on_coordinator = _fail(_client_error(code), "s3://unit/in/")
    assert (on_host.client_error, on_coordinator.client_error) == (jobs_fault, jobs_fault)
    assert (code in CLIENT_CODES) is jobs_fault
    assert on_host.code == code and f"{code}: {code} happened" in str(on_coordinator)
