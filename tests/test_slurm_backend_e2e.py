"""The Slurm backend's first slice (distproc/backends/slurm/backend.py) on a real slurmctld and slurmds.

A job queued behind another says Slurm's reason while it waits, gets the
nodes when they are given back, and has each node's agent claimed through an
srun step, in the allocation's node order; releasing gives back the leases
and cancels the allocation. No mocks: Slurm, srun and the distproc agent are
real (the nodes' work folders are node-local, as on a cluster without a
shared filesystem).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from distproc.backends.base import Shortage
from distproc.backends.slurm.backend import SlurmBackend
from distproc.backends.slurm.inventory import SlurmInventory, parse_slurm_inventory
from distproc.backends.slurm.transport import SrunTransport
from distproc.errors import RemoteCommandError
from distproc.hosts.transport import LocalTransport
from distproc.spec import ProcessingJob, parse_job
from tests.slurm import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]


def job_of(name: str, count: int) -> ProcessingJob:
    return parse_job(
        {
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count}},
            "AppSpecification": {"ImageUri": "busybox"},
        }
    )


def inventory_of(slurm: SlurmCluster, tmp_path: Path) -> SlurmInventory:
    return parse_slurm_inventory(
        {"slurm": {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": slurm.partition}}},
        tmp_path / "slurm.yaml",
    )


def hold_every_node(slurm: SlurmCluster) -> str:
    n = len(slurm.nodes)
    holder = slurm.run("sbatch", "--parsable", f"-N{n}", "-o", "/dev/null", "--wrap", "srun sleep 300").stdout.strip()
    slurm.wait_job(holder, {"RUNNING"})
    return holder


@pytest.fixture
def submit_here(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))  # the submit node (this machine) finds the cluster


@pytest.mark.usefixtures("submit_here")
def test_acquire_waits_in_the_queue_claims_every_node_in_order_and_release_cancels(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    job = job_of("slurm-acquire-1", n)
    inv = inventory_of(slurm, tmp_path)
    work = slurm.local_dir / "work"  # a different folder on each node
    waits: list[str] = []
    waiting = asyncio.Event()

    def on_wait(text: str) -> None:
        waits.append(text)
        waiting.set()

    backend = SlurmBackend(
        inv, node_python="/usr/bin/python3", node_work_dir=str(work), on_wait=on_wait, poll_interval=0.2
    )
    holder = hold_every_node(slurm)

    async def scenario() -> None:
        try:
            acquiring = asyncio.ensure_future(backend.acquire(job))
            await asyncio.wait_for(waiting.wait(), 60)
            assert waits == [f"waiting for {n} nodes in partition {slurm.partition}: Resources"]
            assert not acquiring.done()
        finally:
            slurm.run("scancel", holder, check=False)
        claims = await asyncio.wait_for(acquiring, 120)
        assert not isinstance(claims, Shortage), claims
        assert [(c.host.name, c.host.address) for c in claims] == [(x.name, x.address) for x in slurm.nodes]
        job_id = str(claims[0].host.vars["slurm_job_id"])
        assert slurm.job(job_id)["JobName"] == "slurm-acquire-1"
        for c, node in zip(claims, slurm.nodes, strict=True):
            # The lease is in the node's own work folder, taken by the agent claimed through srun.
            assert (node.local_dir / "work" / "lease.json").exists()
            reached = backend.reach(backend.endpoint(c.host), "")
            out = await reached.session.transport.run(["sh", "-c", "echo $(hostname) $SLURM_JOB_ID"])
            assert out.stdout.decode().split() == [node.name, job_id]
        for c in claims:
            await backend.release(job.name, c.session)
        for node in slurm.nodes:
            assert not (node.local_dir / "work" / "lease.json").exists()
        assert slurm.wait_job(job_id, {"CANCELLED"})["JobState"] == "CANCELLED"

    asyncio.run(scenario())


@pytest.mark.usefixtures("submit_here")
def test_stopping_a_job_while_it_is_queued_cancels_it_in_slurm(slurm: SlurmCluster, tmp_path: Path) -> None:
    waiting = asyncio.Event()
    backend = SlurmBackend(
        inventory_of(slurm, tmp_path),
        node_python="/usr/bin/python3",
        node_work_dir=str(slurm.local_dir / "work"),
        on_wait=lambda _text: waiting.set(),
        poll_interval=0.2,
    )
    holder = hold_every_node(slurm)
    try:

        async def scenario() -> str:
            acquiring = asyncio.ensure_future(backend.acquire(job_of("slurm-queued-stop", len(slurm.nodes))))
            await asyncio.wait_for(waiting.wait(), 60)
            queued = slurm.run("squeue", "-h", "--name=slurm-queued-stop", "-o", "%i").stdout.split()
            assert len(queued) == 1
            acquiring.cancel()  # what Ctrl-C or a stop does to the waiting coroutine
            with pytest.raises(asyncio.CancelledError):
                await acquiring
            return queued[0]

        job_id = asyncio.run(scenario())
        assert slurm.job(job_id)["JobState"] == "CANCELLED"  # cancelled before acquire returned
        assert slurm.job(holder)["JobState"] == "RUNNING"
    finally:
        slurm.run("scancel", holder, check=False)
    slurm.wait_job(holder, {"CANCELLED"})


@pytest.mark.usefixtures("submit_here")
def test_a_drained_node_is_never_used(slurm: SlurmCluster, tmp_path: Path) -> None:
    drained = slurm.nodes[1]
    slurm.run("scontrol", "update", f"nodename={drained.name}", "state=drain", "reason=distproc-test")
    try:
        backend = SlurmBackend(
            inventory_of(slurm, tmp_path), node_python="/usr/bin/python3", node_work_dir=str(slurm.local_dir / "work")
        )

        async def scenario() -> list[str]:
            claims = await backend.acquire(job_of("slurm-drained", len(slurm.nodes) - 1))
            assert not isinstance(claims, Shortage), claims
            names = [c.host.name for c in claims]
            for c in claims:
                await backend.release("slurm-drained", c.session)
            return names

        names = asyncio.run(scenario())
        assert names == [n.name for n in slurm.nodes if n is not drained]
    finally:
        slurm.run("scontrol", "update", f"nodename={drained.name}", "state=resume")


@pytest.mark.usefixtures("submit_here")
def test_a_failed_steps_message_is_the_commands_own_stderr_without_sruns_lines(slurm: SlurmCluster) -> None:
    node = slurm.nodes[0].name
    hold = ["sbatch", "--parsable", "-N1", f"--nodelist={node}", "-o", "/dev/null", "--wrap", "srun sleep 300"]
    job_id = slurm.run(*hold).stdout.strip()
    try:
        slurm.wait_job(job_id, {"RUNNING"})
        step = SrunTransport(LocalTransport("submit"), job_id, node)
        with pytest.raises(RemoteCommandError) as failed:
            asyncio.run(step.run(["sh", "-c", "echo the command failed >&2; exit 3"]))
    finally:
        slurm.run("scancel", job_id, check=False)
    # srun adds "srun: error: <node>: task 0: Exited with exit code 3": the exit status says it already.
    assert failed.value.exit_status == 3
    assert failed.value.stderr.strip() == "the command failed"
