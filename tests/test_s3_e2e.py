"""S3 staging end to end: a real S3 HTTP endpoint (moto's server) on the test
cluster's bridge, reached by the coordinator and by every host directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.cluster.jobs import S3Env, job_doc, s3_input, s3_output, wait_until
from tests.s3server import start_moto_server

pytestmark = pytest.mark.cluster


def keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def body(client: Any, bucket: str, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


# Each host lists what it was given (kept under ContainerEntrypoint's 256 characters).
REPORT = (
    "import json,os;i='/opt/ml/processing/';d=i+'input';"
    "m=json.load(open('/opt/ml/config/resourceconfig.json'))['current_host'];"
    "f=sorted(os.path.relpath(r+'/'+x,d) for r,_,s in os.walk(d) for x in s);"
    "open(i+'output/report/'+m+'.json','w').write(json.dumps(f))"
)


def test_sharded_and_replicated_inputs_and_outputs_from_every_host(s3env: S3Env) -> None:
    """3 hosts: shards disjoint and complete, replicas everywhere, prefix semantics, outputs from all."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="jobs-a")
    for i in range(7):
        s3.put_object(Bucket="jobs-a", Key=f"shards/part-{i}.csv", Body=f"{i}\n".encode())
    s3.put_object(Bucket="jobs-a", Key="ref/a/", Body=b"")  # a folder marker
    s3.put_object(Bucket="jobs-a", Key="ref/a/one.txt", Body=b"1")
    s3.put_object(Bucket="jobs-a", Key="ref/ab/two.txt", Body=b"22")
    s3.put_object(Bucket="jobs-a", Key="ref/b/no.txt", Body=b"x")
    doc = job_doc(
        "s3-main",
        entrypoint=["python3", "-c", REPORT],
        inputs=[
            s3_input("shards", "s3://jobs-a/shards/", "/opt/ml/processing/input/shards", "ShardedByS3Key"),
            s3_input("ref", "s3://jobs-a/ref/a", "/opt/ml/processing/input/ref"),
        ],
        outputs=[s3_output("report", "s3://jobs-a/out/report", "/opt/ml/processing/output/report")],
    )
    result = s3env.run_job(doc)
    assert result.returncode == 0, result.stderr
    assert keys(s3, "jobs-a", "out/") == [f"out/report/algo-{k}.json" for k in (1, 2, 3)]
    seen = {k: json.loads(body(s3, "jobs-a", f"out/report/algo-{k}.json")) for k in (1, 2, 3)}
    shards = [{f for f in files if f.startswith("shards/")} for files in seen.values()]
    assert sorted(len(s) for s in shards) == [2, 2, 3]
    assert set().union(*shards) == {f"shards/part-{i}.csv" for i in range(7)}
    for files in seen.values():
        # `ref/a` is a string prefix: it matches ref/ab/ too, and the folder marker is skipped.
        assert [f for f in files if f.startswith("ref/")] == ["ref/b/two.txt", "ref/one.txt"]


def test_manifest_input(s3env: S3Env) -> None:
    """A ManifestFile lists a prefix and key suffixes; each entry lands under its suffix."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="jobs-m")
    for name in ("x/1.txt", "x/2.txt", "x/skip.txt"):
        s3.put_object(Bucket="jobs-m", Key=f"data/{name}", Body=name.encode())
    manifest = [{"prefix": "s3://jobs-m/data/"}, "x/1.txt", "x/2.txt"]
    s3.put_object(Bucket="jobs-m", Key="manifest.json", Body=json.dumps(manifest).encode())
    doc = job_doc(
        "s3-manifest",
        count=1,
        entrypoint=["python3", "-c", REPORT],
        inputs=[s3_input("m", "s3://jobs-m/manifest.json", "/opt/ml/processing/input/m", data_type="ManifestFile")],
        outputs=[s3_output("report", "s3://jobs-m/out/", "/opt/ml/processing/output/report")],
    )
    result = s3env.run_job(doc)
    assert result.returncode == 0, result.stderr
    assert json.loads(body(s3, "jobs-m", "out/algo-1.json")) == ["m/x/1.txt", "m/x/2.txt"]


def test_outputs_are_uploaded_after_a_failed_run_and_symlinks_are_not_followed(s3env: S3Env) -> None:
    """EndOfJob uploads a failed run's outputs too; a symbolic link in an output is not uploaded."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="jobs-f")
    code = (
        "import os; d = '/opt/ml/processing/output/o'; open(d + '/partial.txt', 'w').write('so far'); "
        "os.symlink('/etc/passwd', d + '/passwd'); raise SystemExit(4)"
    )
    doc = job_doc(
        "s3-failed",
        count=1,
        entrypoint=["python3", "-c", code],
        outputs=[s3_output("o", "s3://jobs-f/o", "/opt/ml/processing/output/o")],
    )
    result = s3env.run_job(doc)
    assert result.returncode == 1
    assert keys(s3, "jobs-f") == ["o/partial.txt"]
    assert body(s3, "jobs-f", "o/partial.txt") == b"so far"
    assert s3env.describe("s3-failed")["FailureReason"].startswith("AlgorithmError: algo-1 (h1) exited with code 4")


