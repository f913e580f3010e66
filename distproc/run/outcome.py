"""How a job ended, from how each host ended: status, FailureReason, ExitMessage.

Pure policy, apart from all I/O, following SageMaker Processing:
Completed only if every container exits 0; the first host to fail names the
failure; a stopped job is Stopped unless something failed before the stop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

MAX_REASON = 1024
MAX_MESSAGE = 1024


class JobStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED)


class HostPhase(StrEnum):
    """A host's status, as the job store and `distproc describe` show it."""

    PENDING = "Pending"
    PREPARING = "Preparing"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES

    @property
    def launched(self) -> bool:
        """Whether a host in this phase had its container started (or may have: the end is known)."""
        return self not in (HostPhase.PENDING, HostPhase.PREPARING)

    @classmethod
    def of_result(cls, status: object) -> HostPhase:
        """The phase an agent's result names; anything else is a failure, never a crash here."""
        try:
            phase = cls(str(status or ""))
        except ValueError:
            return cls.FAILED
        return phase if phase.terminal else cls.FAILED


#: The phases a host ends in.
TERMINAL_PHASES = frozenset({HostPhase.COMPLETED, HostPhase.FAILED, HostPhase.STOPPED})


class FailureClass(StrEnum):
    ALGORITHM = "AlgorithmError"
    CLIENT = "ClientError"
    INTERNAL = "InternalServerError"


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """One host's end, as its agent (or the coordinator, for a lost host) saw it."""

    algo: str
    host: str
    status: HostPhase  # Completed | Failed | Stopped
    exit_code: int | None
    ended_at: float | None
    message: str | None = None
    message_valid: bool = True
    #: What is wrong with an invalid message ("is not valid UTF-8", "is a named pipe, ...").
    message_problem: str | None = None
    error: str | None = None
    error_class: str | None = None
    stopped_by_distproc: bool = False


@dataclass(frozen=True, slots=True)
class JobOutcome:
    status: JobStatus
    failure_reason: str | None
    exit_message: str | None
    stop_reason: str | None


def cut(text: str, limit: int = MAX_REASON) -> str:
    """`text` in at most `limit` characters: cut at a word boundary, ending in "...".

    Never in the middle of a word, so a cut never leaves a shorter, valid-looking
    address, path or command behind; only a word longer than a quarter of the
    limit (a dump, not an address) is cut inside, rather than dropped whole.
    """
    if len(text) <= limit:
        return text
    head = text[: limit - 3]
    if not text[limit - 3].isspace():
        space = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
        if space > 0 and len(head) - space <= limit // 4:
            head = head[:space]
    return head.rstrip(" \t\n;,:") + "..."


@dataclass(frozen=True, slots=True)
class HostCause:
    """Why one host could not serve the job, as one part of a FailureReason."""

    #: How the reason names the host: "algo-2" or its inventory name.
    who: str
    text: str
    #: The host's address, where `text` names it; causes that differ only in
    #: the host's name and address are the same cause.
    address: str | None = None


def _token(value: str) -> re.Pattern[str]:
    # Whole names only: "10.0.0.2" is not inside "10.0.0.23", "h1" not inside "h12".
    return re.compile(rf"(?<![\w.-]){re.escape(value)}(?![\w-]|\.\w)")


def _generic(cause: HostCause) -> str:
    """The cause with this host's own address and name replaced by placeholders."""
    text = cause.text
    for value, placeholder in ((cause.address, "<address>"), (cause.who, "<host>")):
        if value:
            text = _token(value).sub(placeholder, text)
    return text


def name_ranges(names: Sequence[str]) -> str:
    """Host names said briefly: "algo-1..3" for a run of consecutive numbers, else "algo-1, algo-3"."""
    out: list[str] = []
    k = 0
    while k < len(names):
        end = k
        numbered = re.fullmatch(r"(.*?)(\d+)", names[k])
        if numbered:
            prefix, first = numbered.group(1), int(numbered.group(2))
            while end + 1 < len(names) and names[end + 1] == f"{prefix}{first + end + 1 - k}":
                end += 1
            if end - k >= 2:
                out.append(f"{names[k]}..{first + end - k}")
                k = end + 1
                continue
        out.extend(names[k : end + 1])
        k = end + 1
    return ", ".join(out)


def say_once(causes: Sequence[HostCause]) -> str:
    """Each host's cause, identical causes said once for all their hosts, in first-seen order.

    Three hosts with the same unknown host key give one "h1..3: ... <address> ..."
    instead of three near-identical instructions that would crowd out the rest.
    """
    groups: dict[str, list[HostCause]] = {}
    for cause in causes:
        groups.setdefault(_generic(cause), []).append(cause)
    parts = []
    for generic, members in groups.items():
        if len(members) == 1:
            parts.append(f"{members[0].who}: {members[0].text}")
        else:
            parts.append(f"{name_ranges([m.who for m in members])}: {generic}")
    return "; ".join(parts)


def exit_message(hosts: Sequence[HostOutcome]) -> str | None:
    """Every host's message in algo order, concatenated and cut to 1024 characters."""
    ordered = sorted(hosts, key=lambda h: _algo_number(h.algo))
    text = "".join(h.message or "" for h in ordered if h.message_valid)
    return text[:MAX_MESSAGE] if text else None


def _algo_number(algo: str) -> int:
    try:
        return int(algo.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _host_failure(h: HostOutcome) -> tuple[FailureClass, str] | None:
    """Why this host failed the job, or None if it did not."""
    who = f"{h.algo} ({h.host})"
    if h.error and h.status != HostPhase.STOPPED:
        cls = FailureClass(h.error_class) if h.error_class in set(FailureClass) else FailureClass.INTERNAL
        return cls, f"{who}: {h.error}"
    if not h.message_valid:
        problem = h.message_problem or "is not valid UTF-8"
        return FailureClass.CLIENT, f"{who} wrote /opt/ml/output/message that {problem}"
    if h.status == HostPhase.FAILED or (h.status != HostPhase.STOPPED and h.exit_code not in (0, None)):
        detail = f": {h.message.strip()}" if h.message and h.message.strip() else ""
        return FailureClass.ALGORITHM, f"{who} exited with code {h.exit_code}{detail}"
    return None


def aggregate(hosts: Sequence[HostOutcome], stop_reason: str | None = None) -> JobOutcome:
    """The job's status and reasons from its hosts' outcomes.

    `stop_reason` is set when a stop was asked for (by `distproc stop`,
    Ctrl-C or MaxRuntimeInSeconds) rather than caused by a failing host.
    The first failure in time wins the FailureReason; hosts that distproc
    stopped because another failed are not failures themselves.
    """
    failures = []
    for h in hosts:
        found = _host_failure(h)
        if found is not None:
            failures.append((h.ended_at if h.ended_at is not None else float("inf"), _algo_number(h.algo), found))
    message = exit_message(hosts)
    if failures:
        failures.sort(key=lambda f: (f[0], f[1]))
        cls, text = failures[0][2]
        more = len(failures) - 1
        suffix = f" (and {more} more host(s) failed)" if more else ""
        return JobOutcome(JobStatus.FAILED, cut(f"{cls.value}: {text}{suffix}"), message, None)
    if stop_reason is not None or any(h.status == HostPhase.STOPPED for h in hosts):
        return JobOutcome(JobStatus.STOPPED, None, message, stop_reason or "stopped")
    return JobOutcome(JobStatus.COMPLETED, None, message, None)
