"""What the coordinator keeps per host while a job runs, and a host step bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import ConnectionError_
from ..hosts.session import FollowPosition, HostSession
from ..hosts.transport import Transport
from ..inventory import Host
from ..plan import HostAssignment
from .outcome import HostOutcome

T = TypeVar("T")


@dataclass
class HostState:
    assignment: HostAssignment
    session: HostSession
    prepared: bool = False
    launched: bool = False
    #: Whether the agent had to be sent to the host (it was not cached there).
    agent_sent: bool = False
    outcome: HostOutcome | None = None
    position: FollowPosition = field(default_factory=FollowPosition)
    #: Unreachable for longer than the reconnect window while it ran.
    lost: bool = False
    #: Stopped by its own orphan timeout, after which its agent removed the job's
    #: data (outputs included): there is nothing left to fetch (a late attach).
    cleaned_by_host: bool = False


@dataclass(frozen=True, slots=True)
class HostClaim:
    """A host leased for the job, its connection open and its agent installed."""

    host: Host
    transport: Transport
    connect_started: float
    connected: float
    agent_sent: bool
    #: Its agent, waiting for the job's task (HostSession.claim).
    session: HostSession


async def within(step: Awaitable[T], seconds: float, host: str) -> T:
    """A host step bounded in time; running out counts as losing the connection."""
    try:
        return await asyncio.wait_for(step, seconds)
    except TimeoutError:
        raise ConnectionError_(host, f"no answer within {seconds:.0f} s") from None
