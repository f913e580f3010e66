"""Reaching one node of a Slurm allocation: each command is a job step, run by srun on the submit node.

Compute nodes of a Slurm cluster are not for SSH; the allocation is the way
in. ``srun --jobid=J --nodelist=NODE --overlap`` runs a command on that node
inside job J, its standard input and output carried by srun (so the agent,
and anything else, reaches the node without a shared filesystem), and Slurm
ends it with the allocation. The submit node itself is reached by the usual
transport (this machine, or SSH with its host-key rules), so this is a
Transport over a Transport, and every HostSession verb works unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence

import structlog

from ...hosts.transport import Channel, CommandResult, Transport

__all__ = [
    "AfterTransport",
    "SharedTransport",
    "SrunTransport",
    "StepChannel",
    "after_argv",
    "step_argv",
    "without_slurm_lines",
]

_JOB_ID = re.compile(r"^[0-9]+$")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Lines Slurm itself writes to a step's stderr ("srun: error: sl2: task 0: Exited with exit code 1",
#: "slurmstepd: error: *** STEP ... CANCELLED ***"): not the command's words.
_SLURM_LINE = re.compile(rb"^(srun|slurmstepd)(\[\d+\])?: ")
log = structlog.get_logger("distproc")


def without_slurm_lines(stderr: bytes, node: str) -> bytes:
    """The command's own stderr: Slurm's lines about the step are logged (debug), not kept for messages."""
    kept = []
    for line in stderr.splitlines(keepends=True):
        if _SLURM_LINE.match(line):
            log.debug("slurm says", host=node, line=line.decode("utf-8", "replace").rstrip())
        else:
            kept.append(line)
    return b"".join(kept)


class StepChannel(Channel):
    """A command run by srun: its stderr as the command wrote it, without srun's own lines."""

    def __init__(self, inner: Channel, node: str) -> None:
        self.inner = inner
        self.node = node

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def close_stdin(self) -> None:
        await self.inner.close_stdin()

    async def read(self, size: int = 65536) -> bytes:
        return await self.inner.read(size)

    async def readline(self) -> bytes:
        return await self.inner.readline()

    async def wait(self) -> CommandResult:
        result = await self.inner.wait()
        return dataclasses.replace(result, stderr=without_slurm_lines(result.stderr, self.node))

    def abort(self) -> None:
        self.inner.abort()


def step_argv(job_id: str, node: str, argv: Sequence[str], *, srun: str = "srun") -> list[str]:
    """srun's command line running ``argv`` once on ``node`` inside job ``job_id``."""
    if not _JOB_ID.match(job_id):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    if not _NODE.match(node):
        raise ValueError(f"not a Slurm node name: {node!r}")
    return [
        srun,
        f"--jobid={job_id}",
        f"--nodelist={node}",
        "--nodes=1",
        "--ntasks=1",
        # Beside the step that holds the allocation (and beside each other).
        "--overlap",
        # Output as it comes: the agent converses line by line.
        "--unbuffered",
        "--quiet",
        # Only PATH (to find the node's python): srun carries the environment it runs in,
        # and the coordinator's (AWS keys, tokens) is not the agents'. Slurm adds the
        # step's own SLURM_* (the GPUs it was given, agent/container.slurm_gpus).
        "--export=PATH",
        "--",
        *argv,
    ]


class SrunTransport(Transport):
    """Commands on one allocated node, through srun on the submit node's transport."""

    def __init__(self, submit: Transport, job_id: str, node: str, *, srun: str = "srun") -> None:
        step_argv(job_id, node, ["true"])  # refuse a bad id or name now, not at the first command
        self.submit = submit
        self.job_id = job_id
        self.node = node
        self.srun = srun
        self.name = node

    async def connect(self) -> None:
        await self.submit.connect()

    async def open(self, argv: Sequence[str]) -> Channel:
        return StepChannel(await self.submit.open(step_argv(self.job_id, self.node, argv, srun=self.srun)), self.node)

    async def close(self) -> None:
        await self.submit.close()  # a SharedTransport stays open for the backend's other commands


class SharedTransport(Transport):
    """One connection to the submit node, shared by every command and node of a backend.

    connect() opens it once (concurrent callers wait for the one attempt);
    close() leaves it open for the others: close_shared() closes it, and the
    next command opens it again. A connection lost on the way is opened anew
    by the next command (SSHTransport forgets a lost connection).
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self._lock = asyncio.Lock()
        #: Connections opened so far (the first, then one per loss or close_shared).
        self.opened = 0
        self._open = False

    async def connect(self) -> None:
        async with self._lock:
            if not self._open:
                await self.inner.connect()
                self._open = True
                self.opened += 1
            else:
                await self.inner.connect()  # a no-op unless the connection was lost: then it reconnects

    async def open(self, argv: Sequence[str]) -> Channel:
        await self.connect()
        return await self.inner.open(argv)

    async def close(self) -> None:
        """Kept open for the backend's other commands (close_shared closes it)."""

    async def close_shared(self) -> None:
        async with self._lock:
            self._open = False
            await self.inner.close()


#: How long a node's after-the-allocation step may wait for the node (srun --immediate).
AFTER_WAIT_SECONDS = 30
#: Its time limit, in minutes: a cleanup, not a job.
AFTER_MINUTES = 1


def after_argv(node: str, argv: Sequence[str], *, job_name: str, srun: str = "srun") -> list[str]:
    """srun's command line running ``argv`` on ``node`` as a job of its own (the allocation it served has ended)."""
    if not _NODE.match(node):
        raise ValueError(f"not a Slurm node name: {node!r}")
    return [
        srun,
        f"--nodelist={node}",
        "--nodes=1",
        "--ntasks=1",
        f"--time={AFTER_MINUTES}",
        f"--job-name={job_name}",
        # A busy or failed node is not waited for long: the cleanup is given up, said in the log.
        f"--immediate={AFTER_WAIT_SECONDS}",
        "--unbuffered",
        "--quiet",
        # Only PATH (to find the node's python): nothing else of this process's environment.
        "--export=PATH",
        "--",
        *argv,
    ]


class AfterTransport(Transport):
    """Commands on a node whose allocation Slurm ended (time limit, a failed node): one small job each.

    What the ended job left there (its container, its folder's data, its
    lease) can then still be cleaned up by the coordinator, as on the fleet.
    """

    def __init__(self, submit: Transport, node: str, job_name: str, *, srun: str = "srun") -> None:
        after_argv(node, ["true"], job_name=job_name)  # refuse a bad name now
        self.submit = submit
        self.node = node
        self.job_name = job_name
        self.srun = srun
        self.name = node

    async def connect(self) -> None:
        await self.submit.connect()

    async def open(self, argv: Sequence[str]) -> Channel:
        channel = await self.submit.open(after_argv(self.node, argv, job_name=self.job_name, srun=self.srun))
        return StepChannel(channel, self.node)

    async def close(self) -> None:
        await self.submit.close()
