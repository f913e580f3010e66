"""The submission mapping (distproc/backends/slurm/submit.py) against a real slurmctld and slurmds.

The pure tests (test_slurm_submit_unit.py) check the words; this one checks
that Slurm understands them as meant: N nodes, one task each, in the
allocation's node order, named after the job, the time limit rounded up, and
nothing of the submitting environment inside the job.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from distproc.backends.slurm.inventory import parse_slurm_inventory
from distproc.backends.slurm.submit import submission
from distproc.spec import parse_job
from tests.slurm import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]


def test_a_submission_runs_one_task_on_every_node_as_mapped(slurm: SlurmCluster, tmp_path: Path) -> None:
    n = len(slurm.nodes)
    job = parse_job(
        {
            "ProcessingJobName": "slurm-submit-1",
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": n}},
            "AppSpecification": {"ImageUri": "busybox"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 61},
        }
    )
    inv = parse_slurm_inventory(
        {"slurm": {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": slurm.partition}}},
        tmp_path / "slurm.yaml",
    )
    # Each task writes what it is into its own file (tmp_path is the same folder on every node here).
    node_command = [
        "sh",
        "-c",
        'echo "$SLURM_NODEID $(hostname) ${DISTPROC_TEST_SECRET:-unset}" > "$1/task.$SLURM_NODEID"',
        "task",
        str(tmp_path),
    ]
    sub = submission(job, inv, node_command, output=str(tmp_path / "batch.out"))
    env = slurm.env()
    env["DISTPROC_TEST_SECRET"] = "from-the-submitting-shell"
    cp = subprocess.run(sub.argv, input=sub.script, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert cp.returncode == 0, cp.stderr
    job_id = cp.stdout.strip().split(";")[0]
    done = slurm.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"})
    batch_out = (tmp_path / "batch.out").read_text() if (tmp_path / "batch.out").exists() else ""
    assert done["JobState"] == "COMPLETED", (done, batch_out)
    assert done["JobName"] == "slurm-submit-1"
    assert done["TimeLimit"] == "00:02:00"  # 61 s rounded up
    assert done["NumNodes"] == str(n)
    assert done["Partition"] == slurm.partition
    assert done["WorkDir"] == "/tmp"
    got = sorted((tmp_path / f"task.{i}").read_text().split() for i in range(n))
    assert got == [[str(i), node.name, "unset"] for i, node in enumerate(slurm.nodes)]
