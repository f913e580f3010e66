"""Following the hosts of a running job: launch, follow each to its result, react to failures.

Part of JobRunner (runner.py), kept apart for size: it reads and sets
the runner's state declared below. Each launched host is followed over its
agent's channel; a connection that drops is retried within the reconnect
window, after which the host is lost and the job fails naming it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionError_, DistprocError
from ..spec import ProcessingJob
from ..store.db import Store
from ..ui.console import OutputSink
from .hoststate import HostState, within
from .outcome import FailureClass, HostOutcome

if TYPE_CHECKING:
    from .runner import RunOptions


class Watching:
    """JobRunner's launching and watching; the attributes are the runner's own."""

    job: ProcessingJob
    store: Store
    options: RunOptions
    log: Any
    _states: list[HostState]
    _watchers: dict[str, asyncio.Future[None]]
    _sink: OutputSink | None
    _stop_event: asyncio.Event
    _stop_reason: str | None
    _host_failed_already: bool
    _recorded_events: set[tuple[str, str, float]]

    if TYPE_CHECKING:
        # Defined by JobRunner.

        def _host_failed(self, state: HostState, cls: FailureClass, error: str) -> None: ...

        def _tell_finished(self, outcome: HostOutcome) -> None: ...

        async def _stop_hosts(self, reason: str, exclude: str | None = None) -> None: ...

    async def _launch_and_watch(self, sink: OutputSink) -> None:
        async def launch(state: HostState) -> None:
            if state.launched:
                return  # started by its prepare
            try:
                await state.session.launch()
                state.launched = True
                self.store.update_host(self.job.name, state.assignment.algo, status="InProgress")
            except DistprocError as exc:
                self._host_failed(state, FailureClass.INTERNAL, str(exc))

        await asyncio.gather(*(launch(s) for s in self._states))
        if not all(s.launched for s in self._states):
            await self._stop_hosts("another host failed to start")
        await self._watch_all(sink)

    def _start_watch(self, state: HostState) -> None:
        algo = state.assignment.algo
        if algo not in self._watchers and self._sink is not None:
            self._watchers[algo] = asyncio.ensure_future(self._watch(state, self._sink))

    async def _watch_all(self, sink: OutputSink) -> None:
        """Follow every launched host to its result, stopping them all when asked."""
        self._sink = sink
        for state in self._states:
            if state.launched:
                self._start_watch(state)
        watchers = list(self._watchers.values())
        stopper = asyncio.ensure_future(self._stop_event.wait())
        pending: set[asyncio.Future[Any]] = set(watchers)
        try:
            while pending:
                done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    await self._stop_hosts(self._stop_reason or "stop requested")
                    stopper = asyncio.ensure_future(asyncio.Event().wait())
                pending = {w for w in watchers if not w.done()}
        finally:
            stopper.cancel()

    async def _watch(self, state: HostState, sink: OutputSink) -> None:
        algo = state.assignment.algo
        session = state.session
        # The host's last sign of life when the current loss of contact began (None: in contact).
        lost_at: float | None = None
        first_reason = ""
        delay = 0.5

        async def on_line(doc: dict[str, Any]) -> None:
            stream = doc.get("stream")
            if stream == "log":
                sink.write(algo, str(doc.get("data", "")).encode("utf-8", "surrogateescape"))
            elif stream == "event":
                await self._on_event(state, doc.get("event") or {})
            elif stream == "result":
                sink.flush(algo)
                await self._on_result(state, doc.get("result") or {})
            elif stream == "lost":
                sink.flush(algo)
                self._host_failed(state, FailureClass.INTERNAL, "the agent on the host died before the container ended")
                await self._on_host_failed(state)

        # The window counts from the last time anything was heard from the host (a
        # follow line, an answer, a connection made), not from when the loss was
        # noticed: keepalives take up to half the window to declare a link dead.
        window = self.options.reconnect_window_seconds
        while state.outcome is None:
            try:
                if lost_at is not None:
                    # One reconnection attempt may not outlast what is left of the window.
                    left = max(1.0, session.last_heard + window - time.time())
                    await within(session.transport.connect(), left, session.transport.name)
                    session.heard()
                state.position = await session.follow(state.position, on_line)
                lost_at = None
                delay = 0.5
            except ConnectionError_ as exc:
                state.position = getattr(exc, "position", state.position)
                now = time.time()
                if lost_at != session.last_heard:
                    # A new loss of contact: the host was heard from since the last one.
                    lost_at, first_reason, delay = session.last_heard, exc.reason, 0.5
                silent = now - session.last_heard
                if silent >= window:
                    state.lost = True
                    why = first_reason if exc.reason == first_reason else f"{first_reason}; then {exc.reason}"
                    self._host_failed(state, FailureClass.INTERNAL, self._lost_text(why, silent))
                    await self._on_host_failed(state)
                    return
                self.log.warning("reconnecting", host=algo, error=exc.reason, silent_seconds=round(silent, 1))
                await asyncio.sleep(min(delay, max(0.0, window - silent)))
                delay = min(delay * 2, 10.0)

    def _lost_text(self, reason: str, silent: float) -> str:
        orphan = self.options.orphan_timeout_seconds
        then = (
            f"its agent stops the container once no coordinator has followed it for {orphan:.0f} s"
            if orphan > 0
            else "its container may still run there (--orphan-timeout 0)"
        )
        return f"lost contact with the host for {silent:.0f} s while its container ran ({reason}); {then}"

    async def _on_event(self, state: HostState, event: dict[str, Any]) -> None:
        kind = str(event.get("kind", ""))
        algo = state.assignment.algo
        at = event.get("time") if isinstance(event.get("time"), (int, float)) else None
        data = {k: v for k, v in event.items() if k not in ("kind", "time")}
        if self.options.observer is not None:
            self.options.observer.step(algo, kind, **data)
        if at is not None and (algo, kind, float(at)) in self._recorded_events:
            # Followed again by `attach`: recorded and logged by the run that saw it first.
            if kind == "container_started":
                self.log.info("reattached to the running container", host=algo, container_started=at)
            return
        self.store.add_event(self.job.name, algo, kind, data, at)
        if kind == "container_started":
            self.store.update_host(self.job.name, algo, start_time=at)
            self.log.info("container started", host=algo)
        elif kind == "image_pull_started":
            self.log.info("pulling image", host=algo, image=event.get("image"))
        elif kind == "stopping":
            self.log.info("host stopping", host=algo, reason=event.get("reason"))

    async def _on_result(self, state: HostState, result: dict[str, Any]) -> None:
        a = state.assignment
        state.cleaned_by_host = bool(result.get("orphaned"))
        status = str(result.get("status") or "Failed")
        exit_code = result.get("exit_code")
        ended = result.get("container_ended") or result.get("agent_ended") or time.time()
        state.outcome = HostOutcome(
            algo=a.algo,
            host=a.host.name,
            status=status,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            ended_at=float(ended),
            message=result.get("message"),
            message_valid=bool(result.get("message_valid", True)),
            message_problem=result.get("message_problem") if isinstance(result.get("message_problem"), str) else None,
            error=result.get("error"),
            error_class=result.get("error_class"),
            stopped_by_distproc=bool(result.get("stopped")),
        )
        if result.get("stopped") and result.get("stop_reason") and self._stop_reason is None:
            # A stop this process did not ask for: MaxRuntimeInSeconds or `distproc stop`.
            self._stop_reason = str(result["stop_reason"])
        self.store.update_host(
            self.job.name,
            a.algo,
            status=status,
            exit_code=state.outcome.exit_code,
            end_time=float(ended),
            message=state.outcome.message,
            error=state.outcome.error,
            start_time=result.get("container_started"),
        )
        self.log.info("host finished", host=a.algo, status=status, exit_code=exit_code)
        self._tell_finished(state.outcome)
        if status == "Failed":
            await self._on_host_failed(state)

    async def _on_host_failed(self, state: HostState) -> None:
        self._host_failed_already = True  # hosts still being prepared are not started
        others = [s for s in self._states if s.outcome is None and s.launched]
        if others:
            self.log.warning("stopping the other hosts", failed=state.assignment.algo)
            await self._stop_hosts(f"{state.assignment.algo} failed", exclude=state.assignment.algo)
