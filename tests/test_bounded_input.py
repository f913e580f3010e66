"""Job files are read with a size cap; `-` reads standard input; long problem lists are cut short."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from distproc.errors import SHOWN_VIOLATIONS, SpecError, Violation
from distproc.spec import load_job
from distproc.spec._parse import MAX_JOB_BYTES
from distproc.userfiles import read_bounded

REPO = Path(__file__).resolve().parents[1]
CAP_TEXT = f"larger than {MAX_JOB_BYTES} bytes (1 MiB)"


def minimal() -> dict[str, Any]:
    return {
        "ProcessingJobName": "bounded",
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge"}},
        "AppSpecification": {"ImageUri": "busybox"},
    }


def cli(*args: str, stdin: bytes = b"", home: Path) -> subprocess.CompletedProcess[bytes]:
    # A timeout, so that a CLI reading /dev/zero to the end fails the test instead of hanging it.
    return subprocess.run(
        [sys.executable, "-m", "distproc", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "DISTPROC_HOME": str(home)},
        cwd=REPO,
        timeout=60,
        check=False,
    )


def single_problem(path: str | Path) -> Violation:
    with pytest.raises(SpecError) as info:
        load_job(path)
    [violation] = info.value.violations
    return violation


# --- the cap ------------------------------------------------------------------------------


def test_dev_zero_is_refused_at_the_cap_without_a_traceback(tmp_path: Path) -> None:
    """It was a MemoryError traceback after reading 1.9 GB."""
    done = cli("validate", "/dev/zero", home=tmp_path)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err
    assert f"/dev/zero: is {CAP_TEXT}" in err


def test_a_file_over_the_cap_is_refused_naming_file_and_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    # Valid JSON of a valid job, padded past the cap: the size alone is at fault.
    big.write_bytes(json.dumps(minimal()).encode() + b" " * MAX_JOB_BYTES)
    violation = single_problem(big)
    assert violation.path == str(big)
    assert violation.rule.startswith(f"is {CAP_TEXT}")


def test_a_file_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    text = json.dumps(minimal()).encode()
    exact = tmp_path / "exact.json"
    exact.write_bytes(text + b" " * (MAX_JOB_BYTES - len(text)))
    assert exact.stat().st_size == MAX_JOB_BYTES
    assert load_job(exact).name == "bounded"


def test_a_fifo_is_read_up_to_the_cap(tmp_path: Path) -> None:
    """A pipe has no size to check first: the cap holds as it is read (/dev/zero above never ends)."""
    fifo = tmp_path / "job.json"
    os.mkfifo(fifo)

    def write() -> None:
        # Finite, so that a reader without a cap fails this test rather than hangs it.
        with open(fifo, "wb") as out:
            try:
                for _ in range(4 * MAX_JOB_BYTES // 65536):
                    out.write(b" " * 65536)
            except BrokenPipeError:
                pass  # the reader stopped at the cap and closed its end

    writer = threading.Thread(target=write)
    writer.start()
    try:
        violation = single_problem(fifo)
    finally:
        writer.join(timeout=60)
    assert not writer.is_alive()
    assert violation.rule.startswith(f"is {CAP_TEXT}")


def test_read_bounded_reads_one_byte_past_the_limit(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert read_bounded(small, 3) == b"abc"
    assert read_bounded(small, 2) == b"abc"  # 3 > 2: over the limit
    assert read_bounded(str(small), 1) == b"ab"
    assert len(read_bounded("/dev/zero", 1000)) == 1001
    assert read_bounded(io.BytesIO(b"x" * 10), 4) == b"xxxxx"
    with pytest.raises(IsADirectoryError):
        read_bounded(tmp_path, 10)


def test_an_s3_manifest_over_its_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ManifestFile is the job's too: read from a real S3 endpoint (moto's server) up to a cap."""
    from distproc.errors import StagingError
    from distproc.staging import s3 as staging_s3
    from tests.s3server import start_moto_server

    # A small cap, so that the test needs no 64 MiB object; the reading is the same.
    monkeypatch.setattr(staging_s3, "MAX_MANIFEST_BYTES", 1000)
    moto = start_moto_server("127.0.0.1")
    try:
        client = moto.client()
        client.create_bucket(Bucket="manifests")
        client.put_object(Bucket="manifests", Key="data/a", Body=b"abc")
        small = json.dumps([{"prefix": "s3://manifests/data/"}, "a"]).encode()
        client.put_object(Bucket="manifests", Key="small.json", Body=small)
        client.put_object(Bucket="manifests", Key="big.json", Body=small + b" " * 1000)
        [found] = staging_s3.read_manifest(client, "s3://manifests/small.json")
        assert (found.source, found.size) == ("s3://manifests/data/a", 3)
        with pytest.raises(StagingError, match=r"manifest s3://manifests/big\.json is larger than 1000 bytes"):
            staging_s3.read_manifest(client, "s3://manifests/big.json")
    finally:
        moto.stop()


