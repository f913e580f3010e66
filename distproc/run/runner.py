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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

import structlog

from ..agent.ecr import ecr_registry
from ..errors import AgentError, DistprocError, ImageError, StagingError
from ..hosts.agentbundle import AgentBundle, agent_bundle
from ..hosts.depsbundle import deps_bundle
from ..hosts.images import SavedImage, forget_saved, local_image_id, saved_image
from ..hosts.session import FollowPosition, HostSession
from ..hosts.transport import Endpoint, transport_for
from ..inventory import Host
from ..plan import DEFAULT_STOP_GRACE_SECONDS, HostAssignment, JobPlan, SourceFile, build_plan, host_task
from ..spec import ProcessingJob, job_arn
from ..staging import is_s3_uri
from ..staging.local_files import file_uri_path, list_prefix
from ..store.db import JobRecord, Store
from ..ui.console import OutputSink
from .endofjob import EndOfJob
from .hoststate import HostClaim, HostState
from .outcome import FailureClass, HostCause, HostOutcome, JobOutcome, JobStatus, aggregate, cut, say_once
from .watch import Watching

if TYPE_CHECKING:
    from ..staging.s3 import S3Settings

log = structlog.get_logger("distproc")


# How long a host may stay unreachable while it runs before it counts as lost.
RECONNECT_WINDOW_SECONDS = 60.0
# How long the hosts keep a job running that no coordinator follows (a crashed or
# cut-off coordinator): long enough for `distproc attach`, short enough that a
# lost host's GPUs are not held all night.
ORPHAN_TIMEOUT_SECONDS = 900.0
# How often the job store is read for a stop asked by `distproc stop` elsewhere.
STORE_POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS
    fan_out: int = 64
    connect_timeout: float = 15.0
    console: IO[str] | None = None
    #: "host": each host uses its own AWS credential chain; "forward": the
    #: coordinator's credentials (STS AssumeRole of the job's RoleArn with
    #: assume_role) travel to the hosts inside the 0600 task document.
    aws_credentials: str = "host"
    assume_role: bool = False
    #: The S3 endpoint for listing, and for hosts that name none of their own.
    s3_endpoint_url: str | None = None
    #: Seconds between each host's metric samples (0: none).
    metrics_interval_seconds: float = 5.0
    #: Save the image here once and load it on each host whose daemon lacks it (no registry needed).
    ship_image: bool = False
    #: Told of each host's progress as it happens (the CLI's live view).
    observer: ProgressObserver | None = None
    #: A running host unreachable this long is lost: the job fails naming it.
    reconnect_window_seconds: float = RECONNECT_WINDOW_SECONDS
    #: Each host stops its container once no coordinator has followed it this long (0: never).
    orphan_timeout_seconds: float = ORPHAN_TIMEOUT_SECONDS

    @property
    def keepalive_interval(self) -> float:
        """SSH keepalives that notice a dead link within half the reconnect window."""
        return max(1.0, min(15.0, self.reconnect_window_seconds / 8))


class ProgressObserver(Protocol):
    """What a live display needs to hear; every call is cheap and never fails the job."""

    def add_host(self, algo: str, host: str) -> None: ...

    def step(self, algo: str, kind: str, **data: object) -> None: ...

    def staging(self, algo: str, staged_bytes: int) -> None: ...

    def finished(self, algo: str, status: str, exit_code: int | None) -> None: ...


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


