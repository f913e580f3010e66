"""Following the hosts of a running job: launch, follow each to its result, react to failures.

Each launched host is followed over its agent's channel; a connection that
drops is retried within the reconnect window, after which the host is lost
and the job fails naming it. A host that fails stops the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Set
from typing import Any

from ..agent.answers import Event, EventLine, FollowLine, LogLine, LostLine, ResultLine, RunResult
from ..backends.base import HostGone
from ..errors import ConnectionError_, DistprocError
from ..ui.console import OutputSink
from .context import JobContext
from .hoststate import HostState, within
from .outcome import FailureClass, HostOutcome, HostPhase
from .recorder import AgentEvent, HostResult


class Watch:
    """The launching and following of one job's hosts, each followed by its own task."""

    def __init__(self, ctx: JobContext, sink: OutputSink, seen: Set[tuple[str, str, float]] = frozenset()) -> None:
        self.ctx = ctx
        self.sink = sink
        # (algo, kind, time) of the agents' events the store holds already: `attach`
        # follows each host from its first event again, and those are not new.
        self.seen = seen
        # Each launched host's follower, started as soon as the host runs: its pings
        # are what keep the host's orphan timeout from running out.
        self.watchers: dict[str, asyncio.Future[None]] = {}

    def cancel(self) -> None:
        """Stop following (only those an error left behind are still running)."""
        for watcher in self.watchers.values():
            watcher.cancel()

    async def stop_hosts(self, reason: str, exclude: str | None = None) -> None:
        targets = [s for s in self.ctx.states if s.launched and s.outcome is None and s.assignment.algo != exclude]
        results = await asyncio.gather(*(s.session.stop(reason) for s in targets), return_exceptions=True)
        for state, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                self.ctx.recorder.log.warning(
                    "could not ask host to stop", host=state.assignment.algo, error=str(result)
                )

    async def launch_all(self) -> None:
        """Start every prepared host's container (those not started by their prepare), then follow them all."""

        async def launch(state: HostState) -> None:
            if state.launched:
                return  # started by its prepare
            try:
                await state.session.launch()
                self.launched(state)
            except DistprocError as exc:
                self.ctx.host_failed(state, FailureClass.INTERNAL, str(exc))

        await asyncio.gather(*(launch(s) for s in self.ctx.states))
        if not all(s.launched for s in self.ctx.states):
            await self.stop_hosts("another host failed to start")
        await self.watch_all()

    def launched(self, state: HostState) -> None:
        """The host's container was started: record it and follow the host from now on."""
        state.move(HostPhase.IN_PROGRESS)
        self.ctx.recorder.phase(state.assignment.algo, HostPhase.IN_PROGRESS)
        self.start(state)

    def start(self, state: HostState) -> None:
        algo = state.assignment.algo
        if algo not in self.watchers:
            self.watchers[algo] = asyncio.ensure_future(self._watch(state))

    async def watch_all(self) -> None:
        """Follow every launched host to its result, stopping them all when asked."""
        for state in self.ctx.states:
            if state.launched:
                self.start(state)
        watchers = list(self.watchers.values())
        stop = self.ctx.stop
        stopper = asyncio.ensure_future(stop.event.wait())
        pending: set[asyncio.Future[Any]] = set(watchers)
        try:
            while pending:
                done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    await self.stop_hosts(stop.reason or "stop requested")
                    stopper = asyncio.ensure_future(asyncio.Event().wait())
                pending = {w for w in watchers if not w.done()}
        finally:
            stopper.cancel()

    async def _watch(self, state: HostState) -> None:
        algo = state.assignment.algo
        session = state.session
        sink = self.sink
        # The host's last sign of life when the current loss of contact began (None: in contact).
        lost_at: float | None = None
        first_reason = ""
        delay = 0.5

        async def on_line(line: FollowLine) -> None:
            if isinstance(line, LogLine):
                sink.write(algo, line.raw)
            elif isinstance(line, EventLine):
                self._on_event(state, line.event)
            elif isinstance(line, ResultLine):
                sink.flush(algo)
                await self._on_result(state, line.result)
            elif isinstance(line, LostLine):
                sink.flush(algo)
                error = "the agent on the host died before the container ended"
                self.ctx.host_failed(state, FailureClass.INTERNAL, error)
                await self._on_host_failed(state)

        # The window counts from the last time anything was heard from the host (a
        # follow line, an answer, a connection made), not from when the loss was
        # noticed: keepalives take up to half the window to declare a link dead.
        window = self.ctx.options.reconnect_window_seconds
        while state.outcome is None:
            try:
                if lost_at is not None:
                    # One reconnection attempt may not outlast what is left of the window.
                    left = max(1.0, session.last_heard + window - time.time())
                    await within(session.transport.connect(), left, session.transport.name)
                    session.heard()
                state.position = await session.follow(state.position, on_line)
                if state.outcome is None:
                    # The stream ended with no result: the channel carrying it ended (an srun
                    # step whose allocation Slurm ended), a loss like any other.
                    raise ConnectionError_(session.transport.name, "the agent's stream ended before a result")
                lost_at = None
                delay = 0.5
            except ConnectionError_ as exc:
                state.position = getattr(exc, "position", state.position)
                gone = await self._gone(state)
                if gone is not None:
                    await self._on_host_gone(state, gone)
                    return
                now = time.time()
                if lost_at != session.last_heard:
                    # A new loss of contact: the host was heard from since the last one.
                    lost_at, first_reason, delay = session.last_heard, exc.reason, 0.5
                silent = now - session.last_heard
                if silent >= window:
                    state.lost = True
                    why = first_reason if exc.reason == first_reason else f"{first_reason}; then {exc.reason}"
                    self.ctx.host_failed(state, FailureClass.INTERNAL, self._lost_text(why, silent))
                    await self._on_host_failed(state)
                    return
                self.ctx.recorder.log.warning(
                    "reconnecting", host=algo, error=exc.reason, silent_seconds=round(silent, 1)
                )
                await asyncio.sleep(min(delay, max(0.0, window - silent)))
                delay = min(delay * 2, 10.0)

    async def _gone(self, state: HostState) -> HostGone | None:
        """What the backend knows of a host that stopped answering (a scheduler may know it is gone)."""
        try:
            return await self.ctx.backend.gone(state.assignment.host, state.session.job_dir)
        except DistprocError as exc:
            self.ctx.recorder.log.warning(
                "could not ask the backend about the host", host=state.assignment.algo, error=str(exc)
            )
            return None

    async def _on_host_gone(self, state: HostState, gone: HostGone, exit_code: int | None = None) -> None:
        """The backend says the host will not answer again: end it now, Stopped or Failed as it says."""
        # Its outputs cannot be fetched; cleanup takes the way the backend gives, if any (EndOfJob).
        state.lost = True
        if gone.session is not None:
            state.session = gone.session
        if not gone.stopped:
            self.ctx.host_failed(state, FailureClass.INTERNAL, gone.reason)
            await self._on_host_failed(state)
            return
        a = state.assignment
        outcome = state.end(
            HostOutcome(a.algo, a.host.name, status=HostPhase.STOPPED, exit_code=exit_code, ended_at=time.time())
        )
        self.ctx.stop.stopped_by_host(gone.reason)
        self.ctx.recorder(HostResult(outcome, None))

    def _lost_text(self, reason: str, silent: float) -> str:
        orphan = self.ctx.options.orphan_timeout_seconds
        then = (
            f"its agent stops the container once no coordinator has followed it for {orphan:.0f} s"
            if orphan > 0
            else "its container may still run there (--orphan-timeout 0)"
        )
        return f"lost contact with the host for {silent:.0f} s while its container ran ({reason}); {then}"

    def _on_event(self, state: HostState, event: Event) -> None:
        algo = state.assignment.algo
        seen = event.time is not None and (algo, event.kind, event.time) in self.seen
        self.ctx.recorder(AgentEvent(algo, event.kind, event.data, event.time, seen))

    async def _on_result(self, state: HostState, result: RunResult) -> None:
        a = state.assignment
        killed = result.exit_code is None or result.exit_code >= 128
        if HostPhase.of_result(result.status) is HostPhase.FAILED and not result.stopped and killed:
            # Killed by a signal nobody here sent: the backend may have ended the host
            # (Slurm's time limit, a failed node), which decides how the host ended.
            gone = await self._gone(state)
            if gone is not None:
                await self._on_host_gone(state, gone, result.exit_code)
                return
        state.cleaned_by_host = result.orphaned
        outcome = state.end(
            HostOutcome(
                algo=a.algo,
                host=a.host.name,
                status=HostPhase.of_result(result.status),
                exit_code=result.exit_code,
                ended_at=result.ended or time.time(),
                message=result.message,
                message_valid=result.message_valid,
                message_problem=result.message_problem,
                error=result.error,
                error_class=result.error_class,
                stopped_by_distproc=result.stopped,
            )
        )
        if result.stopped and result.stop_reason:
            # A stop this process did not ask for: MaxRuntimeInSeconds or `distproc stop`.
            self.ctx.stop.stopped_by_host(result.stop_reason)
        self.ctx.recorder(HostResult(outcome, result.container_started))
        if outcome.status == HostPhase.FAILED:
            await self._on_host_failed(state)

    async def _on_host_failed(self, state: HostState) -> None:
        self.ctx.stop.host_failed = True  # hosts still being prepared are not started
        others = [s for s in self.ctx.states if s.outcome is None and s.launched]
        if others:
            self.ctx.recorder.log.warning("stopping the other hosts", failed=state.assignment.algo)
            await self.stop_hosts(f"{state.assignment.algo} failed", exclude=state.assignment.algo)
