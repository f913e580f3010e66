"""One recorder for a job's events: the job store, the live view and the log hear of each from here.

The runner, the watcher and the end of a job say what happened once
(``recorder.host_failed(outcome)``); the recorder hands that event, a typed
frozen value, to each of its sinks in turn, the way structlog hands a log
event to its processors. Each sink takes the events it has a use for:

    StoreSink     the job store's rows and timeline (what `describe` shows)
    ObserverSink  the live view (RunOptions.observer)
    LogSink       the structured log lines
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..store.db import Store
from .options import ProgressObserver
from .outcome import HostOutcome, HostPhase, JobOutcome, JobStatus

# --- the events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobCreated:
    arn: str
    request: Mapping[str, Any]
    inventory: str | None
    warnings: tuple[str, ...]
    hosts: int
    #: What reaches the job's backend again (Backend.record); None: the SSH fleet.
    backend: Mapping[str, Any] | None = None
    #: How `run` was asked to run it (RunOptions.to_record), for `attach`.
    run_options: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class JobStarted:
    at: float


@dataclass(frozen=True, slots=True)
class JobWaiting:
    """The job waits for busy hosts (`run --wait-for-hosts`): what it waits for now."""

    message: str


@dataclass(frozen=True, slots=True)
class JobQueued:
    """The job went into its backend's queue (Slurm's): the queued phase starts; backend: its record now."""

    at: float
    backend: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class JobQueueReason:
    """Why the job still waits in its backend's queue ("waiting for 3 nodes in partition gpu: Resources")."""

    reason: str


@dataclass(frozen=True, slots=True)
class JobAllocated:
    """The backend's queue gave the job its hosts: the queued phase ends."""

    at: float


@dataclass(frozen=True, slots=True)
class JobLeftQueue:
    """The job left its backend's queue without its hosts (stopped, cancelled): the queued phase ends."""

    at: float


@dataclass(frozen=True, slots=True)
class JobStopping:
    reason: str
    grace_seconds: float


@dataclass(frozen=True, slots=True)
class JobFinished:
    outcome: JobOutcome
    at: float


@dataclass(frozen=True, slots=True)
class HostAdded:
    """A host claimed for the job, with its first steps (connecting) already behind it."""

    algo: str
    host: str
    endpoint: Mapping[str, Any]
    job_dir: str
    steps: Sequence[tuple[str, float]]


@dataclass(frozen=True, slots=True)
class HostReattached:
    """A host of a job taken over by `attach`: the store knows it already."""

    algo: str
    host: str


@dataclass(frozen=True, slots=True)
class HostPhaseEntered:
    algo: str
    phase: HostPhase


@dataclass(frozen=True, slots=True)
class HostStep:
    """A step of a host's timeline (see store/timeline.py), as the coordinator saw it."""

    algo: str
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HostReady:
    algo: str
    host: str
    agent_sent: bool
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StagingProgress:
    algo: str
    objects: object
    bytes: object


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """An event the host's agent reported; seen_before: recorded already by the run that saw it first."""

    algo: str
    kind: str
    data: Mapping[str, Any]
    at: float | None
    seen_before: bool


@dataclass(frozen=True, slots=True)
class HostFailed:
    """The host failed on the coordinator's side: not prepared, not started, lost."""

    outcome: HostOutcome


@dataclass(frozen=True, slots=True)
class HostResult:
    """The host's agent reported how its container ended."""

    outcome: HostOutcome
    container_started: object


@dataclass(frozen=True, slots=True)
class OutputFailed:
    """An output of the host could not be collected: the host is Failed whatever its container did."""

    outcome: HostOutcome


@dataclass(frozen=True, slots=True)
class HostNeverStarted:
    """The job ended (stopped, another host failed) before this host's container started."""

    outcome: HostOutcome


@dataclass(frozen=True, slots=True)
class HostMetrics:
    algo: str
    gpu: Mapping[str, Any] | None
    samples: list[dict[str, Any]]


