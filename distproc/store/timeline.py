"""Each host's per-phase timeline, derived from the job's events.

The coordinator records the steps it drives (connecting, installing the
agent, staging, uploading); the host agent records the ones it drives
(image, container). Both land in the store's events table, and this module
turns them into phases with a start and an end. Pure: plain data in, plain
data out.

A job that waits in its backend's queue (Slurm's) has job-level events (no
algo): "queued" when it was submitted, "allocated" when the scheduler gave it
its nodes (or "left_queue": stopped or cancelled before it had them). Every
host shares that wait, so each gets the "queued" phase.

Agent events carry the host's clock and coordinator events the
coordinator's, so on hosts whose clocks are off by a second, phases that
cross from one to the other are off by that much too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# (phase, events that start it, events that end it), in the order a host goes through them.
PHASES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    # Only on a backend with a queue (Slurm): from submission to allocation, for the whole job.
    ("queued", ("queued",), ("allocated", "left_queue")),
    ("connect", ("connect_started",), ("connected",)),
    ("agent_ready", ("connected",), ("agent_ready",)),
    # Only with `run --ship-image`, and only on hosts that lacked the image.
    ("image_shipped", ("image_ship_started",), ("image_shipped",)),
    ("inputs_staged", ("staging_started",), ("inputs_staged",)),
    ("image_pull", ("agent_started",), ("image_ready",)),
    ("container_running", ("container_started",), ("container_exited",)),
    # From the container's exit until the agent has read its message, removed it and recorded the result.
    ("container_exited", ("container_exited",), ("finished",)),
    ("outputs_uploaded", ("upload_started",), ("outputs_uploaded",)),
)
PHASE_NAMES = tuple(name for name, _, _ in PHASES)


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    start: float
    end: float | None  # None: not (yet) ended

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)


def host_phases(events: Iterable[Mapping[str, Any]]) -> list[Phase]:
    """The phases of one host's events (any order), each from its first start to the first end after it."""
    times: dict[str, list[float]] = {}
    for event in events:
        at = event.get("time")
        if isinstance(at, (int, float)):
            times.setdefault(str(event.get("kind")), []).append(float(at))
    for found in times.values():
        found.sort()
    phases: list[Phase] = []
    for name, starts, ends in PHASES:
        start = min((times[k][0] for k in starts if k in times), default=None)
        if start is None:
            continue
        end = min((t for k in ends for t in times.get(k, ()) if t >= start), default=None)
        phases.append(Phase(name, start, end))
    return phases


def job_timeline(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Phase]]:
    """algo-K -> its phases, for every host with events; the job-level ones (queued) are every host's."""
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    shared: list[Mapping[str, Any]] = []
    for event in events:
        algo = event.get("algo")
        if isinstance(algo, str):
            by_host.setdefault(algo, []).append(event)
        elif algo is None:
            shared.append(event)
    return {algo: host_phases([*shared, *found]) for algo, found in by_host.items()}


def queue_phase(events: Iterable[Mapping[str, Any]]) -> Phase | None:
    """The job's own queued phase (also there when the job never got a host: stopped while queued)."""
    found = host_phases(e for e in events if e.get("algo") is None)
    return next((p for p in found if p.name == "queued"), None)


def timeline_document(phases: list[Phase]) -> list[dict[str, Any]]:
    """The JSON shape `describe --json` and the report use."""
    return [{"Phase": p.name, "Start": p.start, "End": p.end, "Seconds": p.seconds} for p in phases]
