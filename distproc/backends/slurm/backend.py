"""The Slurm backend, a first vertical slice: a job's hosts are one Slurm allocation.

acquire  submits one batch job (submit.py) whose script holds every node with
         a step, waits while Slurm queues it (telling ``on_wait`` Slurm's
         reason each time it changes), then claims each node's agent through
         an srun step (transport.py), in the allocation's node order
         (SLURM_NODEID 0 is algo-1);
release  gives back a node's lease and cancels the allocation (scancel; a
         pending job is cancelled the same way);
reach    a node of a recorded job, through a new srun step;
ended    cancels the allocation once the job is over (prepared nodes' cleanup
         gives back their leases, not the allocation).

JobRunner(backend=SlurmBackend(...)) runs a job on it end to end; `distproc
run` builds one for an inventory file with a top-level ``slurm:`` (cli._backend;
docs/slurm.md says what is still missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ...errors import DistprocError, RemoteCommandError
from ...hosts.agentbundle import agent_bundle
from ...hosts.session import HostSession
from ...hosts.transport import Transport, transport_for
from ...inventory import Host
from ...spec import ProcessingJob
from ..base import Backend, Claimed, Reached, Shortage
from .inventory import SlurmInventory
from .submit import submission
from .transport import SrunTransport

__all__ = ["Allocation", "SlurmBackend"]

#: The step that holds each node for as long as the allocation lives; the
#: agents' own steps run beside it (--overlap). Slurm's time limit or scancel ends it.
HOLD_COMMAND = ("sleep", "infinity")
_ENDED = frozenset({"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"})


@dataclass(frozen=True, slots=True)
class Allocation:
    """A running Slurm job's nodes, in SLURM_NODEID order, each with its address."""

    job_id: str
    nodes: tuple[tuple[str, str], ...]


