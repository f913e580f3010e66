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
              waiting for busy hosts (`run --wait-for-hosts`);
    record    what the job store keeps of the backend itself, so that another
              process (`distproc stop`, `attach`) builds the same backend again
              (backends/records.py);
    cancel_queued  takes a job that still waits in the backend's own queue (a
              scheduler's) out of it, from another process;
    gone      whether a host the coordinator lost contact with is gone for good
              (a scheduler ended its allocation or declared its node failed), and why.

A backend whose acquire waits in a scheduler's queue tells its ``listener``
(the runner) what happens there: Submitted, Queued (Slurm's reason), Allocated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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


@dataclass(frozen=True, slots=True)
class Submitted:
    """The job went into the backend's queue (a scheduler's): its queued phase starts; record() says how to reach it."""

    at: float


@dataclass(frozen=True, slots=True)
class Queued:
    """Why the job still waits in the queue, at each change: "waiting for 3 nodes in partition gpu: Resources"."""

    reason: str


@dataclass(frozen=True, slots=True)
class Allocated:
    """The scheduler gave the job its hosts: the queued phase ends."""

    at: float


#: What a queueing backend tells its listener while acquire waits.
BackendNote = Submitted | Queued | Allocated


@dataclass(frozen=True, slots=True)
class HostGone:
    """A host the coordinator lost contact with is gone for good, as the backend knows (a scheduler does).

    ``stopped``: the host ends Stopped and ``reason`` is the job's stop reason
    (Slurm's time limit: the MaxRuntimeInSeconds reason); otherwise it fails
    the job with ``reason`` (a node Slurm declared failed, named).
    """

    reason: str
    stopped: bool
    #: How to reach the host from now on, to clean up what the job left there
    #: (Slurm: a small job of its own per command); None: it cannot be reached.
    session: HostSession | None = None


class Backend(ABC):
    """Finds, claims and reaches the hosts of one job."""

    #: The name the job store records the backend by ("fleet", "slurm"); backends/records.py reads it.
    #: Empty (a caller's own backend): its class name, which no other process can build again.
    kind: ClassVar[str] = ""
    #: acquire may wait long in a queue (a scheduler's), and gives back all it held when
    #: cancelled: a stop (Ctrl-C, `distproc stop`) then cancels it rather than waits for it.
    queues: ClassVar[bool] = False
    #: Told what happens in the backend's queue (the runner records it); None: nobody listens.
    listener: Callable[[BackendNote], None] | None = None

    #: Set while the job waits for busy hosts (run/hostwait.py): a busy host is then
    #: expected, said once by the wait itself rather than warned of at every round.
    waiting_for_hosts: bool = False
    #: The S3 endpoint and region the coordinator lists inputs through before any host is
    #: claimed, for a backend whose hosts are unknown until then (Slurm's inventory names them).
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    #: A folder every host and this machine see at the same path: file:// data in it is bound
    #: into the containers instead of copied (run/shared.py). None: nothing shared is assumed.
    shared_dir: str | None = None

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

    async def gone(self, host: Host, job_dir: str) -> HostGone | None:
        """Whether a host that stopped answering mid-job is gone for good, and why; None: unknown, keep trying.

        The fleet cannot tell a slow network from a dead host (the reconnect
        window decides); a scheduler can (Slurm: the allocation timed out, the node failed).
        """
        return None

    def record(self, job: str) -> Mapping[str, Any]:
        """What the job store keeps of this backend for the job, never a secret: enough to build it again."""
        return {"backend": self.kind or type(self).__name__}

    async def close(self) -> None:  # noqa: B027 (a hook: the fleet keeps no connection of its own)
        """Close what the backend itself keeps open (Slurm: its connection to the submit node)."""

    async def cancel_queued(self, job: str) -> str | None:
        """Take the job out of the backend's queue while it has no hosts yet: what was done, or None (nothing queued).

        Called from another process (`distproc stop`) on a backend built from the job's record.
        The fleet queues nothing itself: a `run --wait-for-hosts` reads the stop from the job store.
        """
        return None

    def queue_keys(self) -> tuple[str, ...]:
        """What names each host the job may use, for the job store's queue of jobs waiting for hosts.

        Jobs waiting for overlapping keys are served in order of arrival
        (run/hostwait.py). Empty: the backend queues its jobs itself.
        """
        return ()
