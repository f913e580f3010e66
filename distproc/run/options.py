"""How a job is run (RunOptions) and who hears of its progress (ProgressObserver).

Their own module so that every part of run/ can read them without importing
the runner: the runner imports its parts, never the other way round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

from ..errors import StoreError
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

    def to_record(self) -> dict[str, Any]:
        """What the job store keeps of these options, for `attach` to carry on with (RECORDED)."""
        return {name: getattr(self, name) for name in RECORDED}

    def with_recorded(self, record: Mapping[str, Any] | None) -> RunOptions:
        """These options with those a job's `run` recorded (to_record) in place of their defaults.

        A name this distproc does not know (a newer one's) is passed over; a known
        one of the wrong type is a damaged store, refused naming the option.
        """
        if not record:
            return self
        given: dict[str, Any] = {}
        for name, kinds in RECORDED.items():
            if name not in record:
                continue
            value = record[name]
            # bool is an int to isinstance: an int option given true/false is damaged too.
            wrong_kind = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
            if wrong_kind or (name == "aws_credentials" and value not in ("host", "forward")):
                raise StoreError(f"the job store's recorded run option {name} is damaged: {str(value)[:40]!r}")
            given[name] = float(value) if float in kinds and not isinstance(value, bool) else value
        return dataclasses.replace(self, **given)

    @property
    def keepalive_interval(self) -> float:
        """SSH keepalives that notice a dead link within half the reconnect window."""
        return max(1.0, min(15.0, self.reconnect_window_seconds / 8))


#: The options `run` records with a job and `attach` takes up again, with the types they may have.
#: Not kept: where output goes (console, observer: attach's own) and --wait-for-hosts (done by then).
RECORDED: Mapping[str, tuple[type, ...]] = {
    "stop_grace_seconds": (int, float),
    "fan_out": (int,),
    "connect_timeout": (int, float),
    "aws_credentials": (str,),
    "assume_role": (bool,),
    "s3_endpoint_url": (str, type(None)),
    "metrics_interval_seconds": (int, float),
    "ship_image": (bool,),
    "reconnect_window_seconds": (int, float),
    "orphan_timeout_seconds": (int, float),
}