class SlurmBackend(Backend):
    """One Slurm allocation per processing job."""

    def __init__(
        self,
        inventory: SlurmInventory,
        *,
        node_python: str = "python3",
        node_work_dir: str = "/var/tmp/distproc",
        on_wait: Callable[[str], None] | None = None,
        poll_interval: float = 1.0,
        docker_host: str | None = None,
    ) -> None:
        if docker_host is not None and ("\0" in docker_host or "\n" in docker_host or len(docker_host) > 1024):
            raise DistprocError(f"docker_host: must be one line of at most 1024 characters, not {docker_host[:80]!r}")
        self.inventory = inventory
        #: Each node's Docker daemon (DOCKER_HOST for its agent), ``{node}`` standing for the
        #: node's name (unix:///run/docker-{node}.sock); None: the node's default daemon.
        self.docker_host = docker_host
        self.node_python = node_python
        self.node_work_dir = node_work_dir
        self.on_wait = on_wait
        self.poll_interval = poll_interval
        #: Claimed nodes not yet released, per Slurm job: the allocation is cancelled with the last.
        self._held: dict[str, set[str]] = {}
        #: The Slurm job of each processing job acquired here and not yet ended (ended() cancels it).
        self._slurm_job: dict[str, str] = {}

    def _submit_transport(self) -> Transport:
        return transport_for(self.inventory.submit)

    async def _run(self, argv: Sequence[str], input: bytes | None = None) -> str:
        transport = self._submit_transport()
        await transport.connect()
        try:
            result = await transport.run(argv, input=input)
        finally:
            await transport.close()
        return result.stdout.decode("utf-8", "replace")

    async def submit(self, job: ProcessingJob) -> str:
        """Submit the job's allocation; its Slurm job id."""
        sub = submission(job, self.inventory, HOLD_COMMAND)
        out = await self._run(sub.argv, input=sub.script.encode())
        job_id = out.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise DistprocError(f"sbatch gave no job id: {out.strip()[-200:]!r}")
        return job_id

    async def state(self, job_id: str) -> dict[str, str]:
        """Slurm's view of the job: JobState, Reason, NodeList, NumNodes, Partition ... ({} when gone)."""
        try:
            out = await self._run(["scontrol", "show", "job", "--oneliner", job_id])
        except RemoteCommandError:
            return {}
        fields: dict[str, str] = {}
        for word in out.split():
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    async def wait_running(self, job_id: str) -> Allocation | str:
        """The allocation once the job runs, or why it never will (it ended, was cancelled)."""
        said = ""
        while True:
            fields = await self.state(job_id)
            state = fields.get("JobState", "")
            if state == "RUNNING":
                return await self._allocation(job_id, fields.get("NodeList", ""))
            if not fields or state in _ENDED:
                return f"Slurm job {job_id} ended before it ran: {state or 'gone'} ({fields.get('Reason', '?')})"
            reason = fields.get("Reason", "None")
            if reason != "None":
                # A pending job's NumNodes reads "3-3" (least-most); we always ask for exactly N.
                count = fields.get("NumNodes", "?").split("-", 1)[0]
                text = f"waiting for {count} nodes in partition {fields.get('Partition', '?')}: {reason}"
                if text != said and self.on_wait is not None:
                    self.on_wait(text)
                said = text
            await asyncio.sleep(self.poll_interval)  # Slurm has no push for a job's start

    async def _allocation(self, job_id: str, nodelist: str) -> Allocation:
        # SLURM_NODEID follows the order of the job's node list, expanded.
        names = (await self._run(["scontrol", "show", "hostnames", nodelist])).split()
        nodes = []
        for name in names:
            out = await self._run(["scontrol", "show", "node", "--oneliner", name])
            addr = next((w.split("=", 1)[1] for w in out.split() if w.startswith("NodeAddr=")), name)
            nodes.append((name, addr))
        return Allocation(job_id, tuple(nodes))

    async def cancel(self, job_id: str) -> None:
        """scancel: a pending job leaves the queue, a running one's steps are ended by Slurm."""
        await self._run(["scancel", job_id])

    def _session(self, job_id: str, node: str, job_dir: str) -> HostSession:
        transport = SrunTransport(self._submit_transport(), job_id, node)
        return HostSession(transport, self.node_python, self.node_work_dir, job_dir, agent_bundle())

    def _host(self, job: ProcessingJob | None, job_id: str, node: str, address: str) -> Host:
        return Host(
            name=node,
            address=address,
            connection="ssh",  # never used to connect: the session's transport is srun
            instance_type=(job.cluster.instance_type,) if job is not None else (),
            python=self.node_python,
            work_dir=self.node_work_dir,
            # Plain replacement, not str.format: a template's other braces stay as written.
            docker_host=self.docker_host.replace("{node}", node) if self.docker_host is not None else None,
            vars=MappingProxyType({"slurm_job_id": job_id}),
        )

    async def acquire(self, job: ProcessingJob) -> Sequence[Claimed] | Shortage:
        job_id = await self.submit(job)
        claims: list[Claimed] = []
        try:
            got = await self.wait_running(job_id)
            if isinstance(got, str):
                return Shortage(got, client_error=False)
            for node, address in got.nodes:
                session = self._session(job_id, node, "")
                started = time.time()
                await session.transport.connect()
                connected = time.time()
                answer, sent = await session.claim(job.name, node)
                if not answer.leased:
                    holder = answer.busy.job if answer.busy is not None else "?"
                    raise DistprocError(f"{node}: Slurm gave the node to this job, but job {holder} holds its lease")
                claims.append(Claimed(self._host(job, job_id, node, address), session, started, connected, sent))
            self._held[job_id] = {c.host.name for c in claims}
            self._slurm_job[job.name] = job_id
            return claims
        except BaseException:
            # Nothing half-held: leases given back, the allocation cancelled (a Ctrl-C
            # while queued cancels the pending job).
            for found in claims:
                with contextlib.suppress(DistprocError):
                    await found.session.release(job.name)
                await found.session.transport.close()
            with contextlib.suppress(DistprocError):
                await self.cancel(job_id)
            raise

    def endpoint(self, host: Host) -> Mapping[str, Any]:
        return {
            "backend": "slurm",
            "name": host.name,
            "address": host.address,
            "slurm_job_id": host.vars["slurm_job_id"],
            "python": host.python,
            "work_dir": host.work_dir,
        }

    def reach(self, endpoint: Mapping[str, Any], job_dir: str) -> Reached:
        job_id, node = str(endpoint["slurm_job_id"]), str(endpoint["name"])
        host = self._host(None, job_id, node, str(endpoint["address"]))
        return Reached(host, self._session(job_id, node, job_dir))

    async def ended(self, job: str) -> None:
        """The job is over, its hosts cleaned up: cancel its allocation (the holding steps end with it)."""
        job_id = self._slurm_job.pop(job, None)
        if job_id is not None and self._held.pop(job_id, None) is not None:
            await self.cancel(job_id)

    async def release(self, job: str, session: HostSession) -> None:
        """Give back the node's lease; with the job's last node, the allocation (one scancel ends every step)."""
        transport = session.transport
        try:
            await session.release(job)
        finally:
            if isinstance(transport, SrunTransport):
                held = self._held.get(transport.job_id, set())
                held.discard(transport.node)
                if not held:
                    self._held.pop(transport.job_id, None)
                    with contextlib.suppress(DistprocError):
                        await self.cancel(transport.job_id)
            await transport.close()