Event = (
    JobCreated
    | JobStarted
    | JobWaiting
    | JobQueued
    | JobQueueReason
    | JobAllocated
    | JobLeftQueue
    | JobStopping
    | JobFinished
    | HostAdded
    | HostReattached
    | HostPhaseEntered
    | HostStep
    | HostReady
    | StagingProgress
    | AgentEvent
    | HostFailed
    | HostResult
    | OutputFailed
    | HostNeverStarted
    | HostMetrics
)

#: A sink takes each event and does its part, or nothing.
Sink = Callable[[Event], None]


# --- the sinks ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreSink:
    store: Store
    job: str

    def __call__(self, event: Event) -> None:
        store, job = self.store, self.job
        match event:
            case JobCreated():
                store.create_job(
                    job, event.arn, event.request, event.inventory, event.warnings, event.backend, event.run_options
                )
            case JobStarted():
                store.update_job(job, start_time=event.at)
            case JobWaiting():
                store.set_waiting_for(job, event.message)
            case JobQueued():
                store.record_backend(job, event.backend)
                # A job-level event (no algo): store/timeline.py gives every host its queued phase.
                store.add_event(job, None, "queued", {}, event.at)
            case JobQueueReason():
                store.update_job(job, waiting_for=event.reason)
            case JobAllocated() | JobLeftQueue():
                store.update_job(job, waiting_for=None)
                kind = "allocated" if isinstance(event, JobAllocated) else "left_queue"
                store.add_event(job, None, kind, {}, event.at)
            case JobStopping():
                store.update_job(job, status=JobStatus.STOPPING.value, stop_requested=event.reason)
            case JobFinished(outcome=o):
                store.update_job(
                    job,
                    status=o.status.value,
                    end_time=event.at,
                    failure_reason=o.failure_reason,
                    exit_message=o.exit_message,
                    stop_reason=o.stop_reason,
                    waiting_for=None,  # an ended job waits for nothing
                )
            case HostAdded():
                store.add_host(job, event.algo, event.host, event.endpoint, event.job_dir)
                for kind, at in event.steps:
                    store.add_event(job, event.algo, kind, {}, at)
            case HostPhaseEntered():
                store.update_host(job, event.algo, status=event.phase.value)
            case HostStep():
                store.add_event(job, event.algo, event.kind, event.data)
            case AgentEvent() if not event.seen_before:
                store.add_event(job, event.algo, event.kind, event.data, event.at)
                if event.kind == "container_started":
                    store.update_host(job, event.algo, start_time=event.at)
            case HostFailed(outcome=o):
                store.update_host(job, o.algo, status=o.status, error=o.error, end_time=o.ended_at)
            case HostResult(outcome=o):
                store.update_host(
                    job,
                    o.algo,
                    status=o.status,
                    exit_code=o.exit_code,
                    end_time=o.ended_at,
                    message=o.message,
                    error=o.error,
                    start_time=event.container_started,
                )
            case OutputFailed(outcome=o):
                store.update_host(job, o.algo, status=o.status, error=o.error)
            case HostNeverStarted(outcome=o):
                store.update_host(job, o.algo, status=o.status)
            case HostMetrics():
                store.set_metrics(job, event.algo, event.gpu, event.samples)
            case _:
                pass


