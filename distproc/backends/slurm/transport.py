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

import re
from collections.abc import Sequence

from ...hosts.transport import Channel, Transport

__all__ = ["SrunTransport", "step_argv"]

_JOB_ID = re.compile(r"^[0-9]+$")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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
        # Every step gets the job's own environment (sbatch had --export=NONE).
        "--export=ALL",
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
        return await self.submit.open(step_argv(self.job_id, self.node, argv, srun=self.srun))

    async def close(self) -> None:
        await self.submit.close()
