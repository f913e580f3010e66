"""What the parts of a running job share: the job, its options, its recorder, its hosts, its stop.

The runner makes one JobContext per job and hands it to the watcher and the
end of the job, which keep their own state beside it; none of them reaches
into another's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..backends.base import Backend
from ..spec import JobSpec
from ..store.db import Store
from .hoststate import HostState
from .options import RunOptions
from .outcome import FailureClass
from .recorder import HostFailed, JobStopping, Recorder


class JobStop:
    """Why the job stops (the first reason given wins), and whether a host has failed yet."""

    def __init__(self, recorder: Recorder, grace_seconds: float) -> None:
        self._recorder = recorder
        self._grace_seconds = grace_seconds
        self.reason: str | None = None
        self.event = asyncio.Event()
        #: A host failed: hosts still being prepared are not started.
        self.host_failed = False

    def request(self, reason: str) -> None:
        """Stop the job (Ctrl-C, `distproc stop`, a caller's own reason); safe to call twice."""
        if self.reason is None:
            self.reason = reason
            self._recorder(JobStopping(reason, self._grace_seconds))
        self.event.set()

    def stopped_by_host(self, reason: str) -> None:
        """A stop the host's agent made on its own (MaxRuntimeInSeconds, `distproc stop`): the job's reason."""
        if self.reason is None:
            self.reason = reason


@dataclass(frozen=True, slots=True)
class JobContext:
    job: JobSpec
    options: RunOptions
    store: Store
    recorder: Recorder
    stop: JobStop
    #: Where the hosts come from (backends/): gives back the hosts never prepared.
    backend: Backend
    #: Every host of the job, in algo order; filled in once the hosts are claimed.
    states: list[HostState] = field(default_factory=list)

    def host_failed(self, state: HostState, cls: FailureClass, error: str) -> None:
        self.recorder(HostFailed(state.fail(cls, error)))
