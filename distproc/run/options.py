"""How a job is run (RunOptions) and who hears of its progress (ProgressObserver).

Their own module so that every part of run/ can read them without importing
the runner: the runner imports its parts, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Protocol

from ..plan import DEFAULT_STOP_GRACE_SECONDS

# How long a host may stay unreachable while it runs before it counts as lost.
RECONNECT_WINDOW_SECONDS = 60.0
# How long the hosts keep a job running that no coordinator follows (a crashed or
# cut-off coordinator): long enough for `distproc attach`, short enough that a
# lost host's GPUs are not held all night.
ORPHAN_TIMEOUT_SECONDS = 900.0


class ProgressObserver(Protocol):
    """What a live display needs to hear; every call is cheap and never fails the job."""

    def add_host(self, algo: str, host: str) -> None: ...

    def step(self, algo: str, kind: str, **data: object) -> None: ...

    def staging(self, algo: str, staged_bytes: int) -> None: ...

    def finished(self, algo: str, status: str, exit_code: int | None) -> None: ...

    def waiting(self, message: str | None) -> None:
        """What the job waits for before it has hosts (busy hosts, a Slurm queue); None: no longer."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS
    fan_out: int = 64
    connect_timeout: float = 15.0
    console: IO[str] | None = None
    #: "host": each host uses its own AWS credential chain; "forward": the
    #: coordinator's credentials (STS AssumeRole of the job's RoleArn with
    #: assume_role) travel to the hosts inside the 0600 task document.
    aws_credentials: str = "host"
    assume_role: bool = False
    #: The S3 endpoint for listing, and for hosts that name none of their own.
    s3_endpoint_url: str | None = None
    #: Seconds between each host's metric samples (0: none).
    metrics_interval_seconds: float = 5.0
    #: Save the image here once and load it on each host whose daemon lacks it (no registry needed).
    ship_image: bool = False
    #: Told of each host's progress as it happens (the CLI's live view).
    observer: ProgressObserver | None = None
    #: A running host unreachable this long is lost: the job fails naming it.
    reconnect_window_seconds: float = RECONNECT_WINDOW_SECONDS
    #: Each host stops its container once no coordinator has followed it this long (0: never).
    orphan_timeout_seconds: float = ORPHAN_TIMEOUT_SECONDS
    #: Busy hosts: None fails the job at once ("too few free hosts"); else wait this many
    #: seconds (math.inf: indefinitely) for them to be given back, in order of arrival.
    wait_for_hosts_seconds: float | None = None

    @property
    def keepalive_interval(self) -> float:
        """SSH keepalives that notice a dead link within half the reconnect window."""
        return max(1.0, min(15.0, self.reconnect_window_seconds / 8))
