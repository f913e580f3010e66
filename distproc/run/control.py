"""Acting on a job from outside the process that runs it: stop, logs.

`stop` reaches each host's agent directly (from the endpoints kept in the
job store), so it works whether or not the coordinator is still alive.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import IO

from ..backends.fleet import FleetBackend
from ..errors import DistprocError, SpecError, Violation
from ..store.db import HostRecord, JobRecord, Store
from .outcome import HostPhase

STOP_BY_REQUEST = "stopped by request (distproc stop)"
#: The host statuses of a host that has ended: nothing left to stop there.
ENDED = frozenset(p.value for p in HostPhase if p.terminal)


async def _stop_host(record: HostRecord, reason: str) -> str:
    # The SSH fleet is the one backend whose hosts a job store holds today.
    session = FleetBackend(()).reach(record.endpoint, record.job_dir).session
    try:
        await session.install_agent()
        doc = await session.stop(reason)
    finally:
        await session.transport.close()
    return doc.state


async def stop_job(store: Store, name: str, reason: str = STOP_BY_REQUEST) -> dict[str, str]:
    """Ask every host of a running job to stop; returns each host's answer or error."""
    job = store.get_job(name)
    if job.status not in ("InProgress", "Stopping"):
        raise SpecError(
            [Violation("ProcessingJobName", f"job {name!r} is {job.status}; only a running job can be stopped")],
            source="stop request",
        )
    store.request_stop(name, reason)
    hosts = [h for h in job.hosts if h.status not in ENDED]
    answers = await asyncio.gather(*(_stop_host(h, reason) for h in hosts), return_exceptions=True)
    report: dict[str, str] = {}
    for host, answer in zip(hosts, answers, strict=True):
        if isinstance(answer, DistprocError):
            report[host.algo] = f"error: {answer}"
        elif isinstance(answer, BaseException):
            raise answer
        else:
            report[host.algo] = answer
    return report


def _log_files(store: Store, job: JobRecord, host: str | None) -> list[tuple[str, Path]]:
    algos = [h.algo for h in job.hosts] or []
    if host is not None:
        if host not in algos:
            raise SpecError(
                [Violation("--host", f"job {job.name} has no host {host} (it has {', '.join(algos) or 'none'})")],
                source="logs request",
            )
        algos = [host]
    return [(algo, store.log_path(job.name, algo)) for algo in algos]


def print_logs(
    store: Store, name: str, host: str | None, follow: bool, out: IO[str], poll_seconds: float = 0.2
) -> None:
    """Print each host's log, prefixed with algo-K; with follow, until the job ends."""
    job = store.get_job(name)
    files = _log_files(store, job, host)
    offsets = dict.fromkeys((algo for algo, _ in files), 0)
    partial = dict.fromkeys(offsets, b"")
    while True:
        finished = store.get_job(name).status in ("Completed", "Failed", "Stopped")
        for algo, path in files:
            try:
                with open(path, "rb") as fh:
                    fh.seek(offsets[algo])
                    data = fh.read()
            except FileNotFoundError:
                continue
            offsets[algo] += len(data)
            *lines, partial[algo] = (partial[algo] + data).split(b"\n")
            for line in lines:
                out.write(f"[{algo}] {line.decode('utf-8', 'replace')}\n")
        out.flush()
        if not follow or finished:
            break
        # A CLI tailing files another process writes: polling is the mechanism.
        time.sleep(poll_seconds)
    for algo, rest in partial.items():
        if rest:
            out.write(f"[{algo}] {rest.decode('utf-8', 'replace')}\n")
    out.flush()
