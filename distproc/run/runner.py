"""The coordinator: one asyncio loop that takes a job from plan to outcome.

    connect + install agent + prepare + stage inputs   (bounded fan-out)
    launch every agent, follow every host               (one task per host)
    first failure or a stop request: stop the others    (SIGINT, grace, SIGKILL on the hosts)
    fetch outputs from every prepared host, clean up    (failed and stopped runs too)
    aggregate the outcome into the job store

The hosts' agents do the per-host work and outlive this process; the
coordinator only decides and records.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence, Set
from typing import TYPE_CHECKING, Any

import structlog

from ..agent.ecr import ecr_registry
from ..backends.base import Allocated, Backend, BackendNote, Claimed, Queued, Shortage, Submitted
from ..backends.fleet import FleetBackend
from ..errors import DistprocError, ImageError, StagingError
from ..hosts.images import local_image_id
from ..hosts.session import FollowPosition
from ..inventory import Host
from ..plan import HostAssignment, SourceFile, build_plan
from ..spec import JobSpec, job_arn
from ..staging import is_s3_uri
from ..staging.local_files import file_uri_path, list_prefix
from ..store.db import JobRecord, Store
from ..ui.console import OutputSink
from .context import JobContext, JobStop
from .endofjob import EndOfJob
from .hoststate import HostState
from .hostwait import HostWait
from .options import ORPHAN_TIMEOUT_SECONDS, RECONNECT_WINDOW_SECONDS, ProgressObserver, RunOptions
from .outcome import FailureClass, HostOutcome, HostPhase, JobOutcome, JobStatus, aggregate, cut
from .prepare import Prepare
from .recorder import (
    HostAdded,
    HostNeverStarted,
    HostReattached,
    JobAllocated,
    JobCreated,
    JobFinished,
    JobLeftQueue,
    JobQueued,
    JobQueueReason,
    JobStarted,
    Recorder,
)
from .watch import Watch

if TYPE_CHECKING:
    from ..staging.s3 import S3Settings

__all__ = [
    "ORPHAN_TIMEOUT_SECONDS",
    "RECONNECT_WINDOW_SECONDS",
    "JobRunner",
    "ProgressObserver",
    "RunOptions",
    "raise_open_file_limit",
]

log = structlog.get_logger("distproc")

# How often the job store is read for a stop asked by `distproc stop` elsewhere.
STORE_POLL_SECONDS = 1.0


def is_ecr_image(image: str) -> bool:
    return ecr_registry(image) is not None


def raise_open_file_limit() -> None:
    """Lift this process's soft limit on open files to its hard limit.

    A job holds an SSH connection and a log file per host (about 2,000
    descriptors at 1,000 hosts), past the usual soft limit of 1,024; the
    hard limit is what an administrator allows. Best effort: where it cannot
    be raised, the job runs as far as the current limit lets it.
    """
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def s3_staging() -> Any:
    """distproc.staging.s3, imported on first use: it loads boto3, which jobs without S3 never need."""
    from ..staging import s3

    return s3


class JobRunner:
    """Runs one job on the hosts chosen for it and records it in the store.

    It only sequences: claim, plan, prepare (here), launch and follow (Watch),
    outputs and cleanup (EndOfJob), the outcome; every event goes to one
    Recorder (the store, the live view, the log).
    """

    def __init__(
        self,
        job: JobSpec,
        hosts: Sequence[Host],
        store: Store,
        inventory_path: str | None = None,
        options: RunOptions | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.job = job
        self.hosts = tuple(hosts)
        self.store = store
        self.inventory_path = inventory_path
        self.options = options or RunOptions()
        self.arn = job_arn(job.name)
        self.log = log.bind(job=job.name)
        self.recorder = Recorder.for_job(job.name, store, self.options.observer, self.log)
        stop = JobStop(self.recorder, self.options.stop_grace_seconds)
        #: Where the hosts come from: by default the SSH fleet of the hosts given.
        self.backend = backend or FleetBackend(
            self.hosts,
            fan_out=self.options.fan_out,
            connect_timeout=self.options.connect_timeout,
            keepalive_interval=self.options.keepalive_interval,
        )
        self.ctx = JobContext(job, self.options, store, self.recorder, stop, self.backend)
        #: In the backend's queue (Slurm's): submitted, not yet allocated.
        self._queued = False
        # --ship-image: this machine's ID of the image, taken before any host is claimed.
        self._ship_image_id: str | None = None

    @property
    def _states(self) -> list[HostState]:
        return self.ctx.states

    # -- stopping -------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop the job (Ctrl-C, or a caller's own reason); safe to call twice."""
        self.ctx.stop.request(reason)

    async def _poll_store_for_stop(self) -> None:
        """`distproc stop` in another process flags the store; take it up here too.

        The stop command also signals the agents itself, but hosts not yet
        launched have no agent to signal: this keeps them from starting.
        """
        stop = self.ctx.stop
        while stop.reason is None:
            await asyncio.sleep(STORE_POLL_SECONDS)
            requested = self.store.get_job(self.job.name).stop_requested
            if requested and stop.reason is None:
                stop.request(requested)

    def _heard(self, note: BackendNote) -> None:
        """What the backend's queue (Slurm's) did: recorded for `describe`, the timeline, the live view."""
        match note:
            case Submitted():
                self._queued = True
                self.recorder(JobQueued(note.at, self.backend.record(self.job.name)))
            case Queued():
                self.recorder(JobQueueReason(note.reason))
            case Allocated():
                self._queued = False
                self.recorder(JobAllocated(note.at))

    def _stop_asked(self) -> bool:
        """Whether a stop was asked here or in the store (then taken up here)."""
        stop = self.ctx.stop
        requested = stop.reason or self.store.get_job(self.job.name).stop_requested
        if requested:
            stop.request(requested)
        return bool(requested)

    async def _acquire(self) -> Sequence[Claimed] | Shortage | None:
        """The backend's hosts, or a Shortage; None when the job was stopped before it had them.

        A backend that queues (Slurm) may keep acquire waiting for hours: a stop
        (Ctrl-C here, `distproc stop` in the store) cancels it, and it gives back
        what it held (a queued Slurm job leaves the queue). The fleet's acquire
        is short and left to finish: the stop then keeps its hosts from starting.
        """
        if not self.backend.queues:
            return await self.backend.acquire(self.job)
        try:
            return await self._acquire_queued()
        finally:
            if self._queued:  # it left the queue without its hosts: the queued phase ends here
                self._queued = False
                self.recorder(JobLeftQueue(time.time()))

    async def _acquire_queued(self) -> Sequence[Claimed] | Shortage | None:
        acquiring = asyncio.ensure_future(self.backend.acquire(self.job))
        poller = asyncio.ensure_future(self._poll_store_for_stop())
        stopped = asyncio.ensure_future(self.ctx.stop.event.wait())
        try:
            await asyncio.wait({acquiring, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poller.cancel()
            stopped.cancel()
            if not acquiring.done():
                acquiring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acquiring
        if acquiring.cancelled():
            return None
        try:
            got = acquiring.result()
        except DistprocError:
            # `distproc stop` cancelled the Slurm job as it started: its nodes could not be claimed.
            if self._stop_asked():
                return None
            raise
        if isinstance(got, Shortage) and self._stop_asked():
            return None  # the queued job was cancelled by `distproc stop` before its flag was read here
        return got

    # -- the job --------------------------------------------------------------

    async def run(self) -> JobOutcome:
        raise_open_file_limit()
        job = self.job
        record = self.backend.record(job.name)
        self.recorder(
            JobCreated(
                self.arn,
                job.request_dict(),
                self.inventory_path,
                job.warnings,
                len(self.hosts),
                record,
                self.options.to_record(),
            )
        )
        return await self._from_acquire()

    async def resume_queued(self) -> JobOutcome:
        """Take over a job whose coordinator died while it waited in its backend's queue (`distproc attach`).

        Its record and its place in the queue (a Slurm job) are already there:
        the rest is as `run` would have done it, from waiting for the hosts on.
        """
        raise_open_file_limit()
        self._queued = True  # its queued phase began with its `run`; this ends it
        self.log.info("attached to a queued job")
        return await self._from_acquire()

    async def _from_acquire(self) -> JobOutcome:
        """`run` after the job's record: the inputs' listing, the hosts, then the job to its end."""
        job = self.job
        self.backend.listener = self._heard
        try:
            try:
                listings = await asyncio.to_thread(self._list_inputs)
                agent_aws = await asyncio.to_thread(self._agent_aws)
            except StagingError as exc:
                cls = FailureClass.CLIENT if exc.client_error else FailureClass.INTERNAL
                return self._finish_early(cls, str(exc))
            if self.options.ship_image:
                try:  # only its ID: the hosts are asked for it before anything is saved
                    self._ship_image_id = await asyncio.to_thread(local_image_id, job.app.image_uri)
                except ImageError as exc:
                    return self._finish_early(FailureClass.CLIENT, str(exc))
            if self.options.wait_for_hosts_seconds is None:
                acquired = await self._acquire()
                if acquired is None:  # stopped while queued: no host was held
                    return self._finish()
                claims = acquired
            else:
                waited = await HostWait(self.ctx, self.options.wait_for_hosts_seconds).claim()
                if waited is None:  # stopped while waiting: no host was held
                    return self._finish()
                claims = waited
            if isinstance(claims, Shortage):
                cls = FailureClass.CLIENT if claims.client_error else FailureClass.INTERNAL
                return self._finish_early(cls, claims.reason)
            self.hosts = tuple(c.host for c in claims)
            # Per claimed host: a backend that finds its hosts as it acquires (Slurm) had none before.
            s3_settings = self._s3_for_hosts(agent_aws)
            plan = build_plan(job, self.arn, self.hosts, listings)
            with self.store.batch():  # every host's row and first events: one commit
                for a, claim in zip(plan.assignments, claims, strict=True):
                    session = claim.session.for_job(a.job_dir)
                    self._states.append(HostState(assignment=a, session=session, agent_sent=claim.agent_sent))
                    endpoint = self.backend.endpoint(a.host)
                    steps = (("connect_started", claim.connect_started), ("connected", claim.connected))
                    self.recorder(HostAdded(a.algo, a.host.name, endpoint, a.job_dir, steps))
            sink = OutputSink(
                {a.algo: self.store.log_path(job.name, a.algo) for a in plan.assignments},
                self.options.console,
            )
            self.recorder(JobStarted(time.time()))

            async def prepare_and_launch(watch: Watch) -> None:
                await Prepare(self.ctx, plan, s3_settings, self._ship_image_id).all(watch)
                stop = self.ctx.stop
                ready = all(s.prepared for s in self._states) and not stop.host_failed
                if ready and stop.reason is None:
                    await watch.launch_all()
                elif any(s.launched for s in self._states):
                    why = "another host failed" if stop.host_failed else "another host could not be prepared"
                    await watch.stop_hosts(stop.reason or why)
                    await watch.watch_all()

            return await self._see_through(sink, prepare_and_launch)
        finally:
            await self._let_go()

    async def resume(self, record: JobRecord) -> JobOutcome:
        """Take over a job whose coordinator died (`distproc attach`): follow, collect, clean up, record.

        The agents kept running (they outlive SSH and the coordinator, and keep
        their own MaxRuntimeInSeconds deadline); each is followed from where the
        log file here ends, so no output is written twice.
        """
        raise_open_file_limit()
        log_paths = {h.algo: self.store.log_path(self.job.name, h.algo) for h in record.hosts}
        for h in record.hosts:
            reached = self.backend.reach(h.endpoint, h.job_dir)
            host = reached.host
            phase = HostPhase(h.status)
            state = HostState(
                assignment=HostAssignment(h.algo, host, h.job_dir, ()),
                session=reached.session,
                phase=phase,
                prepared=True,
                launched=phase.launched,
            )
            path = log_paths[h.algo]
            state.position = FollowPosition(events=0, log=path.stat().st_size if path.exists() else 0)
            self._states.append(state)
            self.recorder(HostReattached(h.algo, host.name))
        seen = {
            (str(e["algo"]), str(e["kind"]), float(e["time"])) for e in self.store.events(self.job.name) if e["algo"]
        }
        self.log.info("attached", hosts=len(self._states), coordinator_pid_was=record.coordinator_pid)

        async def follow(watch: Watch) -> None:
            for state in self._states:
                if not state.launched:
                    error = "the coordinator stopped before this host's container was started"
                    self.ctx.host_failed(state, FailureClass.INTERNAL, error)
            if not all(s.launched for s in self._states):
                await watch.stop_hosts("another host was never started")
            await watch.watch_all()

        try:
            return await self._see_through(OutputSink(log_paths, self.options.console), follow, seen)
        finally:
            await self._let_go()

    async def _see_through(
        self,
        sink: OutputSink,
        body: Callable[[Watch], Awaitable[None]],
        seen: Set[tuple[str, str, float]] = frozenset(),
    ) -> JobOutcome:
        """The tail `run` and `resume` share: follow the hosts (body), then outputs, cleanup and the outcome.

        A stop asked in the store by `distproc stop` is taken up while the hosts run.
        """
        watch = Watch(self.ctx, sink, seen)
        try:
            poller = asyncio.ensure_future(self._poll_store_for_stop())
            try:
                await body(watch)
            finally:
                poller.cancel()
            await EndOfJob(self.ctx).run()
            return self._finish()
        finally:
            watch.cancel()
            sink.close()

    async def _let_go(self) -> None:
        """Whatever ended the run: progress records still waiting written, every connection closed."""
        with contextlib.suppress(DistprocError):
            self.store.flush()
        await asyncio.gather(*(s.session.transport.close() for s in self._states), return_exceptions=True)
        try:  # after cleanup: a Slurm allocation's end would kill the agents' own steps
            await self.backend.ended(self.job.name)
        except DistprocError as exc:
            self.log.warning("could not give back the job's hosts", error=str(exc))

    def _uses_s3(self) -> bool:
        return any(is_s3_uri(i.uri) for i in self.job.inputs) or any(is_s3_uri(o.uri) for o in self.job.outputs)

    def _coordinator_s3(self) -> S3Settings:
        from ..staging.s3 import S3Settings

        first = self.hosts[0] if self.hosts else None
        return S3Settings(
            endpoint_url=self.options.s3_endpoint_url
            or (first.s3_endpoint_url if first else self.backend.s3_endpoint_url),
            region=first.aws_region if first else self.backend.aws_region,
        )

    def _list_inputs(self) -> dict[str, list[SourceFile]]:
        """One listing per input, on the coordinator; each host then gets its own part."""
        listings: dict[str, list[SourceFile]] = {}
        client = None
        if self._uses_s3():
            client = s3_staging().make_client(self._coordinator_s3())
        for item in self.job.inputs:
            files = s3_staging().list_input(client, item) if is_s3_uri(item.uri) else list_prefix(item.uri)
            if not files:
                where = item.uri if is_s3_uri(item.uri) else f"{item.uri} ({file_uri_path(item.uri)} as a prefix)"
                raise StagingError(f"ProcessingInputs {item.name}: no objects match {where}")
            listings[item.name] = files
        return listings

    def _agent_aws(self) -> tuple[bool, Any]:
        """Whether the agents need AWS settings (S3 staging, ECR login), and the forwarded credentials if asked.

        Before any host is claimed: a credential problem fails the job with nothing held.
        """
        if not (self._uses_s3() or is_ecr_image(self.job.app.image_uri)):
            return False, None
        credentials = None
        if self.options.aws_credentials == "forward":
            role = self.job.role_arn if self.options.assume_role else None
            credentials = s3_staging().forwarded_credentials(self._coordinator_s3(), role)
        return True, credentials

    def _s3_for_hosts(self, agent_aws: tuple[bool, Any]) -> dict[str, dict[str, Any]]:
        """Each claimed host's AWS settings for its agent, by host name (none: the job needs none)."""
        needed, credentials = agent_aws
        if not needed:
            return {}
        return {
            h.name: {
                "endpoint_url": h.s3_endpoint_url or self.options.s3_endpoint_url,
                "region": h.aws_region,
                "credentials": credentials,
            }
            for h in self.hosts
        }

    def _finish_early(self, cls: FailureClass, reason: str) -> JobOutcome:
        outcome = JobOutcome(JobStatus.FAILED, cut(f"{cls.value}: {reason}"), None, None)
        self.recorder(JobFinished(outcome, time.time()))
        return outcome

    def _finish(self) -> JobOutcome:
        outcomes = [s.outcome for s in self._states if s.outcome is not None]
        for state in self._states:
            if state.outcome is None:
                # Never launched because the job stopped or another host failed first.
                never = state.end(
                    HostOutcome(
                        algo=state.assignment.algo,
                        host=state.assignment.host.name,
                        status=HostPhase.STOPPED,
                        exit_code=None,
                        ended_at=None,
                        stopped_by_distproc=True,
                    )
                )
                self.recorder(HostNeverStarted(never))
                outcomes.append(never)
        outcome = aggregate(outcomes, self.ctx.stop.reason)
        self.recorder(JobFinished(outcome, time.time()))
        return outcome