def test_continuous_upload_is_seen_before_the_container_exits(s3env: S3Env) -> None:
    """S3UploadMode Continuous: a finished file reaches S3 while the container still runs."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="jobs-c")
    s3.put_object(Bucket="jobs-c", Key="ctl/ready", Body=b"")
    code = (
        "import os, time; open('/opt/ml/processing/output/c/early.txt', 'w').write('early'); "
        "release = '/opt/ml/processing/input/ctl/release'\n"
        "while not os.path.exists(release): time.sleep(0.1)\n"
        "open('/opt/ml/processing/output/c/late.txt', 'w').write('late')"
    )
    script = s3env.data / "cont.py"
    script.write_text(code)
    s3.put_object(Bucket="jobs-c", Key="code/cont.py", Body=code.encode())
    doc = job_doc(
        "s3-cont",
        count=1,
        entrypoint=["python3", "/opt/ml/processing/input/code/cont.py"],
        inputs=[
            s3_input("code", "s3://jobs-c/code/", "/opt/ml/processing/input/code"),
            s3_input("ctl", "s3://jobs-c/ctl/", "/opt/ml/processing/input/ctl"),
        ],
        outputs=[s3_output("c", "s3://jobs-c/c/", "/opt/ml/processing/output/c", mode="Continuous")],
    )
    run = s3env.start(
        "run", "--inventory", str(s3env.inventory), "--aws-credentials", "forward", str(s3env.write_job(doc))
    )
    try:
        wait_until(lambda: "c/early.txt" in keys(s3, "jobs-c", "c/"), "the continuous upload", process=run)
        assert run.poll() is None  # the container is still running
        host = s3env.cluster.hosts[0]
        (host.work_dir / "jobs" / "s3-cont" / "algo-1" / "ml" / "processing" / "input" / "ctl" / "release").write_text(
            ""
        )
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0
    assert keys(s3, "jobs-c", "c/") == ["c/early.txt", "c/late.txt"]


def test_a_hostile_key_is_refused_with_a_client_error(s3env: S3Env) -> None:
    """A key that would land outside LocalPath fails the job as ClientError naming the key; nothing runs."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="jobs-h")
    s3.put_object(Bucket="jobs-h", Key="in/ok.txt", Body=b"ok")
    s3.put_object(Bucket="jobs-h", Key="in/../../../evil.txt", Body=b"evil")
    doc = job_doc(
        "s3-hostile",
        count=1,
        entrypoint=["true"],
        inputs=[s3_input("in", "s3://jobs-h/in/", "/opt/ml/processing/input/in")],
    )
    result = s3env.run_job(doc)
    assert result.returncode == 1
    reason = s3env.describe("s3-hostile")["FailureReason"]
    assert reason.startswith("ClientError:") and "evil.txt" in reason
    assert not (s3env.cluster.hosts[0].work_dir / "jobs" / "s3-hostile" / "evil.txt").exists()


def test_a_missing_bucket_is_a_clear_client_error(s3env: S3Env) -> None:
    """An input in a bucket that does not exist fails the job as ClientError, naming the bucket."""
    doc = job_doc(
        "s3-nobucket",
        count=1,
        entrypoint=["true"],
        inputs=[s3_input("in", "s3://no-such-bucket-here/x/", "/opt/ml/processing/input/in")],
    )
    result = s3env.run_job(doc)
    assert result.returncode == 1
    reason = s3env.describe("s3-nobucket")["FailureReason"]
    assert reason.startswith("ClientError:") and "NoSuchBucket" in reason and "no-such-bucket-here" in reason


