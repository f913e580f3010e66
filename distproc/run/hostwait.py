"""Waiting for busy hosts (`run --wait-for-hosts[=SECONDS]`) instead of failing for want of them.

The job joins the job store's queue of waiting jobs (store/db.py) and, when
no job that arrived before it and may use one of the same hosts still waits,
asks the backend for its hosts. While they are busy it says what it waits
for (the log line, the live view, `describe`) and asks again: at once when the
store shows that a host may have been given back (a job ended, a waiter left),
else at a growing interval, so that a long wait does not keep knocking at
every host's agent. A stop (Ctrl-C, `distproc stop`) ends the wait at once.

Only coordinators that share the store are ordered; between stores the
host's lease decides, first come first served. This is all the scheduling
distproc does: a fleet that needs more wants a real scheduler, such as Slurm.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from ..backends.base import Claimed, Shortage
from .context import JobContext
from .recorder import JobWaiting

#: The first pause between two rounds of asking the hosts, and how far it grows.
FIRST_POLL_SECONDS = 2.0
MAX_POLL_SECONDS = 30.0
POLL_GROWTH = 1.5
#: How often the job store is read for a host given back, a waiter gone or a stop asked.
STORE_CHECK_SECONDS = 1.0


def busy_message(need: int, instance_type: str, shortage: Shortage) -> str:
    """What the job waits for: "waiting for 2 hosts of ml.m5.xlarge: h1 busy with job X, h2 busy with job Y"."""
    hosts = ", ".join(f"{host} busy with job {holder}" for host, holder in shortage.busy)
    return f"waiting for {need} host{'s' if need != 1 else ''} of {instance_type}: {hosts}"


def queue_message(ahead: Sequence[str]) -> str:
    jobs = ", ".join(ahead)
    plural = "s" if len(ahead) != 1 else ""
    return f"waiting behind job{plural} {jobs}, which arrived earlier and wait for the same hosts"


class HostWait:
    """One job's wait for its hosts: `claim()` gives them, a Shortage to fail with, or None once stopped."""

    def __init__(self, ctx: JobContext, limit_seconds: float) -> None:
        self.ctx = ctx
        self.limit = limit_seconds
        self.job = ctx.job
        self._said: str | None = None

    async def claim(self) -> Sequence[Claimed] | Shortage | None:
        store, backend = self.ctx.store, self.ctx.backend
        keys = backend.queue_keys()
        started = time.monotonic()
        deadline = started + self.limit
        if keys:
            store.join_queue(self.job.name, keys)
        backend.waiting_for_hosts = True
        try:
            interval = FIRST_POLL_SECONDS
            last: Shortage | None = None
            while True:
                ahead = store.waiting_ahead(self.job.name) if keys else []
                if not ahead:
                    got = await backend.acquire(self.job)
                    if not isinstance(got, Shortage) or not got.enough_if_freed:
                        return got  # the hosts, or a shortage that no waiting can end (unreachable hosts)
                    last = got
                    self._say(busy_message(self.job.cluster.instance_count, self.job.cluster.instance_type, got))
                else:
                    self._say(queue_message(ahead))
                woken = await self._pause(interval, deadline)
                if self.ctx.stop.reason is not None:
                    return None
                if time.monotonic() >= deadline:
                    return self._gave_up(last, ahead, time.monotonic() - started)
                # A host given back in the store: ask at once, and start the backoff again.
                interval = FIRST_POLL_SECONDS if woken else min(interval * POLL_GROWTH, MAX_POLL_SECONDS)
        finally:
            backend.waiting_for_hosts = False
            if keys:
                with contextlib.suppress(Exception):  # the job's own end is recorded whatever this does
                    store.leave_queue(self.job.name)

    def _say(self, message: str) -> None:
        if message != self._said:
            self._said = message
            self.ctx.recorder(JobWaiting(message))

    async def _pause(self, interval: float, deadline: float) -> bool:
        """Sleep up to `interval` (not past the deadline); True when the store showed a change worth a look.

        Ends early on a stop asked here (Ctrl-C) or in the store (`distproc stop`).
        """
        store, stop = self.ctx.store, self.ctx.stop
        mark = store.queue_mark()
        until = min(time.monotonic() + interval, deadline)
        while stop.reason is None:
            left = until - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.event.wait(), timeout=min(STORE_CHECK_SECONDS, left))
            if stop.reason is not None:
                break
            requested = store.get_job(self.job.name).stop_requested
            if requested:
                stop.request(requested)
                break
            if store.queue_mark() != mark:
                return True
        return False

    def _gave_up(self, last: Shortage | None, ahead: Sequence[str], waited: float) -> Shortage:
        after = f"gave up after waiting {waited:.0f} s for them (the wait's limit: {self.limit:g} s)"
        if last is not None and not ahead:
            return Shortage(f"{last.reason}; {after}", client_error=True, busy=last.busy, enough_if_freed=True)
        jobs = ", ".join(ahead)
        reason = (
            f"too few free hosts: the job needs {self.job.cluster.instance_count} x "
            f"{self.job.cluster.instance_type}; job(s) {jobs}, which arrived earlier, still wait for the same "
            f"hosts; {after}"
        )
        return Shortage(reason, client_error=True, busy=last.busy if last else (), enough_if_freed=True)
