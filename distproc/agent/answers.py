"""The wire protocol's other half: what the agent answers (protocol.py has what it is sent).

Each verb's one JSON answer (also the claiming agent's answer to a request),
the follow stream's lines and the run's result, as frozen values read by
`from_doc`, refused with ProtocolError naming the field. The coordinator reads
no agent answer but through these; the agent's launch path does not import
this module (see protocol.py). Standard library only, Python 3.9.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

from .protocol import (
    _MISSING,
    ProtocolError,
    _at,
    _bool,
    _get,
    _int,
    _kind,
    _object,
    _opt_int,
    _opt_number,
    _opt_object,
    _opt_str,
    _opt_strings,
    _str,
    _strings,
)

# -- answers: one JSON object, from a verb's stdout or the conversation -------------


class ErrorAnswer(NamedTuple):
    """What any verb answers when it fails ({"error": ...}); `client_error`: the job's fault, not ours."""

    error: str
    client_error: bool = False

    def to_doc(self) -> Dict[str, Any]:
        return {"error": self.error, "client_error": self.client_error}

    @classmethod
    def in_answer(cls, doc: Dict[str, Any]) -> Optional[ErrorAnswer]:
        """The error an answer carries, or None if it carries none."""
        if "error" not in doc:
            return None
        error = doc["error"]
        return cls("" if error is None else str(error), bool(doc.get("client_error")))


def _python_version(doc: Dict[str, Any], path: str) -> Tuple[int, ...]:
    """A python's version as the probe and `check` send it: sys.version_info[:3] as a list."""
    version = _get(doc, path, "python", _MISSING)
    if not (isinstance(version, list) and version and all(isinstance(v, int) for v in version)):
        raise ProtocolError(_at(path, "python"), "must be a list of integers, not {!r}".format(version))
    return tuple(version)


class ProbeAnswer(NamedTuple):
    """The install probe's answer (hosts/agentbundle.py PROBE_SCRIPT, run by whatever python the host has):
    its version, and whether this agent's folder is there already."""

    python: Tuple[int, ...]
    present: bool

    @classmethod
    def from_doc(cls, doc: Any, path: str = "probe") -> ProbeAnswer:
        doc = _object(doc, path)
        return cls(_python_version(doc, path), _bool(doc, path, "present", False))


class Lease(NamedTuple):
    """Who holds a host's lease (lease.json): the job, the inventory host that took it."""

    job: str
    holder: str

    @classmethod
    def from_doc(cls, doc: Any, path: str) -> Lease:
        # A lease file that could not be read reads as {}: held by an unknown job.
        doc = _object(doc, path)
        return cls(str(doc.get("job", "?")), str(doc.get("holder", "?")))


class ClaimAnswer(NamedTuple):
    """`claim` and `lease`: {"leased": true, ...} or {"busy": <lease>, "age_seconds": N}."""

    leased: bool
    busy: Optional[Lease] = None
    age_seconds: Optional[float] = None

    @classmethod
    def from_doc(cls, doc: Any, path: str = "claim") -> ClaimAnswer:
        doc = _object(doc, path)
        if doc.get("leased") is True:
            return cls(True)
        if "busy" not in doc:
            raise ProtocolError(path, "neither leased nor busy: {!r}".format(doc)[:300])
        return cls(False, Lease.from_doc(doc["busy"], _at(path, "busy")), _opt_number(doc, path, "age_seconds"))


class PrepareAnswer(NamedTuple):
    """`prepare`: the job folder, and the agent's pid when it was launched too."""

    jobdir: str
    pid: Optional[int] = None

    @classmethod
    def from_doc(cls, doc: Any, path: str = "prepare") -> PrepareAnswer:
        doc = _object(doc, path)
        return cls(_str(doc, path, "jobdir"), _opt_int(doc, path, "pid", minimum=1))


class LaunchAnswer(NamedTuple):
    """`launch`: the run's agent pid; `already_running` when a run was going and was not doubled."""

    pid: int
    already_running: bool = False

    @classmethod
    def from_doc(cls, doc: Any, path: str = "launch") -> LaunchAnswer:
        doc = _object(doc, path)
        return cls(_int(doc, path, "pid", minimum=1), _bool(doc, path, "already_running", False))


class Counted(NamedTuple):
    """`untar` and `stage-s3`: how many files and bytes arrived."""

    files: int
    bytes: int

    @classmethod
    def from_doc(cls, doc: Any, path: str = "answer") -> Counted:
        doc = _object(doc, path)
        return cls(_int(doc, path, "files"), _int(doc, path, "bytes"))


class StageProgress(NamedTuple):
    """A `stage-s3` progress line ({"progress": {...}}): objects and bytes so far, with the input's path."""

    input: str
    objects: int
    bytes: int

    def to_doc(self) -> Dict[str, Any]:
        return {"progress": {"input": self.input, "objects": self.objects, "bytes": self.bytes}}

    @classmethod
    def from_doc(cls, doc: Any, path: str = "progress") -> StageProgress:
        doc = _object(doc, path)
        return cls(_str(doc, path, "input", ""), _int(doc, path, "objects"), _int(doc, path, "bytes"))