def test_wrong_credentials_are_a_clear_client_error(s3env: S3Env, cluster: Cluster) -> None:
    """Credentials the endpoint refuses fail the job as ClientError, and never appear in the reason."""
    server = start_moto_server(cluster.bridge_address, auth=True)
    try:
        setup = server.client()
        setup.create_bucket(Bucket="jobs-w")
        setup.put_object(Bucket="jobs-w", Key="in/a.txt", Body=b"a")
        doc = job_doc(
            "s3-badcreds",
            count=1,
            entrypoint=["true"],
            inputs=[s3_input("in", "s3://jobs-w/in/", "/opt/ml/processing/input/in")],
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "distproc",
                "run",
                "--inventory",
                str(s3env.inventory),
                "--aws-credentials",
                "forward",
                "--s3-endpoint-url",
                server.endpoint_url,
                str(s3env.write_job(doc)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={
                **os.environ,
                "DISTPROC_HOME": str(s3env.home),
                "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1",
                "AWS_SECRET_ACCESS_KEY": "wrong-secret-value",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    finally:
        server.stop()
    assert result.returncode == 1, result.stderr
    reason = s3env.describe("s3-badcreds")["FailureReason"]
    assert reason.startswith("ClientError:") and "InvalidAccessKeyId" in reason
    assert "wrong-secret-value" not in reason + result.stderr + result.stdout


def test_staging_progress_is_reported(s3env: S3Env) -> None:
    """Objects and bytes staged per host are recorded as the host stages them."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="jobs-p")
    for i in range(20):
        s3.put_object(Bucket="jobs-p", Key=f"p/{i:02d}", Body=b"x" * 1000)
    doc = job_doc(
        "s3-progress",
        count=1,
        entrypoint=["true"],
        inputs=[s3_input("p", "s3://jobs-p/p/", "/opt/ml/processing/input/p")],
    )
    result = s3env.cli(
        "--log-format",
        "json",
        "run",
        "--inventory",
        str(s3env.inventory),
        "--aws-credentials",
        "forward",
        str(s3env.write_job(doc)),
    )
    assert result.returncode == 0, result.stderr
    ready = [json.loads(line) for line in result.stderr.splitlines() if '"host ready"' in line]
    assert ready and ready[0]["files"] == 20 and ready[0]["bytes"] == 20000


def test_the_s3_endpoint_gone_during_upload_fails_the_job_naming_host_and_cause(
    s3env: S3Env, cluster: Cluster, tmp_path: Path
) -> None:
    """The endpoint dies while the container runs: the upload fails, the job is Failed (never Completed)."""
    server = start_moto_server(cluster.bridge_address)
    try:
        setup = server.client()
        setup.create_bucket(Bucket="jobs-gone")
        code = (
            "import os, time; open('/opt/ml/processing/output/o/result.txt', 'w').write('done')\n"
            "while not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"
        )
        setup.put_object(Bucket="jobs-gone", Key="code/hold.py", Body=code.encode())
        extra = {
            h.name: {"distproc_s3_endpoint_url": server.endpoint_url, "distproc_aws_region": "us-east-1"}
            for h in cluster.hosts
        }
        inventory = cluster.write_inventory(tmp_path / "gone.yaml", extra_host_vars=extra)
        doc = job_doc(
            "s3-gone",
            count=1,
            entrypoint=["python3", "/opt/ml/processing/input/code/hold.py"],
            inputs=[s3_input("code", "s3://jobs-gone/code/", "/opt/ml/processing/input/code")],
            outputs=[s3_output("o", "s3://jobs-gone/out/", "/opt/ml/processing/output/o")],
        )
        run = s3env.start("run", "-i", str(inventory), "--aws-credentials", "forward", str(s3env.write_job(doc)))
        try:
            wait_until(
                lambda: "distproc-s3-gone-algo-1" in cluster.containers(cluster.hosts[0], all=False),
                "the container to run",
                process=run,
            )
        finally:
            server.stop()
        release = cluster.hosts[0].work_dir / "jobs" / "s3-gone" / "algo-1" / "ml" / "processing" / "input" / "code"
        (release / "release").write_text("")
        _, err = run.communicate(timeout=180)
    finally:
        server.stop()
    assert run.returncode == 1, err
    described = s3env.describe("s3-gone")
    reason = described["FailureReason"]
    assert reason.startswith("InternalServerError:") and "algo-1" in reason, reason
    assert "S3 outputs could not be uploaded" in reason and "s3://jobs-gone/out/result.txt" in reason, reason
    assert described["Distproc"]["Hosts"][0]["ExitCode"] == 0  # the container itself succeeded
