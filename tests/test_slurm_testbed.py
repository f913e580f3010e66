"""The Slurm test cluster's own tests: a real slurmctld and three slurmds, each node its own host.

No mocks: these run Slurm's own clients (srun, sbatch, scancel, scontrol)
against the daemons tests/slurm/ starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.slurm import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]

PER_TASK = 'echo "$SLURM_NODEID $SLURMD_NODENAME $(hostname) $(ip -4 -o addr show eth0 | tr -s " " | cut -d" " -f4)"'


def _per_node(out: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in out.splitlines():
        node_id, slurm_name, hostname, cidr = line.split()
        rows[node_id] = (slurm_name, hostname, cidr.split("/")[0])
    return rows


def test_srun_runs_once_on_every_node_each_its_own_host(slurm: SlurmCluster) -> None:
    out = slurm.run("srun", f"-N{len(slurm.nodes)}", "--ntasks-per-node=1", "sh", "-c", PER_TASK).stdout
    rows = _per_node(out)
    # SLURM_NODEID 0..N-1 in the allocation's node order: the algo-(K) of issue 16
    assert rows == {str(i): (n.name, n.name, n.address) for i, n in enumerate(slurm.nodes)}


def test_sbatch_job_steps_reach_every_node_and_each_sees_its_own_local_dir(slurm: SlurmCluster, tmp_path: Path) -> None:
    # The batch script runs on the first node; its srun launches from inside that
    # namespace on the others (slurmd to slurmd over the bridge), and each task
    # writes to the same path, which is a different directory on each node.
    out = tmp_path / "job.out"
    script = f"{PER_TASK}; echo mine > {slurm.local_dir}/who.$SLURMD_NODENAME"
    job = slurm.run(
        "sbatch", "--parsable", f"-N{len(slurm.nodes)}", "-o", str(out), "--wrap", f"srun sh -c '{script}'"
    ).stdout.strip()
    done = slurm.wait_job(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"})
    assert done["JobState"] == "COMPLETED", (done, out.read_text() if out.exists() else "")
    rows = _per_node(out.read_text())
    assert {r[0]: r[2] for r in rows.values()} == {n.name: n.address for n in slurm.nodes}
    for n in slurm.nodes:
        # Other tests keep things of their own there (an agent's work folder): look at ours only.
        assert sorted(p.name for p in n.local_dir.glob("who.*")) == [f"who.{n.name}"]
    assert not (slurm.local_dir / f"who.{slurm.nodes[0].name}").exists()  # not in the root namespace


def test_a_job_waits_for_busy_nodes_and_scancel_of_the_pending_job_cancels_it(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    n = str(len(slurm.nodes))
    holder = slurm.run("sbatch", "--parsable", "-N", n, "-o", "/dev/null", "--wrap", "srun sleep 300").stdout.strip()
    try:
        slurm.wait_job(holder, {"RUNNING"})
        ran = tmp_path / "ran"
        waiter = slurm.run("sbatch", "--parsable", "-N", n, "-o", "/dev/null", "--wrap", f"touch {ran}").stdout.strip()
        # Wait until the scheduler has looked at it: Reason moves from None to why it waits.
        pending = slurm.wait_job(waiter, {"PENDING"}, reason="Resources")
        assert pending["JobState"] == "PENDING"
        slurm.run("scancel", waiter)
        gone = slurm.wait_job(waiter, {"CANCELLED"})
        assert gone["JobState"] == "CANCELLED"
        assert slurm.job(holder)["JobState"] == "RUNNING"
        assert not ran.exists()
    finally:
        slurm.run("scancel", holder, check=False)
    assert slurm.wait_job(holder, {"CANCELLED"})["JobState"] == "CANCELLED"