# --- standard input -------------------------------------------------------------------------


def test_validate_reads_the_job_from_stdin(tmp_path: Path) -> None:
    done = cli("validate", "-", stdin=json.dumps(minimal()).encode(), home=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("job bounded is valid: 1 x ml.m5.xlarge")


def test_stdin_is_named_in_errors_and_capped(tmp_path: Path) -> None:
    bad = cli("validate", "-", stdin=b'{"ProcessingJobName": "x",}', home=tmp_path)
    assert bad.returncode == 2
    assert "invalid job file <stdin>" in bad.stderr.decode()
    assert "  - <stdin>: is not valid JSON" in bad.stderr.decode()
    big = cli("validate", "-", stdin=b" " * (MAX_JOB_BYTES + 1), home=tmp_path)
    assert big.returncode == 2
    assert f"  - <stdin>: is {CAP_TEXT}" in big.stderr.decode()


def test_run_reads_the_job_from_stdin_before_the_inventory(tmp_path: Path) -> None:
    """`run -`: the job from stdin is read (and here refused) before any host is looked for."""
    doc = {**minimal(), "ProcessingJobName": "not ok!"}
    done = cli("run", "-", "-i", str(tmp_path / "none.yaml"), stdin=json.dumps(doc).encode(), home=tmp_path)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "invalid job file <stdin>" in err and "ProcessingJobName: must be letters" in err


def test_a_file_named_dash_is_reached_as_dot_slash_dash(tmp_path: Path) -> None:
    (tmp_path / "-").write_text(json.dumps(minimal()))
    done = subprocess.run(
        [sys.executable, "-m", "distproc", "validate", "./-"],
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "DISTPROC_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


# --- the problem list -----------------------------------------------------------------------


def test_a_thousand_problems_show_fifty_and_a_count(tmp_path: Path) -> None:
    doc: dict[str, Any] = {**minimal(), **{f"Unknown{i:04d}": 1 for i in range(1000)}}
    job = tmp_path / "many.json"
    job.write_text(json.dumps(doc))
    done = cli("validate", str(job), home=tmp_path)
    err = done.stderr.decode().splitlines()
    assert done.returncode == 2
    assert err[0] == f"distproc: invalid job file {job} (1000 problem(s)):"
    listed = [line for line in err if line.startswith("  - ")]
    assert len(listed) == SHOWN_VIOLATIONS == 50
    assert listed[0].startswith("  - Unknown0000: unknown field")
    assert err[-1] == "  and 950 more"
    assert len(err) == 52


def test_spec_error_keeps_every_violation_but_shows_fifty() -> None:
    problems = [Violation(f"F{i}", "bad") for i in range(51)]
    error = SpecError(problems)
    assert len(error.violations) == 51
    assert str(error).splitlines()[-2:] == ["  - F49: bad", "  and 1 more"]
    exactly = SpecError(problems[:50])
    assert "more" not in str(exactly) and str(exactly).splitlines()[-1] == "  - F49: bad"
