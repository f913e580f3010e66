"""SlurmBackend without Slurm: the per-node host description (the docker_host template, GPUs, S3
settings) and the one connection to the submit node shared by every command."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from distproc.agent.answers import ClaimAnswer, Lease
from distproc.backends.slurm.backend import SlurmBackend
from distproc.backends.slurm.inventory import SlurmInventory, parse_slurm_inventory
from distproc.backends.slurm.transport import SharedTransport
from distproc.errors import DistprocError
from distproc.hosts.transport import Channel
from distproc.hosts.transport.local import LocalTransport
from distproc.inventory import Host
from distproc.spec import parse_job


def inventory(tmp_path: Path) -> SlurmInventory:
    return parse_slurm_inventory(
        {"slurm": {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": "cpu"}}},
        tmp_path / "slurm.yaml",
    )


def test_each_node_gets_its_own_docker_host_and_its_slurm_address(tmp_path: Path) -> None:
    backend = SlurmBackend(inventory(tmp_path), docker_host="unix:///run/{node}/docker.sock")
    host = backend.reach({"slurm_job_id": "42", "name": "sl2", "address": "198.19.90.12"}, "/j").host
    assert host.docker_host == "unix:///run/sl2/docker.sock"
    # What --add-host gives every container for this node's algo-K.
    assert host.private_address == "198.19.90.12"


def test_without_a_template_the_nodes_default_docker_is_used(tmp_path: Path) -> None:
    host = SlurmBackend(inventory(tmp_path)).reach({"slurm_job_id": "1", "name": "n1", "address": "n1"}, "/j").host
    assert host.docker_host is None


def test_other_braces_are_kept_as_written(tmp_path: Path) -> None:
    backend = SlurmBackend(inventory(tmp_path), docker_host="unix:///run/{x}/{node}.sock")
    assert backend.reach({"slurm_job_id": "1", "name": "n1", "address": "a"}, "/j").host.docker_host == (
        "unix:///run/{x}/n1.sock"
    )


def test_a_template_of_more_than_one_line_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DistprocError, match="docker_host: must be one line"):
        SlurmBackend(inventory(tmp_path), docker_host="unix:///run/x\nDOCKER_TLS=1")


class CountingTransport(LocalTransport):
    """This machine, counting connections as an SSH submit node would make them (a stand-in: no sshd here).

    connect() opens one unless one is open; lose() drops it as a broken SSH
    connection does (SSHTransport forgets it, and its next connect opens another).
    """

    def __init__(self) -> None:
        super().__init__("submit")
        self.is_open = False
        self.opened = 0
        self.closed = 0

    async def connect(self) -> None:
        if not self.is_open:
            self.is_open, self.opened = True, self.opened + 1

    async def open(self, argv: Sequence[str]) -> Channel:
        assert self.is_open, "a command on a closed connection"
        return await super().open(argv)

    async def close(self) -> None:
        if self.is_open:
            self.is_open, self.closed = False, self.closed + 1

    def lose(self) -> None:
        self.is_open = False


def test_one_submit_connection_serves_every_poll_and_node_until_the_backend_closes_it(tmp_path: Path) -> None:
    backend = SlurmBackend(inventory(tmp_path))
    counting = CountingTransport()
    backend._submit = SharedTransport(counting)

    async def scenario() -> None:
        for _ in range(3):  # what polling a queued job does
            await backend._run(["true"])
        # Two nodes' sessions (srun steps) over the same connection; closing a node's keeps it open.
        for node in ("sl1", "sl2"):
            session = backend.reach({"slurm_job_id": "7", "name": node, "address": node}, "/j").session
            await session.transport.connect()
            await session.transport.close()
        assert (counting.opened, counting.closed, counting.is_open) == (1, 0, True)
        await backend.ended("no-such-job")  # the job is over: the connection goes
        assert (counting.opened, counting.closed, counting.is_open) == (1, 1, False)
        await backend._run(["true"])  # a later command opens it again
        counting.lose()  # and a lost one is opened anew by the next command
        await backend._run(["true"])
        assert counting.opened == 3

    asyncio.run(scenario())


def test_concurrent_commands_open_one_connection(tmp_path: Path) -> None:
    backend = SlurmBackend(inventory(tmp_path))
    counting = CountingTransport()
    backend._submit = SharedTransport(counting)

    async def scenario() -> None:
        await asyncio.gather(*(backend._run(["true"]) for _ in range(5)))

    asyncio.run(scenario())
    assert counting.opened == 1


def test_a_gpu_instance_types_nodes_ask_for_its_gpus_and_cpu_nodes_for_none(tmp_path: Path) -> None:
    inv = parse_slurm_inventory(
        {
            "slurm": {
                "submit": {"ansible_connection": "local"},
                "instance_types": {"ml.m5.xlarge": "cpu", "ml.g4dn.12xlarge": {"partition": "gpu", "gpus": 4}},
                "s3_endpoint_url": "http://198.19.90.1:9000",
                "aws_region": "eu-west-1",
            }
        },
        tmp_path / "slurm.yaml",
    )
    backend = SlurmBackend(inv)

    def host(instance_type: str) -> Host:
        job = parse_job(
            {
                "ProcessingJobName": "j",
                "ProcessingResources": {"ClusterConfig": {"InstanceType": instance_type, "InstanceCount": 1}},
                "AppSpecification": {"ImageUri": "busybox"},
            }
        )
        return backend._host(job, "7", "sl1", "10.0.0.1")

    gpu, cpu = host("ml.g4dn.12xlarge"), host("ml.m5.xlarge")
    # The count tells the agent the node has GPUs for the job; which ones, Slurm's step says (agent/container.py).
    assert (gpu.gpus, cpu.gpus) == (4, 0)
    # The nodes stage S3 through the inventory's endpoint and region, as a fleet host's distproc_s3_* say.
    assert (gpu.s3_endpoint_url, gpu.aws_region) == ("http://198.19.90.1:9000", "eu-west-1")
    assert (backend.s3_endpoint_url, backend.aws_region) == ("http://198.19.90.1:9000", "eu-west-1")


def first_on_path(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in Slurm clients written in bin_dir (shell scripts) made runnable and found first."""
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")


