"""Slurm's own ends of a running job, under the fleet's outcome rules: its time limit, a node failure.

End to end: `distproc run` with a Slurm inventory on the Slurm test cluster
(tests/slurm/: slurmctld, a slurmd and a dockerd per node), the real agent in
each node's srun step. The ends are Slurm's own, asked of slurmctld as an
admin would: ``scontrol update jobid=J EndTime=now`` (the job's time limit
runs out at slurmctld's next check: state TIMEOUT) and ``scontrol update
nodename=X state=down`` (NODE_FAIL). No mocks.

Once Slurm has ended the allocation, srun can no longer reach the nodes
through it: the coordinator cleans each well node through a small job of its
own (the container removed, the data and lease gone), so nothing is left; a
node Slurm declared DOWN cannot be reached until an admin resumes it, and keeps
what the job left there until then: the next job Slurm gives it exclusively
finds the ended job's lease, cleans up what it left and takes the node.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.backends import BackendEnv, leftovers, slurm_env
from tests.cluster.jobs import job_doc, py, wait_until
from tests.slurm import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]


@pytest.fixture
def env(slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path) -> Iterator[BackendEnv]:
    e = slurm_env(slurm, dict(slurm_docker), tmp_path)
    yield e
    assert leftovers(e) == []
    assert slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING").stdout.strip() == ""


def start_sleeper(env: BackendEnv, name: str, max_runtime: int | None = None) -> subprocess.Popen[str]:
    doc = job_doc(name, entrypoint=py("import time; time.sleep(300)"), max_runtime=max_runtime)
    run = env.start(
        "run",
        "--inventory",
        str(env.inventory),
        "--stop-grace",
        "2",
        str(env.write_job(doc)),
    )
    wait_until(env.running_everywhere(name), "containers to run on every node", process=run)
    return run


def slurm_job_id(env: BackendEnv, name: str) -> str:
    assert env.slurm is not None
    ids = env.slurm.run("squeue", "--noheader", "--format=%i", "--name", name).stdout.split()
    assert len(ids) == 1, ids
    return ids[0]


def finish(run: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()


def test_slurms_time_limit_ends_the_job_stopped_with_the_maxruntime_reason(env: BackendEnv) -> None:
    """Slurm's time limit (TIMEOUT) is the job's MaxRuntimeInSeconds: Stopped with that reason, not lost hosts."""
    run = start_sleeper(env, "slurm-timeout", max_runtime=3600)
    try:
        assert env.slurm is not None
        job_id = slurm_job_id(env, "slurm-timeout")
        # As an admin shortening the job's time (or a partition's limit below the job's
        # MaxRuntimeInSeconds): the agents' own deadline (an hour) is far away.
        env.slurm.run("scontrol", "update", f"jobid={job_id}", "EndTime=now")
        _, stderr = finish(run)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 3, stderr
    described = env.describe("slurm-timeout")
    assert described["ProcessingJobStatus"] == "Stopped"
    assert "FailureReason" not in described or not described["FailureReason"]
    reason = described["Distproc"]["StopReason"]
    assert reason.startswith(f"MaxRuntimeInSeconds: Slurm's time limit for job {job_id}"), reason
    assert {h["Status"] for h in described["Distproc"]["Hosts"]} == {"Stopped"}
    # Slurm's own record: TIMEOUT, or FAILED when slurmstepd ended the step at the shortened limit
    # before slurmctld's check (backend.ended_at_its_time_limit); either way the job is over.
    assert env.slurm.job(job_id)["JobState"] in ("TIMEOUT", "FAILED")


def test_a_node_slurm_sets_down_fails_the_job_naming_the_host(env: BackendEnv) -> None:
    """A node set DOWN mid-job (NODE_FAIL): Failed naming algo-K and the node; the others Stopped."""
    run = start_sleeper(env, "slurm-nodefail")
    assert env.slurm is not None
    node = env.node("algo-2").name
    try:
        job_id = slurm_job_id(env, "slurm-nodefail")
        env.slurm.run("scontrol", "update", f"nodename={node}", "state=down", "reason=distproc-test-disk-failed")
        _, stderr = finish(run)
    finally:
        if run.poll() is None:
            run.kill()
        env.slurm.run("scontrol", "update", f"nodename={node}", "state=resume", check=False)
    # The failed node was out of reach: it keeps the job's lease (and folder) until cleaned.
    left = leftovers(env)
    assert any(x.startswith(f"lease on {node}:") for x in left), left
    assert all(f" on {node}" in x for x in left), left  # the well nodes were cleaned through jobs of their own
    job_dir = env.node("algo-2").work_dir / "jobs" / "slurm-nodefail" / "algo-2"
    assert (job_dir / "task.json").exists()
    assert run.returncode == 1, stderr
    described = env.describe("slurm-nodefail")
    assert described["ProcessingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith(
        f"InternalServerError: algo-2 ({node}): Slurm declared node {node} DOWN (distproc-test-disk-failed)"
    ), described["FailureReason"]
    statuses = {h["Host"]: h["Status"] for h in described["Distproc"]["Hosts"]}
    assert statuses == {"algo-1": "Stopped", "algo-2": "Failed", "algo-3": "Stopped"}
    assert env.slurm.job(job_id)["JobState"] == "NODE_FAIL"  # not requeued (--no-requeue)
    listed = json.loads(env.cli("list", "--json").stdout)["ProcessingJobSummaries"]
    assert [(j["ProcessingJobName"], j["ProcessingJobStatus"]) for j in listed] == [("slurm-nodefail", "Failed")]
    # The node resumed, the next job Slurm gives every node (exclusively) finds the failed job's
    # lease; that job's Slurm job is over, so its leftovers are cleaned up and the node taken.
    doc = job_doc("slurm-after-nodefail", entrypoint=py("print('ran')"))
    after = env.start("run", "--inventory", str(env.inventory), str(env.write_job(doc)))
    _, stderr = finish(after)
    assert after.returncode == 0, stderr
    assert env.describe("slurm-after-nodefail")["ProcessingJobStatus"] == "Completed"
    assert not (job_dir / "task.json").exists()  # the failed job's data went with its lease