class UploadAnswer(NamedTuple):
    """`upload-s3`: per S3 output, {"files": N, "bytes": N}."""

    outputs: Dict[str, Counted]

    @classmethod
    def from_doc(cls, doc: Any, path: str = "upload") -> UploadAnswer:
        doc = _object(doc, path)
        where = _at(path, "outputs")
        report = _object(doc.get("outputs"), where)
        return cls({name: Counted.from_doc(item, _at(where, name)) for name, item in report.items()})

    def report(self) -> Dict[str, Dict[str, int]]:
        """As the agent reported it: {output: {"files": N, "bytes": N}}."""
        return {name: dict(counted._asdict()) for name, counted in self.outputs.items()}


class ImageAnswer(NamedTuple):
    """`image-id` and `load-image`: the job image's ID on the host's daemon (None: it lacks it)."""

    id: Optional[str]

    @classmethod
    def from_doc(cls, doc: Any, path: str = "image") -> ImageAnswer:
        doc = _object(doc, path)
        return cls(_opt_str(doc, path, "id") or None)


class StopAnswer(NamedTuple):
    """`stop`: what became of the request (signalled, finished, not-started, no-agent, killed-without-agent)."""

    state: str

    @classmethod
    def from_doc(cls, doc: Any, path: str = "stop") -> StopAnswer:
        return cls(_str(_object(doc, path), path, "state"))


class StatusAnswer(NamedTuple):
    """`status`: whether the job folder exists, the run's agent pid and whether it lives, whether it finished."""

    exists: bool
    pid: Optional[int]
    alive: bool
    finished: bool

    @classmethod
    def from_doc(cls, doc: Any, path: str = "status") -> StatusAnswer:
        doc = _object(doc, path)
        return cls(
            _bool(doc, path, "exists"),
            _opt_int(doc, path, "pid"),
            _bool(doc, path, "alive"),
            doc.get("result") is not None,
        )


class Metrics(NamedTuple):
    """A host's metric samples as its cleanup returns them: the GPU's description and the samples."""

    gpu: Optional[Dict[str, Any]]
    samples: List[Any]

    @classmethod
    def from_doc(cls, doc: Any, path: str) -> Metrics:
        doc = _object(doc, path)
        samples = _get(doc, path, "samples", [])
        if not isinstance(samples, list):
            raise ProtocolError(_at(path, "samples"), "must be a list, not {}".format(_kind(samples)))
        return cls(_opt_object(doc, path, "gpu"), samples)


class CleanupAnswer(NamedTuple):
    """`cleanup`: whether the job's data is gone (else what could not be removed), and its metric samples."""

    removed: bool
    problems: Tuple[str, ...]
    metrics: Metrics

    @classmethod
    def from_doc(cls, doc: Any, path: str = "cleanup") -> CleanupAnswer:
        doc = _object(doc, path)
        return cls(
            _bool(doc, path, "removed"),
            _strings(doc, path, "problems", []),
            Metrics.from_doc(doc.get("metrics", {}), _at(path, "metrics")),
        )


class ReleaseAnswer(NamedTuple):
    released: bool

    @classmethod
    def from_doc(cls, doc: Any, path: str = "release") -> ReleaseAnswer:
        return cls(_bool(_object(doc, path), path, "released"))


class DockerCheck(NamedTuple):
    """`check`'s Docker: whether the daemon answers (else `error`), its version and runtimes."""

    ok: bool
    version: Optional[str] = None
    runtimes: Optional[Tuple[str, ...]] = None
    error: Optional[str] = None

    @classmethod
    def from_doc(cls, doc: Any, path: str) -> DockerCheck:
        doc = _object(doc, path)
        return cls(
            _bool(doc, path, "ok"),
            _opt_str(doc, path, "version"),
            _opt_strings(doc, path, "runtimes"),
            _opt_str(doc, path, "error"),
        )


class DiskCheck(NamedTuple):
    """`check`'s disk: the nearest existing folder of the work folder, its free and total bytes, else `error`."""

    path: str
    free_bytes: Optional[int] = None
    total_bytes: Optional[int] = None
    error: Optional[str] = None

    @classmethod
    def from_doc(cls, doc: Any, path: str) -> DiskCheck:
        doc = _object(doc, path)
        return cls(
            _str(doc, path, "path"),
            _opt_int(doc, path, "free_bytes"),
            _opt_int(doc, path, "total_bytes"),
            _opt_str(doc, path, "error"),
        )


class GpuCheck(NamedTuple):
    """`check`'s GPUs (agent/gpu.py's probe): whether any is usable (else `reason`), how many,
    the driver, and whether the NVIDIA Container Toolkit is installed."""

    available: bool
    #: How many (the wire's "count": a NamedTuple's own `count` is tuple.count).
    gpus: int
    reason: Optional[str] = None
    driver: Optional[str] = None
    container_toolkit: bool = False

    @classmethod
    def from_doc(cls, doc: Any, path: str) -> GpuCheck:
        doc = _object(doc, path)
        return cls(
            _bool(doc, path, "available"),
            _int(doc, path, "count", 0),
            _opt_str(doc, path, "reason"),
            _opt_str(doc, path, "driver"),
            _bool(doc, path, "container_toolkit", False),
        )