def test_a_cancel_that_lands_while_sbatch_runs_still_cancels_the_job_sbatch_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-ins for sbatch and scancel (on PATH, run by the local submit node): a real sbatch
    # cannot be held mid-submission on cue, and the race is between its answer and the cancel.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started, gate, cancelled = tmp_path / "started", tmp_path / "gate", tmp_path / "scancel.log"
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\ncat >/dev/null\ntouch {started}\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho '4242;c'\n"
    )
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {cancelled}\n')
    first_on_path(bin_dir, monkeypatch)
    backend = SlurmBackend(inventory(tmp_path))
    job = parse_job(
        {
            "ProcessingJobName": "j",
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}},
            "AppSpecification": {"ImageUri": "busybox"},
        }
    )

    async def scenario() -> None:
        task = asyncio.create_task(backend.acquire(job))
        while not started.exists():  # sbatch is running: the job may be in Slurm at any moment now
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.sleep(0)  # the cancel reaches acquire at its next step
        gate.touch()  # Slurm took the job after all
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.close()

    asyncio.run(scenario())
    assert (cancelled.read_text().split() if cancelled.exists() else []) == ["4242"]


@pytest.mark.parametrize(
    ("exclusive", "holder_job"),
    [
        (False, "old-job"),  # a shared node: the other job may well run there now
        (True, "../../etc"),  # a lease naming no job: never made into a path
        (True, "?"),  # an unreadable lease
    ],
)
def test_a_lease_is_never_taken_over_on_a_shared_node_or_when_it_names_no_job(
    tmp_path: Path, exclusive: bool, holder_job: str
) -> None:
    inv = parse_slurm_inventory(
        {
            "slurm": {
                "submit": {"ansible_connection": "local"},
                "instance_types": {"ml.m5.xlarge": "cpu"},
                "exclusive": exclusive,
            }
        },
        tmp_path / "slurm.yaml",
    )
    backend = SlurmBackend(inv)
    counting = CountingTransport()
    backend._submit = SharedTransport(counting)
    session = backend.reach({"slurm_job_id": "7", "name": "sl1", "address": "sl1"}, "").session
    busy = ClaimAnswer(False, Lease(holder_job, "sl1"))
    assert asyncio.run(backend._clear_stale_lease("7", "sl1", session, busy)) is False
    assert counting.opened == 0  # not even Slurm was asked: nothing on the node was touched


