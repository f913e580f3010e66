"""The job store (real SQLite), the describe/list documents, the bundle, and CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import fields
from io import BytesIO
from pathlib import Path

import pytest

from distproc.errors import JobExistsError, JobNotFoundError
from distproc.hosts.agentbundle import agent_bundle
from distproc.store.db import HostRecord, JobRecord, Store
from distproc.store.views import describe_document, summary_document

REQUEST = {"ProcessingJobName": "j1", "AppSpecification": {"ImageUri": "img"}, "RoleArn": "arn:x"}


def test_store_records_a_job_and_its_hosts(tmp_path: Path) -> None:
    """A job and its hosts round-trip through SQLite; describe gives DescribeProcessingJob's shape."""
    store = Store(tmp_path)
    store.create_job("j1", "arn:j1", REQUEST, "inv.yaml", ("a warning",))
    store.add_host("j1", "algo-2", "h2", {"address": "10.0.0.2"}, "/w/jobs/j1/algo-2")
    store.add_host("j1", "algo-10", "h10", {"address": "10.0.0.10"}, "/w/jobs/j1/algo-10")
    store.update_host("j1", "algo-2", status="Failed", exit_code=3, message="boom")
    store.update_job(
        "j1",
        status="Failed",
        failure_reason="AlgorithmError: algo-2 (h2) exited with code 3",
        start_time=1.0,
        end_time=2.0,
    )
    doc = describe_document(Store(tmp_path).get_job("j1"))
    assert doc["ProcessingJobStatus"] == "Failed"
    assert doc["FailureReason"].startswith("AlgorithmError")
    assert doc["AppSpecification"] == {"ImageUri": "img"} and doc["RoleArn"] == "arn:x"
    assert doc["ProcessingStartTime"] == "1970-01-01T00:00:01.000+00:00"
    assert [h["Host"] for h in doc["Distproc"]["Hosts"]] == ["algo-2", "algo-10"]
    assert doc["Distproc"]["Hosts"][0]["ExitCode"] == 3
    assert doc["Distproc"]["Warnings"] == ["a warning"]
    assert summary_document(store.list_jobs()[0])["ProcessingJobName"] == "j1"
    assert oct((tmp_path / "logs").stat().st_mode & 0o777) == oct(0o700)


def test_store_refuses_a_second_job_of_the_same_name(tmp_path: Path) -> None:
    """Job names are unique, as in a SageMaker account."""
    store = Store(tmp_path)
    store.create_job("j1", "arn", REQUEST, None)
    with pytest.raises(JobExistsError, match="already exists"):
        store.create_job("j1", "arn", REQUEST, None)
    with pytest.raises(JobNotFoundError):
        store.get_job("nope")


def test_every_column_reaches_its_record_and_back(tmp_path: Path) -> None:
    """Job and host rows map to their records by one rule: each field is its column, JSON ones decoded.

    A column added to a table without its field (or a field without its column)
    fails here, not in some reader that meets a row missing a value.
    """
    store = Store(tmp_path)
    # Given by get_job from another table: the hosts.
    for table, record, extra in (("jobs", JobRecord, {"hosts"}), ("hosts", HostRecord, set())):
        columns = {r["name"] for r in store._db.execute(f"PRAGMA table_info({table})")}
        assert columns - {"job"} == {f.name for f in fields(record)} - extra, table
    store.create_job("j1", "arn:j1", REQUEST, "inv.yaml", ("w1", "w2"))
    store.add_host("j1", "algo-1", "h1", {"address": "10.0.0.1", "port": 22}, "/w/jobs/j1/algo-1")
    store.update_host(
        "j1", "algo-1", status="Failed", exit_code=3, start_time=1.5, end_time=2.5, message="m", error="e"
    )
    job_fields = {"start_time": 1.0, "end_time": 3.0, "failure_reason": "f", "exit_message": "x", "stop_reason": "s"}
    store.update_job("j1", status="Stopping", stop_requested="r", coordinator_pid=42, **job_fields)
    job = Store(tmp_path).get_job("j1")
    assert (job.name, job.arn, job.status, job.request, job.inventory) == (
        "j1",
        "arn:j1",
        "Stopping",
        REQUEST,
        "inv.yaml",
    )
    assert job.warnings == ("w1", "w2") and (job.stop_requested, job.coordinator_pid) == ("r", 42)
    assert {k: getattr(job, k) for k in job_fields} == job_fields
    assert job.creation_time <= job.last_modified
    assert job.hosts == (
        HostRecord(
            "algo-1", "h1", {"address": "10.0.0.1", "port": 22}, "/w/jobs/j1/algo-1", "Failed", 3, 1.5, 2.5, "m", "e"
        ),
    )


