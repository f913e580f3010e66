"""A processing job end to end on the Slurm test cluster, through JobRunner(backend=SlurmBackend).

Slurm allocates the nodes; algo-K is the allocation's node order; each node's
agent runs in an srun step and starts the container through that node's own
dockerd (tests/slurm/docker.py: one per node namespace, reached by the
backend's docker_host template); every algo-K resolves to its node's Slurm
address inside the container (--add-host from the plan); the exit codes and
ExitMessage come back and the outcome follows the fleet's rules. No mocks:
Slurm, srun, dockerd and the agent are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from distproc.backends.slurm.backend import SlurmBackend
from distproc.backends.slurm.inventory import parse_slurm_inventory
from distproc.run.outcome import JobStatus
from distproc.run.runner import JobRunner
from distproc.spec import ProcessingJob, parse_job
from distproc.store.db import Store
from tests.cluster.constants import BUSYBOX_IMAGE
from tests.slurm import SlurmCluster
from tests.slurm.docker import DOCKER_HOST_TEMPLATE

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]

#: What the container reports of itself: its algo (from resourceconfig.json), both
#: config files, each algo-K's address in /etc/hosts, and its own network's address.
#: In pieces: each Environment value and entrypoint word is at most 256 characters.
SCRIPT = {
    "P1": "set -e; rc=/opt/ml/config/resourceconfig.json; test -s /opt/ml/config/processingjobconfig.json; "
    "echo \"RC $(tr -d '\\n' < $rc)\"",
    "P2": 'me=$(sed -n \'s/.*"current_host": *"\\([^"]*\\)".*/\\1/p\' $rc); '
    "for h in $ALGOS; do echo \"HOSTS $h $(awk -v h=$h '$2 == h {print $1}' /etc/hosts)\"; done",
    "P3": "echo \"ADDR $(ip -o -4 addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)\"; "
    'echo "done on $me" > /opt/ml/output/message',
    "P4": 'if [ "$me" = "$FAIL_ON" ]; then echo "boom on $me" > /opt/ml/output/message; exit 7; fi',
}


def job_of(name: str, count: int, fail_on: str = "") -> ProcessingJob:
    algos = " ".join(f"algo-{k}" for k in range(1, count + 1))
    return parse_job(
        {
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count}},
            "AppSpecification": {
                "ImageUri": BUSYBOX_IMAGE,
                "ContainerEntrypoint": ["sh", "-c", 'eval "$P1"; eval "$P2"; eval "$P3"; eval "$P4"'],
            },
            "Environment": {"ALGOS": algos, "FAIL_ON": fail_on, **SCRIPT},
        }
    )


def backend_of(slurm: SlurmCluster, tmp_path: Path) -> SlurmBackend:
    inv = parse_slurm_inventory(
        {"slurm": {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": slurm.partition}}},
        tmp_path / "slurm.yaml",
    )
    return SlurmBackend(
        inv,
        node_python="/usr/bin/python3",
        node_work_dir=str(slurm.local_dir / "work"),  # node-local: no shared filesystem assumed
        docker_host=DOCKER_HOST_TEMPLATE,
        poll_interval=0.2,
    )


def lines(store: Store, job: str, algo: str, tag: str) -> list[str]:
    text = store.log_path(job, algo).read_text()
    return [line.split(tag + " ", 1)[1] for line in text.splitlines() if tag + " " in line]


@pytest.fixture
def submit_here(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))  # the submit node (this machine) finds the cluster


@pytest.mark.usefixtures("submit_here")
def test_a_job_runs_on_every_node_of_the_allocation_and_completes(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    job = job_of("slurm-run-ok", n)
    store = Store(tmp_path / "home")
    backend = backend_of(slurm, tmp_path)
    outcome = asyncio.run(JobRunner(job, (), store, backend=backend).run())
    assert outcome.status is JobStatus.COMPLETED, outcome
    # The allocation's node order is algo order (sl1 is SLURM_NODEID 0 on an idle cluster).
    address = {f"algo-{k}": node.address for k, node in enumerate(slurm.nodes, start=1)}
    record = store.get_job(job.name)
    nodes = [(f"algo-{k}", node.name) for k, node in enumerate(slurm.nodes, start=1)]
    assert [(h.algo, h.host) for h in record.hosts] == nodes
    for algo in address:
        rc = json.loads(lines(store, job.name, algo, "RC")[0])
        assert rc["current_host"] == algo
        assert rc["hosts"] == list(address)
        assert sorted(lines(store, job.name, algo, "HOSTS")) == sorted(f"{a} {ip}" for a, ip in address.items())
        # Its own node's namespace: the container ran under that node's dockerd.
        assert lines(store, job.name, algo, "ADDR") == [address[algo]]
    assert {h.algo: (h.exit_code, h.message) for h in record.hosts} == {a: (0, f"done on {a}\n") for a in address}
    # The allocation is given back when the job ends (cancelled: at most COMPLETING).
    assert slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING", "--name", job.name).stdout.strip() == ""


@pytest.mark.usefixtures("submit_here")
def test_a_failing_container_on_one_node_fails_the_job_naming_its_algo(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    job = job_of("slurm-run-fail", 2, fail_on="algo-2")
    store = Store(tmp_path / "home")
    outcome = asyncio.run(JobRunner(job, (), store, backend=backend_of(slurm, tmp_path)).run())
    assert outcome.status is JobStatus.FAILED
    assert outcome.failure_reason is not None
    assert outcome.failure_reason.startswith(f"AlgorithmError: algo-2 ({slurm.nodes[1].name}) exited with code 7")
    assert outcome.exit_message is not None and "boom on algo-2" in outcome.exit_message
    assert slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING", "--name", job.name).stdout.strip() == ""
