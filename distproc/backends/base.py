"""The interface between the runner and a backend that finds, claims and reaches hosts.

Everything above it (spec, plan, the host contract, outcome rules, the job
store, logs, metrics) is the same for every backend; everything below it is
the backend's own. A backend:

    acquire   claims the job's InstanceCount hosts, each with its agent ready
              for the job's task (or says why it could not: a Shortage);
    endpoint  what the job store keeps of a host, so that it can be reached again;
    reach     a session to a host the store names (`distproc attach`);
    release   gives back a claimed host that was never prepared (a prepared
              host's cleanup gives itself back);
    ended     the job is over: whatever holds its hosts as a whole (an allocation) goes;
    queue_keys  names of the hosts it may claim, for the local queue of jobs
              waiting for busy hosts (`run --wait-for-hosts`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..hosts.session import HostSession
from ..inventory import Host
from ..spec import JobSpec


@dataclass(frozen=True, slots=True)
class Claimed:
    """A host claimed for the job, its connection open and its agent waiting for the job's task."""

    host: Host
    #: Its agent, waiting for the job's task (HostSession.claim); the connection is session.transport.
    session: HostSession
    connect_started: float
    connected: float
    #: Whether the agent had to be sent to the host (it was not cached there).
    agent_sent: bool


@dataclass(frozen=True, slots=True)
class Shortage:
    """Too few hosts could be had: the job fails for this reason."""

    reason: str
    #: Only busy hosts stood in the way (the caller's to wait for), not broken or unreachable ones.
    client_error: bool
    #: The busy hosts, each with the job that holds it: (host, job).
    busy: tuple[tuple[str, str], ...] = ()
    #: The busy hosts, once given back, would be enough: waiting for them can succeed (`--wait-for-hosts`).
    enough_if_freed: bool = False


@dataclass(frozen=True, slots=True)
class Reached:
    """A host of a recorded job, reached again: who it is and a session to its agent."""

    host: Host
    session: HostSession


class Backend(ABC):
    """Finds, claims and reaches the hosts of one job."""

    #: Set while the job waits for busy hosts (run/hostwait.py): a busy host is then
    #: expected, said once by the wait itself rather than warned of at every round.
    waiting_for_hosts: bool = False

    @abstractmethod
    async def acquire(self, job: JobSpec) -> Sequence[Claimed] | Shortage:
        """The job's hosts in algo order (algo-1 first), all of them, or a Shortage and none held."""

    @abstractmethod
    def endpoint(self, host: Host) -> Mapping[str, Any]:
        """What the job store keeps of a claimed host: enough for reach() in another process."""

    @abstractmethod
    def reach(self, endpoint: Mapping[str, Any], job_dir: str) -> Reached:
        """A session (not yet connected) to a host the job store names, for the job folder given."""

    @abstractmethod
    async def release(self, job: str, session: HostSession) -> None:
        """Give back a host claimed for the job but never prepared."""

    async def ended(self, job: str) -> None:  # noqa: B027 (a hook: most backends have nothing to end)
        """The job is over and its hosts cleaned up (or never had): give back what holds them all.

        The fleet has nothing to give back; a scheduler's allocation (Slurm) ends here.
        """

    def queue_keys(self) -> tuple[str, ...]:
        """What names each host the job may use, for the job store's queue of jobs waiting for hosts.

        Jobs waiting for overlapping keys are served in order of arrival
        (run/hostwait.py). Empty: the backend queues its jobs itself.
        """
        return ()
