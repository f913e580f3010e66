"""What the coordinator keeps per host while a job runs: its phase, and a host step bounded in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import ConnectionError_
from ..hosts.session import FollowPosition, HostSession
from ..plan import HostAssignment
from .outcome import TERMINAL_PHASES, FailureClass, HostOutcome, HostPhase

T = TypeVar("T")


#: Every move a host may make. The end of a host may be recorded again: a host
#: followed anew by `attach` repeats its result, and one whose outputs could
#: not be fetched after it ended turns Failed.
TRANSITIONS: dict[HostPhase, frozenset[HostPhase]] = {
    HostPhase.PENDING: frozenset({HostPhase.PREPARING, HostPhase.FAILED, HostPhase.STOPPED}),
    HostPhase.PREPARING: frozenset({HostPhase.IN_PROGRESS, HostPhase.FAILED, HostPhase.STOPPED}),
    HostPhase.IN_PROGRESS: TERMINAL_PHASES,
    HostPhase.COMPLETED: TERMINAL_PHASES,
    HostPhase.FAILED: TERMINAL_PHASES,
    HostPhase.STOPPED: TERMINAL_PHASES,
}


@dataclass
class HostState:
    assignment: HostAssignment
    session: HostSession
    phase: HostPhase = HostPhase.PENDING
    #: Agent installed, image present, inputs staged: its outputs are worth collecting.
    prepared: bool = False
    #: Whether the agent had to be sent to the host (it was not cached there).
    agent_sent: bool = False
    outcome: HostOutcome | None = None
    position: FollowPosition = field(default_factory=FollowPosition)
    #: Unreachable for longer than the reconnect window while it ran.
    lost: bool = False
    #: Stopped by its own orphan timeout, after which its agent removed the job's
    #: data (outputs included): there is nothing left to fetch (a late attach).
    cleaned_by_host: bool = False
    #: Its container was started (the phase alone cannot say so once the host ended).
    launched: bool = False

    def move(self, phase: HostPhase) -> None:
        """Enter a phase; a move TRANSITIONS does not allow is a bug in the coordinator."""
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"host {self.assignment.algo}: {self.phase} cannot become {phase}")
        self.phase = phase
        if phase is HostPhase.IN_PROGRESS:
            self.launched = True

    def end(self, outcome: HostOutcome) -> HostOutcome:
        """The host's end, as known now (a later one may replace it: outputs that failed)."""
        self.move(HostPhase.of_result(outcome.status))
        self.outcome = outcome
        return outcome

    def fail(self, cls: FailureClass, error: str) -> HostOutcome:
        """The host failed before any result of its own (not prepared, lost, its agent died)."""
        a = self.assignment
        return self.end(
            HostOutcome(
                algo=a.algo,
                host=a.host.name,
                status=HostPhase.FAILED,
                exit_code=None,
                ended_at=time.time(),
                error=error,
                error_class=cls.value,
            )
        )


async def within(step: Awaitable[T], seconds: float, host: str) -> T:
    """A host step bounded in time; running out counts as losing the connection."""
    try:
        return await asyncio.wait_for(step, seconds)
    except TimeoutError:
        raise ConnectionError_(host, f"no answer within {seconds:.0f} s") from None