class CheckAnswer(NamedTuple):
    """`check` (agent/hostcheck.py): what the host offers a job. `gpu` is None when GPUs were not
    asked about; `time` is the host's clock when it answered, after `busy_seconds` of checking."""

    python: Tuple[int, ...]
    docker: DockerCheck
    disk: DiskCheck
    gpu: Optional[GpuCheck] = None
    time: Optional[float] = None
    busy_seconds: Optional[float] = None

    @classmethod
    def from_doc(cls, doc: Any, path: str = "check") -> CheckAnswer:
        doc = _object(doc, path)
        gpu = doc.get("gpu")
        return cls(
            _python_version(doc, path),
            DockerCheck.from_doc(_get(doc, path, "docker", _MISSING), _at(path, "docker")),
            DiskCheck.from_doc(_get(doc, path, "disk", _MISSING), _at(path, "disk")),
            None if gpu is None else GpuCheck.from_doc(gpu, _at(path, "gpu")),
            _opt_number(doc, path, "time"),
            _opt_number(doc, path, "busy_seconds"),
        )


# -- the follow stream: one JSON line each, ending with a result or lost line --------


class RunResult(NamedTuple):
    """result.json: how one host's run ended (agent/runner.py writes it)."""

    status: str
    exit_code: Optional[int]
    container_started: Optional[float]
    # When the container ended, else when the run's agent did.
    ended: Optional[float]
    message: Optional[str]
    message_valid: bool
    message_problem: Optional[str]
    error: Optional[str]
    error_class: Optional[str]
    stopped: bool
    stop_reason: Optional[str]
    orphaned: bool

    @classmethod
    def from_doc(cls, doc: Any, path: str = "result") -> RunResult:
        doc = _object(doc, path)
        exit_code = doc.get("exit_code")
        # A container's exit code may be negative (killed by a signal through the CLI).
        if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
            raise ProtocolError(_at(path, "exit_code"), "must be an integer or null, not {!r}".format(exit_code))
        status = doc.get("status")
        if status is not None and not isinstance(status, str):
            raise ProtocolError(_at(path, "status"), "must be a string, not {}".format(_kind(status)))
        return cls(
            status=status or "Failed",  # a result that names none is no success
            exit_code=exit_code,
            container_started=_opt_number(doc, path, "container_started"),
            ended=_opt_number(doc, path, "container_ended") or _opt_number(doc, path, "agent_ended"),
            message=_opt_str(doc, path, "message"),
            message_valid=_bool(doc, path, "message_valid", True),
            message_problem=_opt_str(doc, path, "message_problem"),
            error=_opt_str(doc, path, "error"),
            error_class=_opt_str(doc, path, "error_class"),
            stopped=bool(doc.get("stopped")),
            stop_reason=_opt_str(doc, path, "stop_reason"),
            orphaned=bool(doc.get("orphaned")),
        )


class Event(NamedTuple):
    """A line of the run's events.jsonl: its kind, when, and what else it says."""

    kind: str
    time: Optional[float]
    data: Dict[str, Any]

    @classmethod
    def from_doc(cls, doc: Any, path: str = "event") -> Event:
        doc = _object(doc, path)
        at = doc.get("time")
        return cls(
            str(doc.get("kind", "")),
            float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None,
            {k: v for k, v in doc.items() if k not in ("kind", "time")},
        )


class EventLine(NamedTuple):
    offset: int
    event: Event


class LogLine(NamedTuple):
    """Container output, decoded with surrogateescape: `raw` gives back the exact bytes."""

    offset: int
    data: str

    @property
    def raw(self) -> bytes:
        return self.data.encode("utf-8", "surrogateescape")


class ResultLine(NamedTuple):
    """The run ended: the stream's last line."""

    result: RunResult


class LostLine(NamedTuple):
    """The run's agent died before writing a result: the stream's last line."""

    pid: Optional[int]


class AliveLine(NamedTuple):
    """Nothing to say for a few seconds, but the follower is alive."""


FollowLine = Union[EventLine, LogLine, ResultLine, LostLine, AliveLine]


def parse_follow_line(doc: Any, path: str = "follow") -> Optional[FollowLine]:
    """One line of the follow stream; None for a stream this end does not know (a newer agent's)."""
    doc = _object(doc, path)
    stream = doc.get("stream")
    if stream == "event":
        return EventLine(_int(doc, path, "offset"), Event.from_doc(doc.get("event") or {}, _at(path, "event")))
    if stream == "log":
        return LogLine(_int(doc, path, "offset"), _str(doc, path, "data"))
    if stream == "result":
        return ResultLine(RunResult.from_doc(doc.get("result") or {}, _at(path, "result")))
    if stream == "lost":
        return LostLine(_opt_int(doc, path, "pid"))
    if stream == "alive":
        return AliveLine()
    return None