def test_slurm_durations_read_as_seconds() -> None:
    from distproc.backends.slurm.backend import slurm_seconds

    assert [slurm_seconds(t) for t in ("00:01:00", "05:03", "1-02:00:00", "2-0:0:1")] == [60, 303, 93600, 172801]
    assert [slurm_seconds(t) for t in ("UNLIMITED", "INVALID", "", "1-x:00:00", "1:2:3:4")] == [None] * 5


def test_a_job_slurmstepd_ended_at_its_time_limit_counts_as_timed_out() -> None:
    """Slurm records FAILED when slurmstepd ends the batch step at the limit before slurmctld's
    own check marks the job TIMEOUT (seen in 4 of 6 full Slurm runs on the test cluster): still
    its time limit."""
    from distproc.backends.slurm.backend import ended_at_its_time_limit

    shortened = {"JobState": "FAILED", "ExitCode": "143:0", "TimeLimit": "00:01:00", "RunTime": "00:00:05"}
    assert ended_at_its_time_limit(shortened)
    assert ended_at_its_time_limit({**shortened, "ExitCode": "0:9", "TimeLimit": "01:00:00", "RunTime": "00:59:30"})
    # Whatever code srun exited with; but a failure long before the limit, or another state, is not it.
    assert ended_at_its_time_limit({**shortened, "ExitCode": "1:0"})
    # Seen so on its way out too: COMPLETING, NonZeroExitCode, ExitCode 1:0, 1 s into a 1-minute limit.
    assert ended_at_its_time_limit({**shortened, "JobState": "COMPLETING", "Reason": "NonZeroExitCode"})
    assert not ended_at_its_time_limit({**shortened, "JobState": "COMPLETING", "Reason": "NodeDown"})
    assert not ended_at_its_time_limit({**shortened, "TimeLimit": "01:00:00"})
    assert not ended_at_its_time_limit({**shortened, "JobState": "CANCELLED"})
    assert not ended_at_its_time_limit({**shortened, "TimeLimit": "UNLIMITED"})


@pytest.mark.parametrize(
    ("scancel_exit", "now", "said"),
    [
        # Pending when stop came: scancelled, Slurm says CANCELLED.
        (0, "CANCELLED", "cancelled Slurm job 22 while it was pending in the queue"),
        # It got its nodes just before: scancel --state=PENDING fails ("Invalid job id specified"),
        # and the stop goes to the nodes instead of failing (`distproc stop` exited 4 before).
        (1, "RUNNING", None),
    ],
)
def test_stop_of_a_queued_job_that_just_started_goes_to_its_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scancel_exit: int, now: str, said: str | None
) -> None:
    # Stand-ins for scancel and scontrol: the race (the job leaving the queue between a look
    # and the cancel) cannot be had on cue from a real Slurm.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(
        f"#!/bin/sh\n[ {scancel_exit} = 0 ] || echo 'scancel: error: Kill job error on job id 22: "
        f"Invalid job id specified' >&2\nexit {scancel_exit}\n"
    )
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho 'JobId=22 JobName=j JobState={now} Reason=None'\n")
    first_on_path(bin_dir, monkeypatch)
    backend = SlurmBackend(inventory(tmp_path))
    backend._slurm_job["j"] = "22"  # as acquire records it once sbatch answers

    async def scenario() -> str | None:
        try:
            return await backend.cancel_queued("j")
        finally:
            await backend.close()

    assert asyncio.run(scenario()) == said


def test_stop_asks_scancel_again_while_slurm_still_shows_the_job_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scancel that fails while the job is still pending (seen on a loaded machine) is tried again."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tried, done = tmp_path / "tried", tmp_path / "done"
    (bin_dir / "scancel").write_text(
        f"#!/bin/sh\nif [ ! -e {tried} ]; then touch {tried}; "
        "echo 'scancel: error: Kill job error on job id 22: Invalid job id specified' >&2; exit 1; fi\n"
        f"touch {done}\n"
    )
    (bin_dir / "scontrol").write_text(
        f'#!/bin/sh\nif [ -e {done} ]; then s=CANCELLED; else s=PENDING; fi\necho "JobId=22 JobState=$s"\n'
    )
    first_on_path(bin_dir, monkeypatch)
    backend = SlurmBackend(inventory(tmp_path))
    backend._slurm_job["j"] = "22"

    async def scenario() -> str | None:
        try:
            return await backend.cancel_queued("j")
        finally:
            await backend.close()

    assert asyncio.run(scenario()) == "cancelled Slurm job 22 while it was pending in the queue"
    assert tried.exists() and done.exists()