def test_agent_bundle_is_deterministic_and_standalone() -> None:
    """The same source gives the same zip and hash; it holds only the agent package."""
    bundle = agent_bundle()
    names = zipfile.ZipFile(BytesIO(bundle.data)).namelist()
    assert "__main__.py" in names
    assert all(n == "__main__.py" or n.startswith("distproc_agent/") for n in names)
    assert bundle.remote_path("/w/") == f"/w/agent/distproc-agent-{bundle.digest}"
    agent_bundle.cache_clear()
    assert agent_bundle().digest == bundle.digest


def test_agent_bundle_runs_on_a_plain_python(tmp_path: Path) -> None:
    """The zipapp runs on the system python3 with nothing of distproc installed."""
    path = tmp_path / "agent.pyz"
    path.write_bytes(agent_bundle().data)
    out = subprocess.run(["/usr/bin/python3", "-I", str(path), "probe"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["python"][0] == 3


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distproc", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DISTPROC_HOME": str(home)},
        check=False,
    )


def test_invalid_job_is_exit_2_with_field_paths_and_no_traceback(tmp_path: Path) -> None:
    """`distproc validate` on a bad job names every field and rule, exit 2, no traceback."""
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "ProcessingJobName": "bad name!",
                "ProcessingResources": {"ClusterConfig": {"InstanceCount": 0, "InstanceType": "ml.m5.xlarge"}},
                "AppSpecification": {"ImageUri": "img"},
                "ProcessingInputs": [{"InputName": "x", "S3Input": {"S3Uri": "file:///d/", "LocalPath": "/tmp/x"}}],
            }
        )
    )
    out = cli("validate", str(job), home=tmp_path)
    assert out.returncode == 2
    assert "ProcessingJobName" in out.stderr
    assert "ProcessingResources.ClusterConfig.InstanceCount" in out.stderr
    assert "ProcessingInputs[0].S3Input.LocalPath" in out.stderr
    assert "Traceback" not in out.stderr


def test_too_few_hosts_is_exit_2_listing_what_exists(tmp_path: Path) -> None:
    """Asking for more hosts than the inventory has names what it has."""
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "ProcessingJobName": "big",
                "ProcessingResources": {"ClusterConfig": {"InstanceCount": 5, "InstanceType": "ml.m5.xlarge"}},
                "AppSpecification": {"ImageUri": "img"},
            }
        )
    )
    inventory = Path(__file__).parent.parent / "inventory" / "three-hosts.yaml"
    out = cli("run", "--inventory", str(inventory), str(job), home=tmp_path)
    assert out.returncode == 2
    assert "5" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "jobs.db").exists() or "big" not in cli("list", home=tmp_path).stdout


def test_unknown_job_is_exit_2(tmp_path: Path) -> None:
    """describe/logs/stop of a job that does not exist: one clear line, exit 2."""
    for args in (("describe", "ghost"), ("logs", "ghost"), ("stop", "ghost")):
        out = cli(*args, home=tmp_path)
        assert out.returncode == 2, args
        assert "no job named 'ghost'" in out.stderr and "Traceback" not in out.stderr
