"""distproc's one error tree.

Every failure distproc reports on purpose is a :class:`DistprocError`; the CLI
turns each into one clear message and an exit code. Anything else reaching the
user is a bug.

    DistprocError
    ├── SpecError            the job document is invalid (carries every violation)
    ├── InventoryError       the inventory file is invalid, or too few hosts match
    ├── ConnectionError_     a host cannot be reached (SSH, host key, auth, timeout)
    │   └── HostKeyError     the host's key is unknown or does not match
    ├── RemoteCommandError   a command on a host failed (host, argv, status, stderr tail)
    ├── StagingError         data could not be moved to or from a host
    ├── AgentError           the host agent could not be installed, started or read
    ├── ImageError           the job's image could not be saved here to ship to the hosts
    ├── StoreError           the job store could not be read or written
    ├── UnsafePathError      a name would make a path outside its folder (a guard behind validation)
    ├── UnexpectedStatusError  a processor's wait() found the job Failed (also a ValueError, as the SDK's
    │                          UnexpectedStatusException, which is its other name)
    ├── JobExistsError       a job of that name is already in the store
    └── JobNotFoundError     no job of that name in the store
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DistprocError(Exception):
    """Root of every error distproc raises on purpose."""


@dataclass(frozen=True)
class Violation:
    """One broken rule in a document: where (a dotted field path) and what."""

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


#: How many problems a SpecError's message lists; the rest are counted ("and N more").
#: All of them stay in ``violations``; a message of 50,000 lines helps no one.
SHOWN_VIOLATIONS = 50


class SpecError(DistprocError):
    """The job document breaks one or more rules; all of them are in ``violations``.

    The message lists the first :data:`SHOWN_VIOLATIONS` and counts the rest.
    """

    def __init__(self, violations: Sequence[Violation], source: str = "job") -> None:
        self.violations = tuple(violations)
        self.source = source
        shown = [f"  - {v}" for v in self.violations[:SHOWN_VIOLATIONS]]
        hidden = len(self.violations) - len(shown)
        if hidden > 0:
            shown.append(f"  and {hidden} more")
        lines = "\n".join(shown)
        super().__init__(f"invalid {source} ({len(self.violations)} problem(s)):\n{lines}")


class InventoryError(DistprocError):
    """The inventory is malformed, or cannot supply the hosts a job asks for.

    ``problems`` holds each problem a file has, where (``host gpu1``, ``group
    rack_a``, ``line 7``) and what; it is empty for an error that is just its
    message (too few hosts, say). The message always starts with the file's
    name, and lists the first :data:`SHOWN_VIOLATIONS` problems.
    """

    def __init__(self, message: str, problems: Sequence[Violation] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message)

    @classmethod
    def listing(cls, source: str, problems: Sequence[Violation]) -> InventoryError:
        """One error for every problem in the file ``source``; one problem reads as a plain message."""
        if len(problems) == 1:
            return cls(f"{source}: {problems[0]}", problems)
        lines = "".join(f"\n  - {problem}" for problem in problems[:SHOWN_VIOLATIONS])
        more = len(problems) - SHOWN_VIOLATIONS
        if more > 0:
            lines += f"\n  and {more} more"
        return cls(f"{source}: {len(problems)} problems:{lines}", problems)


class ConnectionError_(DistprocError):
    """A host could not be reached."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"cannot connect to {host}: {reason}")


class HostKeyError(ConnectionError_):
    """The host's SSH key is not known, or does not match what is known."""


class RemoteCommandError(DistprocError):
    """A command run on a host exited non-zero or was killed."""

    def __init__(
        self,
        host: str,
        argv: Sequence[str],
        exit_status: int | None,
        stderr: str = "",
        signal: str | None = None,
    ) -> None:
        self.host = host
        self.argv = tuple(argv)
        self.exit_status = exit_status
        self.signal = signal
        self.stderr = stderr
        how = f"signal {signal}" if signal else f"exit status {exit_status}"
        tail = stderr.strip()[-800:]
        detail = f"\n{tail}" if tail else ""
        super().__init__(f"{host}: command {self.argv[0] if self.argv else '?'} failed ({how}){detail}")


class StagingError(DistprocError):
    """Data could not be moved between the coordinator, a host and storage.

    `client_error` says whose fault it is: the job's (a missing bucket or key,
    refused credentials, a hostile key: ClientError) or the platform's (an
    endpoint that cannot be reached: InternalServerError).
    """

    def __init__(self, message: str, client_error: bool = True) -> None:
        self.client_error = client_error
        super().__init__(message)


class AgentError(DistprocError):
    """The host agent could not be installed, started or understood."""


class ImageError(DistprocError):
    """`--ship-image`: the image could not be found or saved on this machine."""


class StoreError(DistprocError):
    """The job store could not be opened, read or written."""


class SageMakerError(DistprocError):
    """SageMaker's API (`distproc import`) refused or could not be reached.

    `client_error`: the caller's fault (no such job, refused credentials, no
    region), exit 2; else the service's or the network's, exit 4.
    """

    def __init__(self, message: str, client_error: bool = True) -> None:
        self.client_error = client_error
        super().__init__(message)


class UnsafePathError(DistprocError):
    """A name from a job would make a path outside the folder it belongs in.

    Validation refuses such names first; this is the guard where the path is
    built (distproc.userfiles), so a bypassed or missed check cannot write
    outside the job store.
    """


class JobExistsError(DistprocError):
    """A job of this name was already run: job names are unique, as in SageMaker."""

    def __init__(self, name: str, status: str) -> None:
        self.name = name
        super().__init__(
            f"a job named {name!r} already exists (status {status}); "
            "job names are unique: choose another ProcessingJobName"
        )


class JobNotFoundError(DistprocError):
    """No job of this name is in the store."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no job named {name!r} in the job store")


class BadNextTokenError(DistprocError):
    """A `list --next-token` that this job store did not issue, was altered, or belongs to another query."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"--next-token: {reason}; run the listing again without --next-token")


class UnexpectedStatusError(DistprocError, ValueError):
    """``wait()`` found the job Failed, where the SDK raises ``sagemaker.exceptions.UnexpectedStatusException``.

    A ValueError, as the SDK's is, with its attributes (``allowed_statuses``,
    ``actual_status``) and message, so code that catches either keeps working.
    """

    def __init__(self, job_name: str, actual_status: str, failure_reason: str | None) -> None:
        self.job_name = job_name
        self.actual_status = actual_status
        self.failure_reason = failure_reason
        self.allowed_statuses = ["Completed", "Stopped"]  # a list, as the SDK's _check_job_status passes
        reason = failure_reason or "(No reason provided)"
        super().__init__(f"Error for Processing job {job_name}: {actual_status}. Reason: {reason}")


#: The SDK's name for it (``from sagemaker.exceptions import UnexpectedStatusException``).
UnexpectedStatusException = UnexpectedStatusError
