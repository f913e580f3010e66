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
         gives back their leases, not the allocation);
gone     why a node stopped answering mid-job, from Slurm: its time limit ran
         out (the MaxRuntime stop), the node failed (named), the job ended;
record   what the job store keeps (the submit node's settings, the nodes'
         python/work_dir/docker_host, the Slurm job id once submitted), so that
         `distproc stop` and `attach` build the backend again (from_record);
cancel_queued  scancel of the job while it is still PENDING (`distproc stop`).

JobRunner(backend=SlurmBackend(...)) runs a job on it end to end; `distproc
run` builds one for an inventory file with a top-level ``slurm:`` (cli._backend;
docs/slurm.md says what is still missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from ...agent.answers import ClaimAnswer
from ...errors import DistprocError, RemoteCommandError, StoreError
from ...hosts.agentbundle import agent_bundle
from ...hosts.session import HostSession
from ...hosts.transport import Endpoint, transport_for
from ...inventory import Host
from ...spec import ProcessingJob
from ..base import Allocated, Backend, BackendNote, Claimed, HostGone, Queued, Reached, Shortage, Submitted
from .inventory import SlurmInventory
from .submit import submission
from .transport import AfterTransport, SharedTransport, SrunTransport

__all__ = ["Allocation", "SlurmBackend"]

log = structlog.get_logger("distproc")
#: A ProcessingJobName (SageMaker's rule): what a lease names is checked before it becomes a path.
_JOB_NAME = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}")

#: The step that holds each node for as long as the allocation lives; the
#: agents' own steps run beside it (--overlap). Slurm's time limit or scancel ends it.
HOLD_COMMAND = ("sleep", "infinity")
#: How often `distproc stop` asks scancel to cancel a job Slurm still shows pending.
CANCEL_ATTEMPTS = 3
_ENDED = frozenset({"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"})


@dataclass(frozen=True, slots=True)
class Allocation:
    """A running Slurm job's nodes, in SLURM_NODEID order, each with its address."""

    job_id: str
    nodes: tuple[tuple[str, str], ...]