@dataclass(frozen=True, slots=True)
class ObserverSink:
    observer: ProgressObserver

    def __call__(self, event: Event) -> None:
        observer = self.observer
        # Observers written before `waiting` (a caller's own) may lack it: they are not told.
        waiting = getattr(observer, "waiting", None)
        match event:
            case JobWaiting(message=text) | JobQueueReason(reason=text) if waiting is not None:
                waiting(text)
            case JobAllocated() | JobLeftQueue() if waiting is not None:
                waiting(None)
            case HostAdded():
                observer.add_host(event.algo, event.host)
                # The connecting steps happened before the host was added (the backend's claim):
                # told now, with their times, so the view's elapsed time starts where the host's did.
                for kind, at in event.steps:
                    observer.step(event.algo, kind, at=at)
            case HostReattached():
                observer.add_host(event.algo, event.host)
            case HostStep() | AgentEvent():
                observer.step(event.algo, event.kind, **event.data)
            case StagingProgress(bytes=int() as staged):
                observer.staging(event.algo, staged)
            case HostFailed(outcome=o) | HostResult(outcome=o) | OutputFailed(outcome=o) | HostNeverStarted(outcome=o):
                observer.finished(o.algo, o.status, o.exit_code)
            case _:
                pass


#: Seconds between two log lines of one host's S3 staging: visible while it runs, without a line per object.
STAGING_LOG_SECONDS = 2.0


@dataclass(slots=True)
class LogSink:
    log: Any
    _staging_logged: dict[str, float] = field(default_factory=dict)

    def __call__(self, event: Event) -> None:
        log = self.log
        match event:
            case JobCreated():
                log.info("job created", arn=event.arn, hosts=event.hosts)
            case JobWaiting():
                log.warning("waiting for hosts", waiting_for=event.message)
            case JobQueueReason():
                # Slurm's is the one backend queue: its reason each time it changes.
                log.info("queued in Slurm", reason=event.reason)
            case JobStopping():
                log.warning("stopping job", reason=event.reason, grace_seconds=event.grace_seconds)
            case JobFinished(outcome=o):
                log.info(
                    "job finished",
                    status=o.status.value,
                    failure_reason=o.failure_reason,
                    stop_reason=o.stop_reason,
                )
            case HostReady():
                log.info(
                    "host ready",
                    host=event.algo,
                    inventory_host=event.host,
                    agent_sent=event.agent_sent,
                    files=event.files,
                    bytes=event.bytes,
                )
            case StagingProgress():
                now = time.monotonic()
                if now - self._staging_logged.get(event.algo, 0.0) >= STAGING_LOG_SECONDS:
                    self._staging_logged[event.algo] = now
                    log.info("staging", host=event.algo, objects=event.objects, bytes=event.bytes)
            case AgentEvent(seen_before=True, kind="container_started"):
                log.info("reattached to the running container", host=event.algo, container_started=event.at)
            case AgentEvent(seen_before=False):
                if event.kind == "container_started":
                    log.info("container started", host=event.algo)
                elif event.kind == "image_pull_started":
                    log.info("pulling image", host=event.algo, image=event.data.get("image"))
                elif event.kind == "stopping":
                    log.info("host stopping", host=event.algo, reason=event.data.get("reason"))
            case HostFailed(outcome=o):
                log.error("host failed", host=o.algo, error=o.error)
            case HostResult(outcome=o):
                log.info("host finished", host=o.algo, status=o.status, exit_code=o.exit_code)
            case OutputFailed(outcome=o):
                log.error("output failed", host=o.algo, error=o.error)
            case _:
                pass


# --- the recorder -------------------------------------------------------------


class Recorder:
    """Where every event of one job goes; `log` is for the diagnostics no one else records."""

    def __init__(self, sinks: Sequence[Sink], log: Any) -> None:
        self.sinks = tuple(sinks)
        self.log = log

    @classmethod
    def for_job(cls, job: str, store: Store, observer: ProgressObserver | None, log: Any) -> Recorder:
        sinks: list[Sink] = [StoreSink(store, job)]
        if observer is not None:
            sinks.append(ObserverSink(observer))
        sinks.append(LogSink(log))
        return cls(sinks, log)

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    # Shorthands for the events said at more than one place.

    def step(self, algo: str, kind: str, **data: Any) -> None:
        self(HostStep(algo, kind, data))

    def phase(self, algo: str, phase: HostPhase) -> None:
        self(HostPhaseEntered(algo, phase))
