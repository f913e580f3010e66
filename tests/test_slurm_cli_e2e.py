"""`distproc run` and `distproc validate` with a Slurm inventory (a top-level ``slurm:`` document).

The run test is end to end: the CLI in a subprocess, the real Slurm test
cluster (tests/slurm/), one dockerd per node reached through the inventory's
``docker_host`` template, the real agent in each node's srun step. No mocks.
The validate tests need no cluster: they check the job against the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from distproc.store.db import Store
from tests.cluster.constants import BUSYBOX_IMAGE
from tests.slurm import SlurmCluster
from tests.slurm.docker import DOCKER_HOST_TEMPLATE


def job_doc(name: str, count: int, instance_type: str = "ml.m5.xlarge") -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "ProcessingResources": {"ClusterConfig": {"InstanceType": instance_type, "InstanceCount": count}},
        "AppSpecification": {
            "ImageUri": BUSYBOX_IMAGE,
            "ContainerEntrypoint": [
                "sh",
                "-c",
                'me=$(sed -n \'s/.*"current_host": *"\\([^"]*\\)".*/\\1/p\' /opt/ml/config/resourceconfig.json); '
                'echo "hello from $me"; echo "done on $me" > /opt/ml/output/message',
            ],
        },
    }


def cli(home: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distproc", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {}), "DISTPROC_HOME": str(home)},
        check=False,
    )


def write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    return path


def slurm_file(tmp_path: Path, partition: str = "debug", **extra: Any) -> Path:
    body = {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": partition}, **extra}
    return write(tmp_path, "slurm-cluster.yaml", {"slurm": body})


@pytest.mark.cluster
@pytest.mark.slurm
def test_distproc_run_runs_a_job_on_the_slurm_cluster(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    inventory = slurm_file(
        tmp_path,
        slurm.partition,
        docker_host=DOCKER_HOST_TEMPLATE,
        work_dir=str(slurm.local_dir / "work"),  # node-local: no shared filesystem assumed
        python="/usr/bin/python3",
    )
    job = write(tmp_path, "job.json", job_doc("slurm-cli-ok", n))
    home = tmp_path / "home"
    env = {"SLURM_CONF": str(slurm.conf)}  # the submit node (this machine) finds the cluster
    out = cli(home, "run", "--inventory", str(inventory), str(job), env=env)
    assert out.returncode == 0, out.stderr
    assert "slurm-cli-ok: Completed" in out.stderr
    algos = [f"algo-{k}" for k in range(1, n + 1)]
    for algo in algos:
        assert f"hello from {algo}" in out.stdout
    described = json.loads(cli(home, "describe", "slurm-cli-ok", "--json").stdout)
    assert described["ProcessingJobStatus"] == "Completed"
    record = Store(home).get_job("slurm-cli-ok")
    assert [h.host for h in record.hosts] == [node.name for node in slurm.nodes]
    assert {h.algo: (h.exit_code, h.message) for h in record.hosts} == {a: (0, f"done on {a}\n") for a in algos}
    # The allocation is given back when the job ends (cancelled: at most COMPLETING).
    assert slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING", "--name", "slurm-cli-ok").stdout.strip() == ""


@pytest.mark.cluster
@pytest.mark.slurm
def test_distproc_run_says_why_it_waits_in_slurms_queue_then_runs(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    inventory = slurm_file(
        tmp_path,
        slurm.partition,
        docker_host=DOCKER_HOST_TEMPLATE,
        work_dir=str(slurm.local_dir / "work"),
        python="/usr/bin/python3",
    )
    job = write(tmp_path, "job.json", job_doc("slurm-cli-queued", n))
    env = {**os.environ, "SLURM_CONF": str(slurm.conf), "DISTPROC_HOME": str(tmp_path / "home")}
    # Another job holds every node: ours queues behind it.
    holder = slurm.run("sbatch", "--parsable", f"-N{n}", "-o", "/dev/null", "--wrap", "srun sleep 300").stdout.strip()
    try:
        slurm.wait_job(holder, {"RUNNING"})
        proc = subprocess.Popen(
            [sys.executable, "-m", "distproc", "run", "--inventory", str(inventory), str(job)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stderr is not None
        said = []
        for line in proc.stderr:  # until run says it waits (or ends without saying so)
            said.append(line)
            if "queued in Slurm" in line:
                break
        assert f"waiting for {n} nodes in partition {slurm.partition}" in said[-1], "".join(said)
        slurm.run("scancel", holder)
        rest = proc.communicate(timeout=300)[1]
    finally:
        slurm.run("scancel", holder, check=False)
    assert proc.returncode == 0, rest
    assert "slurm-cli-queued: Completed" in rest


def test_validate_with_a_slurm_inventory_names_the_partition(tmp_path: Path) -> None:
    inventory = slurm_file(tmp_path, "cpu")
    job = write(tmp_path, "job.json", job_doc("slurm-validate", 3))
    out = cli(tmp_path / "home", "validate", "--inventory", str(inventory), str(job))
    assert out.returncode == 0, out.stderr
    assert "Slurm: 3 nodes in partition cpu" in out.stdout
    doc = json.loads(cli(tmp_path / "home", "validate", "--json", "-i", str(inventory), str(job)).stdout)
    assert doc["Valid"] is True
    assert doc["Slurm"]["Partition"] == "cpu"


def test_validate_refuses_an_instance_type_the_slurm_inventory_does_not_map(tmp_path: Path) -> None:
    inventory = slurm_file(tmp_path, "cpu")
    job = write(tmp_path, "job.json", job_doc("slurm-unmapped", 2, "ml.g4dn.xlarge"))
    out = cli(tmp_path / "home", "validate", "--inventory", str(inventory), str(job))
    assert out.returncode == 2
    assert "slurm.instance_types has no 'ml.g4dn.xlarge'" in out.stderr
    assert "Traceback" not in out.stderr
    doc = json.loads(cli(tmp_path / "home", "validate", "--json", "-i", str(inventory), str(job)).stdout)
    assert doc["Valid"] is False and doc["Source"] == "inventory"
    assert "ml.g4dn.xlarge" in doc["Error"]


def test_run_refuses_a_bad_slurm_inventory_naming_the_field(tmp_path: Path) -> None:
    inventory = slurm_file(tmp_path, "cpu", docker_host="/run/docker.sock", work_dir="relative")
    job = write(tmp_path, "job.json", job_doc("slurm-bad-inv", 1))
    out = cli(tmp_path / "home", "run", "--inventory", str(inventory), str(job))
    assert out.returncode == 2
    assert "slurm.docker_host" in out.stderr and "slurm.work_dir" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_on_slurm_refuses_wait_for_hosts(tmp_path: Path) -> None:
    inventory = slurm_file(tmp_path, "cpu")
    job = write(tmp_path, "job.json", job_doc("slurm-wait-flag", 1))
    out = cli(tmp_path / "home", "run", "--inventory", str(inventory), "--wait-for-hosts", str(job))
    assert out.returncode == 2
    assert "waits in Slurm's queue" in out.stderr