class SlurmBackend(Backend):
    """One Slurm allocation per processing job."""

    kind = "slurm"
    queues = True

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
        self.s3_endpoint_url = inventory.s3_endpoint_url
        self.aws_region = inventory.aws_region
        self.shared_dir = inventory.shared_dir
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
        #: Jobs taken over (`attach`) while still in Slurm's queue: acquire waits for their
        #: recorded Slurm job instead of submitting another (from_record; once).
        self._adopted: set[str] = set()
        #: One connection to the submit node for every poll, scancel and node's srun step
        #: (an SSH submit node: one handshake, not one per command); closed by close().
        self._submit = SharedTransport(transport_for(inventory.submit))

    @classmethod
    def from_record(cls, record: Mapping[str, Any], job: str) -> SlurmBackend:
        """The backend of a recorded job (record()), in another process: `distproc stop`, `attach`."""
        try:
            where = Endpoint.from_dict(record["submit"])
            job_id = record.get("slurm_job_id")
            submit = where.to_host()
            python, work_dir = str(record["node_python"]), str(record["node_work_dir"])
            docker_host = record.get("docker_host")
            inventory = SlurmInventory(
                path=Path(str(record.get("inventory") or "slurm inventory")),
                submit=submit,
                instance_types={},
                docker_host=docker_host,
                work_dir=work_dir,
                python=python,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"job {job}: the job store's Slurm record is damaged ({exc!r})") from exc
        if job_id is not None and not str(job_id).isdigit():
            raise StoreError(f"job {job}: the job store's Slurm job id is not a number: {str(job_id)[:40]!r}")
        backend = cls(inventory, node_python=python, node_work_dir=work_dir, docker_host=docker_host)
        if job_id is not None:
            # As acquire leaves it: ended() cancels the allocation once the job is over.
            backend._slurm_job[job] = str(job_id)
            backend._held[str(job_id)] = set()
            # A job whose `run` died while it was queued: `attach` acquires it from this Slurm job.
            backend._adopted.add(job)
        return backend

    def record(self, job: str) -> Mapping[str, Any]:
        """The submit node (paths to keys, never keys), the nodes' settings, the Slurm job id once submitted."""
        doc: dict[str, Any] = {
            "backend": self.kind,
            "inventory": str(self.inventory.path),
            "submit": Endpoint.from_host(self.inventory.submit).to_dict(),
            "node_python": self.node_python,
            "node_work_dir": self.node_work_dir,
            "docker_host": self.docker_host,
        }
        if job in self._slurm_job:
            doc["slurm_job_id"] = self._slurm_job[job]
        return doc

    def _tell(self, note: BackendNote) -> None:
        if self.listener is not None:
            self.listener(note)

    async def cancel_queued(self, job: str) -> str | None:
        """scancel of the job only while it is PENDING (--state: Slurm decides; no gap between a look and the act)."""
        job_id = self._slurm_job.get(job)
        if job_id is None:
            return None
        for attempt in range(1, CANCEL_ATTEMPTS + 1):
            try:
                await self._run(["scancel", "--state=PENDING", job_id])
            except RemoteCommandError as exc:
                # scancel fails ("Invalid job id specified") when the job is not pending any
                # more, and was seen to fail now and then on a loaded machine while it still
                # was: what the job is now decides, and a job still pending is asked again.
                scancelled, why = False, str(exc)
            else:
                scancelled, why = True, ""
            state = (await self.state(job_id)).get("JobState", "")
            if state == "CANCELLED" or (scancelled and state == ""):
                return f"cancelled Slurm job {job_id} while it was pending in the queue"
            if state != "PENDING" or attempt == CANCEL_ATTEMPTS:
                break
            log.info("scancel of a pending job failed; asking again", slurm_job=job_id, error=why[-200:])
            await asyncio.sleep(0.5 * attempt)
        return None  # it got its nodes first: the stop goes to them

    async def close(self) -> None:
        """Close the connection to the submit node (a later command opens it again)."""
        await self._submit.close_shared()

    async def _run(self, argv: Sequence[str], input: bytes | None = None) -> str:
        result = await self._submit.run(argv, input=input)
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
        return await self._scontrol_show("job", job_id)

    async def wait_running(self, job_id: str) -> Allocation | str:
        """The allocation once the job runs, or why it never will (it ended, was cancelled)."""
        said = ""
        while True:
            fields = await self.state(job_id)
            state = fields.get("JobState", "")
            if state == "RUNNING":
                return await self._allocation(job_id, fields.get("NodeList", ""))
            if not fields or state in _ENDED:
                why = fields.get("Reason", "None")
                said_why = f" ({why})" if why != "None" else ""
                return f"Slurm job {job_id} ended before it ran: {state or 'gone from Slurm'}{said_why}"
            reason = fields.get("Reason", "None")
            if reason != "None":
                # A pending job's NumNodes reads "3-3" (least-most); we always ask for exactly N.
                count = fields.get("NumNodes", "?").split("-", 1)[0]
                text = f"waiting for {count} nodes in partition {fields.get('Partition', '?')}: {reason}"
                if text != said:
                    if self.on_wait is not None:
                        self.on_wait(text)
                    self._tell(Queued(text))
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

    async def gone(self, host: Host, job_dir: str) -> HostGone | None:
        """Why a node of a running job stopped answering, as Slurm tells it (None: Slurm sees nothing wrong).

        Slurm's time limit (TIMEOUT) is the job's MaxRuntimeInSeconds, so it
        ends the host Stopped with that reason; a node Slurm declared failed
        (NODE_FAIL, or set DOWN) fails the job naming it; the other nodes of
        an allocation Slurm ended end Stopped with Slurm's word for why.
        """
        job_id = str(host.vars.get("slurm_job_id", ""))
        if not job_id.isdigit():
            return None
        job = await self.state(job_id)
        state = job.get("JobState", "")
        if ended_at_its_time_limit(job):
            state = "TIMEOUT"
        elif state == "COMPLETING":  # on its way out: Slurm's reason says why
            state = {"TimeLimit": "TIMEOUT", "NodeDown": "NODE_FAIL"}.get(job.get("Reason", ""), state)
        elif state == "RUNNING" and await self._past(job.get("EndTime", "")):
            # Its time is up and Slurm's signals have reached the node before the job's state says so.
            state = "TIMEOUT"
        node = await self._node_fields(host.name)
        node_state = node.get("State", "")
        if "DOWN" in node_state.split("+") or "FAIL" in node_state.split("+"):
            why = node.get("Reason", "") or "no reason given"
            text = f"Slurm declared node {host.name} {node_state} ({why}); Slurm job {job_id} is {state or 'gone'}"
            return HostGone(text, False)  # not reachable until an admin resumes it
        # The allocation is over but the node is well: what the job left there (a container
        # Slurm's signals did not reach, the job's data, its lease) is cleaned up by a job of its own.
        name = next((j for j, i in self._slurm_job.items() if i == job_id), "job")
        after = HostSession(
            AfterTransport(self._submit, host.name, f"{name}-cleanup"),
            self.node_python,
            self.node_work_dir,
            job_dir,
            agent_bundle(),
        )
        if state == "TIMEOUT":
            limit = job.get("TimeLimit", "?")
            return HostGone(f"MaxRuntimeInSeconds: Slurm's time limit for job {job_id} ({limit}) ran out", True, after)
        if state == "NODE_FAIL":
            return HostGone(f"Slurm ended job {job_id} for a failed node (NODE_FAIL)", True, after)
        if state in _ENDED:
            return HostGone(f"Slurm job {job_id} ended ({state}: {job.get('Reason', '?')})", True, after)
        return None  # running, or Slurm could not be asked: the reconnect window decides

    async def _past(self, end_time: str) -> bool:
        """Whether scontrol's EndTime has passed, by the submit node's clock (scontrol writes its local time)."""
        try:
            end = datetime.fromisoformat(end_time)
            now = datetime.fromisoformat((await self._run(["date", "+%Y-%m-%dT%H:%M:%S"])).strip())
        except (ValueError, DistprocError):  # "Unknown", or the submit node did not say
            return False
        return end <= now

    async def _node_fields(self, node: str) -> dict[str, str]:
        return await self._scontrol_show("node", node)

    async def _scontrol_show(self, kind: str, name: str) -> dict[str, str]:
        """``scontrol show KIND NAME`` as its KEY=VALUE words, the first of each key ({} when Slurm knows none)."""
        try:
            out = await self._run(["scontrol", "show", kind, "--oneliner", name])
        except RemoteCommandError:
            return {}
        fields: dict[str, str] = {}
        for word in out.split():
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def _session(self, job_id: str, node: str, job_dir: str) -> HostSession:
        transport = SrunTransport(self._submit, job_id, node)
        return HostSession(transport, self.node_python, self.node_work_dir, job_dir, agent_bundle())

    def _host(self, job: ProcessingJob | None, job_id: str, node: str, address: str) -> Host:
        mapping = self.inventory.instance_types.get(job.cluster.instance_type) if job is not None else None
        return Host(
            name=node,
            address=address,
            connection="ssh",  # never used to connect: the session's transport is srun
            instance_type=(job.cluster.instance_type,) if job is not None else (),
            # The agent hands the container the GPUs Slurm gave the step (agent/container.slurm_gpus),
            # this count only where Slurm names no devices.
            gpus=mapping.gpus if mapping is not None else 0,
            s3_endpoint_url=self.inventory.s3_endpoint_url,
            aws_region=self.inventory.aws_region,
            python=self.node_python,
            work_dir=self.node_work_dir,
            # Plain replacement, not str.format: a template's other braces stay as written.
            docker_host=self.docker_host.replace("{node}", node) if self.docker_host is not None else None,
            vars=MappingProxyType({"slurm_job_id": job_id}),
        )

    async def _submit_for_certain(self, job: ProcessingJob) -> str:
        """submit(), never leaving a job in Slurm that the caller does not know of.

        A cancel (`distproc stop`, Ctrl-C) that lands while sbatch runs may come
        after Slurm took the job: sbatch is let finish and the job it made cancelled.
        """
        submitting = asyncio.ensure_future(self.submit(job))
        try:
            return await asyncio.shield(submitting)
        except asyncio.CancelledError:
            with contextlib.suppress(DistprocError):
                # Shielded too: a second cancel must not lose the job id either.
                await asyncio.shield(self._cancel_when_submitted(submitting))
            raise

    async def _cancel_when_submitted(self, submitting: asyncio.Future[str]) -> None:
        try:
            job_id = await submitting
        except DistprocError:
            return  # sbatch failed: nothing was submitted
        await self.cancel(job_id)

    async def acquire(self, job: ProcessingJob) -> Sequence[Claimed] | Shortage:
        adopted = job.name in self._adopted and job.name in self._slurm_job
        self._adopted.discard(job.name)
        if adopted:
            # `attach` of a job whose `run` died in Slurm's queue: its recorded Slurm job, not a second one.
            job_id = self._slurm_job[job.name]
        else:
            job_id = await self._submit_for_certain(job)
            # Known at once: the job store records it (record()), so that `distproc stop` can cancel it while queued.
            self._slurm_job[job.name] = job_id
        claims: list[Claimed] = []
        try:
            if not adopted:  # an adopted job's queued phase began with its `run`
                self._tell(Submitted(time.time()))
            got = await self.wait_running(job_id)
            if isinstance(got, str):
                self._held.pop(job_id, None)  # an adopted job's: nothing left for ended() to cancel
                return Shortage(got, client_error=False)
            self._tell(Allocated(time.time()))
            for node, address in got.nodes:
                session = self._session(job_id, node, "")
                started = time.time()
                await session.transport.connect()
                connected = time.time()
                answer, sent = await session.claim(job.name, node)
                if not answer.leased and await self._clear_stale_lease(job_id, node, session, answer):
                    answer, sent = await session.claim(job.name, node)
                if not answer.leased:
                    holder = answer.busy.job if answer.busy is not None else "?"
                    raise DistprocError(f"{node}: Slurm gave the node to this job, but job {holder} holds its lease")
                claims.append(Claimed(self._host(job, job_id, node, address), session, started, connected, sent))
            self._held[job_id] = {c.host.name for c in claims}
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

    async def _clear_stale_lease(self, job_id: str, node: str, session: HostSession, answer: ClaimAnswer) -> bool:
        """Clean up what an ended job left on a node Slurm gave this job exclusively; whether it did.

        Every distproc job on a Slurm node runs inside a Slurm job, so a lease
        held by another job, on a node Slurm gave this one exclusively and that
        runs no other Slurm job, belongs to a Slurm job that is over: one whose
        node went DOWN, say, before its leftovers could be cleaned. Its
        container and data are removed and its lease given back. A shared
        (non-exclusive) node, or one another Slurm job still runs on, is left alone.
        """
        stale = answer.busy.job if answer.busy is not None else ""
        if not self.inventory.exclusive or _JOB_NAME.fullmatch(stale) is None:
            return False
        others = set((await self._run(["squeue", "--noheader", f"--nodelist={node}", "--format=%i"])).split())
        if others - {job_id}:
            return False
        transport = session.transport
        jobs = f"{session.work_dir.rstrip('/')}/jobs/{stale}"
        found = await transport.run(
            ["find", jobs, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-name", "algo-*"], check=False
        )
        for job_dir in found.stdout.decode("utf-8", "replace").split():
            await transport.run([session.python, session.agent_path, "cleanup", job_dir])
        await session.release(stale)  # a lease of a job never prepared there: no folder gave it back
        log.warning(
            "took over a stale lease",
            host=node,
            stale_job=stale,
            why=f"Slurm gave node {node} to Slurm job {job_id} exclusively; job {stale}'s Slurm job is over",
        )
        return True

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
        try:
            if job_id is not None and self._held.pop(job_id, None) is not None:
                await self.cancel(job_id)
        finally:
            await self.close()

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


def slurm_seconds(text: str) -> int | None:
    """Slurm's [DAYS-]HH:MM:SS (or MM:SS) as seconds; None for UNLIMITED, INVALID or anything else."""
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not (days == "" or days.isdigit()) or not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def ended_at_its_time_limit(job: dict[str, str]) -> bool:
    """A job Slurm recorded FAILED that its time limit ended all the same.

    slurmstepd enforces the time limit on the job's steps itself, and may end
    the batch step before slurmctld's own check marks the job TIMEOUT; Slurm
    then records FAILED (NonZeroExitCode, whatever code srun exited with).
    Seen that way: a FAILED job that ran into the last minute of its time
    limit (Slurm counts limits in minutes, so a limit shortened with
    `scontrol update EndTime=...` is rounded up to one). Only asked of a job
    whose node stopped answering (Backend.gone): a container's own failure
    is reported by its agent first.
    """
    state = job.get("JobState")
    if not (state == "FAILED" or (state == "COMPLETING" and job.get("Reason") == "NonZeroExitCode")):
        return False
    limit, ran = slurm_seconds(job.get("TimeLimit", "")), slurm_seconds(job.get("RunTime", ""))
    return limit is not None and ran is not None and ran >= limit - 60