class JobRunner(Watching):
    """Runs one job on the hosts chosen for it and records it in the store."""

    def __init__(
        self,
        job: ProcessingJob,
        hosts: Sequence[Host],
        store: Store,
        inventory_path: str | None = None,
        options: RunOptions | None = None,
    ) -> None:
        self.job = job
        self.hosts = tuple(hosts)
        self.store = store
        self.inventory_path = inventory_path
        self.options = options or RunOptions()
        self.arn = job_arn(job.name)
        self.log = log.bind(job=job.name)
        self._stop_reason: str | None = None
        self._stop_event = asyncio.Event()
        self._states: list[HostState] = []
        # --ship-image: this machine's ID of the image; the tar, saved once a host lacks it.
        self._ship_image_id: str | None = None
        self._saved_image: SavedImage | None = None
        self._saving_image = asyncio.Lock()
        # Each launched host's follower, started as soon as the host runs: its pings
        # are what keep the host's orphan timeout from running out.
        self._watchers: dict[str, asyncio.Future[None]] = {}
        self._sink: OutputSink | None = None
        self._host_failed_already = False
        # (algo, kind, time) of the agents' events the store holds already: `attach`
        # follows each host from its first event again, and those are not new.
        self._recorded_events: set[tuple[str, str, float]] = set()

    # -- stopping -------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop the job (Ctrl-C, or a caller's own reason); safe to call twice."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self.log.warning("stopping job", reason=reason, grace_seconds=self.options.stop_grace_seconds)
            self.store.update_job(self.job.name, status=JobStatus.STOPPING.value, stop_requested=reason)
        self._stop_event.set()

    async def _poll_store_for_stop(self) -> None:
        """`distproc stop` in another process flags the store; take it up here too.

        The stop command also signals the agents itself, but hosts not yet
        launched have no agent to signal: this keeps them from starting.
        """
        while self._stop_reason is None:
            await asyncio.sleep(STORE_POLL_SECONDS)
            requested = self.store.get_job(self.job.name).stop_requested
            if requested and self._stop_reason is None:
                self.request_stop(requested)

    async def _stop_hosts(self, reason: str, exclude: str | None = None) -> None:
        targets = [s for s in self._states if s.launched and s.outcome is None and s.assignment.algo != exclude]
        results = await asyncio.gather(*(s.session.stop(reason) for s in targets), return_exceptions=True)
        for state, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                self.log.warning("could not ask host to stop", host=state.assignment.algo, error=str(result))

    # -- the job --------------------------------------------------------------

    async def run(self) -> JobOutcome:
        raise_open_file_limit()
        self.store.create_job(self.job.name, self.arn, self.job.request_dict(), self.inventory_path, self.job.warnings)
        self.log.info("job created", arn=self.arn, hosts=len(self.hosts))
        sink: OutputSink | None = None
        try:
            try:
                listings = await asyncio.to_thread(self._list_inputs)
                s3_settings = await asyncio.to_thread(self._s3_for_hosts)
            except StagingError as exc:
                cls = FailureClass.CLIENT if exc.client_error else FailureClass.INTERNAL
                return self._finish_early(cls, str(exc))
            if self.options.ship_image:
                try:  # only its ID: the hosts are asked for it before anything is saved
                    self._ship_image_id = await asyncio.to_thread(local_image_id, self.job.app.image_uri)
                except ImageError as exc:
                    return self._finish_early(FailureClass.CLIENT, str(exc))
            bundle = agent_bundle()
            claims, shortage = await self._claim_hosts(bundle)
            if shortage is not None:
                return self._finish_early(*shortage)
            self.hosts = tuple(c.host for c in claims)
            plan = build_plan(self.job, self.arn, self.hosts, listings)
            with self.store.batch():  # every host's row and first events: one commit
                for a, claim in zip(plan.assignments, claims, strict=True):
                    session = claim.session.for_job(a.job_dir)
                    self._states.append(HostState(assignment=a, session=session, agent_sent=claim.agent_sent))
                    if self.options.observer is not None:
                        self.options.observer.add_host(a.algo, a.host.name)
                    endpoint = Endpoint.from_host(a.host).to_dict()
                    self.store.add_host(self.job.name, a.algo, a.host.name, endpoint, a.job_dir)
                    for kind, at in (("connect_started", claim.connect_started), ("connected", claim.connected)):
                        self.store.add_event(self.job.name, a.algo, kind, {}, at)
            sink = OutputSink(
                {a.algo: self.store.log_path(self.job.name, a.algo) for a in plan.assignments},
                self.options.console,
            )
            self._sink = sink
            self.store.update_job(self.job.name, start_time=time.time())
            poller = asyncio.ensure_future(self._poll_store_for_stop())
            try:
                await self._prepare_all(plan, s3_settings)
                ready = all(s.prepared for s in self._states) and not self._host_failed_already
                if ready and self._stop_reason is None:
                    await self._launch_and_watch(sink)
                elif any(s.launched for s in self._states):
                    why = "another host failed" if self._host_failed_already else "another host could not be prepared"
                    await self._stop_hosts(self._stop_reason or why)
                    await self._watch_all(sink)
            finally:
                poller.cancel()
            end = self._end_of_job()
            await end.collect_outputs()
            await end.cleanup_all()
            return self._finish()
        finally:
            for watcher in self._watchers.values():
                watcher.cancel()  # only those an error left behind are still running
            if sink is not None:
                sink.close()
            with contextlib.suppress(DistprocError):
                self.store.flush()  # progress records still waiting, whatever ended the run
            await asyncio.gather(*(s.session.transport.close() for s in self._states), return_exceptions=True)

    def _uses_s3(self) -> bool:
        return any(is_s3_uri(i.uri) for i in self.job.inputs) or any(is_s3_uri(o.uri) for o in self.job.outputs)

    def _coordinator_s3(self) -> S3Settings:
        from ..staging.s3 import S3Settings

        first = self.hosts[0] if self.hosts else None
        return S3Settings(
            endpoint_url=self.options.s3_endpoint_url or (first.s3_endpoint_url if first else None),
            region=first.aws_region if first else None,
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

    def _s3_for_hosts(self) -> dict[str, dict[str, Any]]:
        """Each host's AWS settings for its agent (S3 staging, ECR login), with forwarded credentials if asked."""
        if not (self._uses_s3() or is_ecr_image(self.job.app.image_uri)):
            return {}
        credentials = None
        if self.options.aws_credentials == "forward":
            role = self.job.role_arn if self.options.assume_role else None
            credentials = s3_staging().forwarded_credentials(self._coordinator_s3(), role)
        return {
            h.name: {
                "endpoint_url": h.s3_endpoint_url or self.options.s3_endpoint_url,
                "region": h.aws_region,
                "credentials": credentials,
            }
            for h in self.hosts
        }

    async def _prepare_all(self, plan: JobPlan, s3_settings: dict[str, dict[str, Any]]) -> None:
        window = asyncio.Semaphore(self.options.fan_out)
        # boto3 for S3 jobs, pynvml for GPU hosts' metrics; hosts without either get nothing extra.
        needs_deps = bool(s3_settings) or any(s.assignment.host.gpus for s in self._states)
        deps = deps_bundle() if needs_deps else None

        async def prepare(state: HostState) -> None:
            a = state.assignment
            async with window:
                if self._stop_reason is not None or self._host_failed_already:
                    return
                self.store.update_host(self.job.name, a.algo, status="Preparing")
                sent = state.agent_sent
                try:
                    deps_dir = await state.session.install_deps(deps) if deps is not None else None
                    s3 = s3_settings.get(a.host.name)
                    task = host_task(plan, a, self.options.stop_grace_seconds, s3, deps_dir)
                    task["metrics_interval_seconds"] = self.options.metrics_interval_seconds
                    task["orphan_timeout_seconds"] = self.options.orphan_timeout_seconds
                    # A host with nothing to receive starts at once (one round trip fewer); if
                    # another host then fails to prepare, it is stopped like any running host.
                    launch_now = not a.inputs and not self.options.ship_image
                    if await state.session.prepare(task, launch=launch_now) is not None:
                        state.launched = True
                        self.store.update_host(self.job.name, a.algo, status="InProgress")
                        self._start_watch(state)
                    self._mark(state, "agent_ready", agent_sent=sent)
                    if self.options.ship_image:
                        await self._ship_image(state)
                    self._mark(state, "staging_started")
                    staged_files, staged_bytes = await self._stage_inputs(state)
                    self._mark(state, "inputs_staged", objects=staged_files, bytes=staged_bytes)
                except DistprocError as exc:
                    client = isinstance(exc, ImageError) or (isinstance(exc, StagingError) and exc.client_error)
                    self._host_failed(state, FailureClass.CLIENT if client else FailureClass.INTERNAL, str(exc))
                    return
                state.prepared = True
                self.log.info(
                    "host ready",
                    host=a.algo,
                    inventory_host=a.host.name,
                    agent_sent=sent,
                    files=staged_files,
                    bytes=staged_bytes,
                )

        await asyncio.gather(*(prepare(s) for s in self._states))

    async def _stage_inputs(self, state: HostState) -> tuple[int, int]:
        """file:// shards travel from here; S3 shards are fetched by the host itself."""
        a = state.assignment
        files = size = 0
        remote: list[dict[str, Any]] = []
        for shard in a.inputs:
            if is_s3_uri(shard.input.uri):
                objects = []
                for f in shard.files:
                    bucket, key = f.source[len("s3://") :].split("/", 1)
                    objects.append({"bucket": bucket, "key": key, "size": f.size, "rel": f.relative_path})
                remote.append({"local_path": shard.input.local_path, "objects": objects})
            else:
                n, b = await state.session.push_files(shard.input.local_path, shard.files)
                files, size = files + n, size + b
        if remote:
            last = [0.0]

            def progress(doc: dict[str, Any]) -> None:
                if self.options.observer is not None and isinstance(doc.get("bytes"), int):
                    self.options.observer.staging(a.algo, doc["bytes"])
                # Visible while it runs, without a line per object.
                now = time.monotonic()
                if now - last[0] >= 2.0:
                    last[0] = now
                    self.log.info("staging", host=a.algo, objects=doc.get("objects"), bytes=doc.get("bytes"))

            n, b = await state.session.stage_s3(remote, progress)
            files, size = files + n, size + b
        return files, size

    async def resume(self, record: JobRecord) -> JobOutcome:
        """Take over a job whose coordinator died (`distproc attach`): follow, collect, clean up, record.

        The agents kept running (they outlive SSH and the coordinator, and keep
        their own MaxRuntimeInSeconds deadline); each is followed from where the
        log file here ends, so no output is written twice.
        """
        raise_open_file_limit()
        bundle = agent_bundle()
        log_paths = {h.algo: self.store.log_path(self.job.name, h.algo) for h in record.hosts}
        for h in record.hosts:
            endpoint = Endpoint.from_dict(h.endpoint)
            host = Host(
                name=endpoint.name,
                address=endpoint.address,
                port=endpoint.port,
                user=endpoint.user,
                key_file=endpoint.key_file,
                connection="local" if endpoint.connection == "local" else "ssh",
                python=endpoint.python,
                work_dir=endpoint.work_dir,
                known_hosts=endpoint.known_hosts,
            )
            transport = transport_for(
                endpoint,
                connect_timeout=self.options.connect_timeout,
                keepalive_interval=self.options.keepalive_interval,
            )
            state = HostState(
                assignment=HostAssignment(h.algo, host, h.job_dir, ()),
                session=HostSession(transport, endpoint.python, endpoint.work_dir, h.job_dir, bundle),
                prepared=True,
                launched=h.status not in ("Pending", "Preparing"),
            )
            path = log_paths[h.algo]
            state.position = FollowPosition(events=0, log=path.stat().st_size if path.exists() else 0)
            self._states.append(state)
            if self.options.observer is not None:
                self.options.observer.add_host(h.algo, host.name)
        self._recorded_events = {
            (str(e["algo"]), str(e["kind"]), float(e["time"])) for e in self.store.events(self.job.name) if e["algo"]
        }
        self.log.info("attached", hosts=len(self._states), coordinator_pid_was=record.coordinator_pid)
        sink = OutputSink(log_paths, self.options.console)
        try:
            for state in self._states:
                if not state.launched:
                    self._host_failed(
                        state, FailureClass.INTERNAL, "the coordinator stopped before this host's container was started"
                    )
            if not all(s.launched for s in self._states):
                await self._stop_hosts("another host was never started")
            poller = asyncio.ensure_future(self._poll_store_for_stop())
            try:
                await self._watch_all(sink)
            finally:
                poller.cancel()
            end = self._end_of_job()
            await end.collect_outputs()
            await end.cleanup_all()
            return self._finish()
        finally:
            sink.close()
            await asyncio.gather(*(s.session.transport.close() for s in self._states), return_exceptions=True)

    async def _claim_hosts(self, bundle: AgentBundle) -> tuple[list[HostClaim], tuple[FailureClass, str] | None]:
        """Lease InstanceCount hosts, in inventory order, passing over busy or unreachable ones while spares remain.

        Returns the claims, or (failure class, reason) when too few hosts could be had;
        a lease is taken atomically on each host, so two jobs never share one.
        """
        need = self.job.cluster.instance_count
        window = asyncio.Semaphore(self.options.fan_out)

        async def claim(index: int, host: Host) -> tuple[int, HostClaim | None, HostCause | None, bool]:
            transport = transport_for(
                host, connect_timeout=self.options.connect_timeout, keepalive_interval=self.options.keepalive_interval
            )
            session = HostSession(transport, host.python, host.work_dir, "", bundle)
            async with window:
                started = time.time()
                try:
                    await transport.connect()
                    connected = time.time()
                    answer, sent = await session.claim(self.job.name, host.name)
                except DistprocError as exc:
                    await transport.close()
                    return index, None, HostCause(host.name, str(exc), host.address), False
            if answer.get("leased"):
                return index, HostClaim(host, transport, started, connected, sent, session), None, False
            await transport.close()
            busy = answer.get("busy") or {}
            why = f"busy with job {busy.get('job', '?')} (lease renewed {answer.get('age_seconds')} s ago)"
            return index, None, HostCause(host.name, why, host.address), True

        claims: dict[int, HostClaim] = {}
        refused: list[tuple[HostCause, bool]] = []
        untried = list(enumerate(self.hosts))
        while len(claims) < need and untried:
            batch, untried = untried[: need - len(claims)], untried[need - len(claims) :]
            for index, found, why, busy in await asyncio.gather(*(claim(i, h) for i, h in batch)):
                if found is not None:
                    claims[index] = found
                elif why is not None:
                    refused.append((why, busy))
                    # The whole reason, however long: the FailureReason may have to cut it.
                    self.log.warning("host passed over", host=why.who, reason=why.text)
        if len(claims) == need:
            return [claims[i] for i in sorted(claims)], None
        for found in claims.values():
            with contextlib.suppress(DistprocError):
                await found.session.release(self.job.name)
            await found.transport.close()
        only_busy = all(busy for _, busy in refused)
        reason = (
            f"too few free hosts: the job needs {need} x {self.job.cluster.instance_type}, "
            f"{len(claims)} could be had; " + say_once([why for why, _ in refused])
        )
        return [], (FailureClass.CLIENT if only_busy else FailureClass.INTERNAL, reason)

    async def _ship_image(self, state: HostState) -> None:
        """Load this machine's image into the host's daemon, unless it has that image ID already."""
        image_id = self._ship_image_id
        assert image_id is not None, "taken in run() before any host is prepared"
        if await state.session.image_id() == image_id:
            self._mark(state, "image_present", image_id=image_id)
            return
        saved = await self._saved()
        self._mark(state, "image_ship_started", bytes=saved.size)
        loaded = await state.session.load_image(saved.path)
        if loaded != saved.image_id:
            forget_saved(saved)
            raise AgentError(
                f"{state.assignment.host.name}: after loading the shipped image, {saved.image} is {loaded}, "
                f"not {saved.image_id}"
            )
        self._mark(state, "image_shipped", bytes=saved.size)

    async def _saved(self) -> SavedImage:
        """The image's tar, saved (or found saved by an earlier run) once, for every host that lacks it."""
        async with self._saving_image:
            if self._saved_image is None:
                assert self._ship_image_id is not None
                folder = self.store.home / "images"
                image, image_id = self.job.app.image_uri, self._ship_image_id
                self._saved_image = await asyncio.to_thread(saved_image, image, image_id, folder)
            return self._saved_image

    def _mark(self, state: HostState, kind: str, **data: Any) -> None:
        """A step of a host's timeline, as the coordinator saw it (see timeline.py)."""
        self.store.add_event(self.job.name, state.assignment.algo, kind, data)
        if self.options.observer is not None:
            self.options.observer.step(state.assignment.algo, kind, **data)

    def _tell_finished(self, outcome: HostOutcome) -> None:
        if self.options.observer is not None:
            self.options.observer.finished(outcome.algo, outcome.status, outcome.exit_code)

    def _host_failed(self, state: HostState, cls: FailureClass, error: str) -> None:
        a = state.assignment
        self.log.error("host failed", host=a.algo, error=error)
        state.outcome = HostOutcome(
            algo=a.algo,
            host=a.host.name,
            status="Failed",
            exit_code=None,
            ended_at=time.time(),
            error=error,
            error_class=cls.value,
        )
        self.store.update_host(self.job.name, a.algo, status="Failed", error=error, end_time=time.time())
        self._tell_finished(state.outcome)

    def _end_of_job(self) -> EndOfJob:
        return EndOfJob(self.job, self.store, self.options, self.log, self._states, self._mark, self._tell_finished)

    def _finish_early(self, cls: FailureClass, reason: str) -> JobOutcome:
        outcome = JobOutcome(JobStatus.FAILED, cut(f"{cls.value}: {reason}"), None, None)
        self._record(outcome)
        return outcome

    def _finish(self) -> JobOutcome:
        outcomes = [s.outcome for s in self._states if s.outcome is not None]
        for state in self._states:
            if state.outcome is None:
                # Never launched because the job stopped or another host failed first.
                state.outcome = HostOutcome(
                    algo=state.assignment.algo,
                    host=state.assignment.host.name,
                    status="Stopped",
                    exit_code=None,
                    ended_at=None,
                    stopped_by_distproc=True,
                )
                self.store.update_host(self.job.name, state.assignment.algo, status="Stopped")
                self._tell_finished(state.outcome)
                outcomes.append(state.outcome)
        outcome = aggregate(outcomes, self._stop_reason)
        self._record(outcome)
        return outcome

    def _record(self, outcome: JobOutcome) -> None:
        self.store.update_job(
            self.job.name,
            status=outcome.status.value,
            end_time=time.time(),
            failure_reason=outcome.failure_reason,
            exit_message=outcome.exit_message,
            stop_reason=outcome.stop_reason,
        )
        self.log.info(
            "job finished",
            status=outcome.status.value,
            failure_reason=outcome.failure_reason,
            stop_reason=outcome.stop_reason,
        )
