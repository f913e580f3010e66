"""Acting on a job from outside the process that runs it: stop, logs.

`stop` reaches each host's agent directly (from the endpoints kept in the
job store), so it works whether or not the coordinator is still alive. It
goes through the backend the job ran on, built again from the store's record
of it (backends/records.py): over SSH for the fleet, through srun steps for
Slurm. A job with no hosts yet may wait in its backend's queue (Slurm's):
it is taken out of it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import IO

from ..backends.base import Backend
from ..backends.records import backend_from_record
from ..errors import DistprocError, SpecError, Violation
from ..store.db import HostRecord, JobRecord, Store
from .attach import coordinator_alive
from .outcome import HostPhase, JobStatus

STOP_BY_REQUEST = "stopped by request (distproc stop)"
#: The host statuses of a host that has ended: nothing left to stop there.
ENDED = frozenset(p.value for p in HostPhase if p.terminal)


async def _stop_host(backend: Backend, record: HostRecord, reason: str) -> str:
    session = backend.reach(record.endpoint, record.job_dir).session
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
    backend = backend_from_record(job.backend, name)
    report: dict[str, str] = {}
    if not job.hosts:
        # No hosts yet: the job may wait in its backend's queue (Slurm's), from which it is taken.
        # Its `run`, if alive, reads the stop from the store and records the job Stopped.
        try:
            done = await backend.cancel_queued(name)
        finally:
            await backend.close()
        if done is not None:
            report["queue"] = done
            if not coordinator_alive(job.coordinator_pid):
                # Nobody else will: the job never had a host, so stopping it is all there is to do.
                store.update_job(
                    name, status=JobStatus.STOPPED.value, stop_reason=reason, end_time=time.time(), waiting_for=None
                )
        return report
    hosts = [h for h in job.hosts if h.status not in ENDED]
    try:
        answers = await asyncio.gather(*(_stop_host(backend, h, reason) for h in hosts), return_exceptions=True)
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, DistprocError):
                report[host.algo] = f"error: {answer}"
            elif isinstance(answer, BaseException):
                raise answer
            else:
                report[host.algo] = answer
        if backend.queues and not coordinator_alive(job.coordinator_pid) and hosts:
            await _end_without_run(store, backend, name, hosts, reason, report)
    finally:
        await backend.close()
    return report


async def _end_without_run(
    store: Store, backend: Backend, name: str, hosts: list[HostRecord], reason: str, report: dict[str, str]
) -> None:
    """A scheduler's job whose `run` is dead: end it here once its agents have stopped.

    The fleet's hosts hold nothing but their lease until `attach` ends the job;
    a Slurm allocation holds whole nodes until its time limit, so the nodes are
    cleaned up (container, data, lease) and the allocation cancelled now, and
    the job recorded Stopped, as a stop of a job still queued is.
    """
    done = await asyncio.gather(*(_finish_host(backend, name, h) for h in hosts), return_exceptions=True)
    for host, answer in zip(hosts, done, strict=True):
        if isinstance(answer, DistprocError):
            report[f"{host.algo} cleanup"] = f"error: {answer}"
        elif isinstance(answer, BaseException):
            raise answer
    if any(isinstance(answer, BaseException) for answer in done):
        return  # something is left on a node: the allocation stays, for `attach` to end the job
    now = time.time()
    for host in hosts:
        store.update_host(name, host.algo, status=HostPhase.STOPPED.value, end_time=now)  # the reason is the job's
    await backend.ended(name)  # the allocation goes (scancel)
    store.update_job(name, status=JobStatus.STOPPED.value, stop_reason=reason, end_time=now, waiting_for=None)
    report["allocation"] = "cancelled: the job's run was gone, its nodes are cleaned up"


async def _finish_host(backend: Backend, name: str, record: HostRecord) -> None:
    """Wait for the host's agent to end its container (its stop's grace, then SIGKILL), then clean up."""
    session = backend.reach(record.endpoint, record.job_dir).session
    try:
        while (await session.status()).alive:
            # Another process's agent, reached through a fresh step each time: polling is the way.
            await asyncio.sleep(0.5)
        await session.cleanup()
        # A host never prepared has no task for cleanup to find its lease by: given back by name.
        await session.release(name)
    finally:
        await session.transport.close()


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
