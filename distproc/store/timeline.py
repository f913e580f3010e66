"""Each host's per-phase timeline, derived from the job's events.

The coordinator records the steps it drives (connecting, installing the
agent, staging, uploading); the host agent records the ones it drives
(image, container). Both land in the store's events table, and this module
turns them into phases with a start and an end. Pure: plain data in, plain
data out.

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
    """algo-K -> its phases, for every host with events."""
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        algo = event.get("algo")
        if isinstance(algo, str):
            by_host.setdefault(algo, []).append(event)
    return {algo: host_phases(found) for algo, found in by_host.items()}


def timeline_document(phases: list[Phase]) -> list[dict[str, Any]]:
    """The JSON shape `describe --json` and the report use."""
    return [{"Phase": p.name, "Start": p.start, "End": p.end, "Seconds": p.seconds} for p in phases]
