"""The wire protocol between the coordinator and a host's agent, as typed values:
what the coordinator sends (the task, the claiming agent's requests) here, what
the agent answers in answers.py.

Both ends import these modules: the coordinator builds the task and sends its
requests through them and reads every answer through answers.py; the agent
reads the task and its requests here. Each message is a frozen value with
`from_doc` (a JSON-able dict in, the value out, or ProtocolError naming the
field) and, where it travels from the coordinator, `to_doc`. The JSON on the
wire is unchanged by them; they only give it one owner. The answers live
apart because the agent's launch path needs none of them: each class costs
its import about 0.1 ms, and every host pays the agent's start once a job.

It runs on the hosts' python (3.9 or newer) and on the agent's launch path,
so it is standard library only, typing from `typing`, and frozen values as
NamedTuples rather than dataclasses: importing dataclasses (and the inspect
module it needs) was about a fifth of an agent start's imports.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

TASK_VERSION = 1

# The container mounts the job folder's ml/ at /opt/ml; every LocalPath lives under it.
CONTAINER_ML_ROOT = "/opt/ml"


class ProtocolError(ValueError):
    """A message that does not have the protocol's shape; `path` names the field (task.outputs[0].name)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__("{}: {}".format(path, problem))
        self.path = path
        self.problem = problem


_MISSING: Any = object()


def _at(path: str, key: Union[str, int]) -> str:
    return "{}[{}]".format(path, key) if isinstance(key, int) else "{}.{}".format(path, key)


def _object(doc: Any, path: str) -> Dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProtocolError(path, "must be a JSON object, not {}".format(_kind(doc)))
    return doc


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _get(doc: Dict[str, Any], path: str, key: str, default: Any) -> Any:
    value = doc.get(key, default)
    if value is _MISSING:
        raise ProtocolError(_at(path, key), "is missing")
    return value


def _str(doc: Dict[str, Any], path: str, key: str, default: Any = _MISSING) -> str:
    value = _get(doc, path, key, default)
    if not isinstance(value, str):
        raise ProtocolError(_at(path, key), "must be a string, not {}".format(_kind(value)))
    return value


def _opt_str(doc: Dict[str, Any], path: str, key: str) -> Optional[str]:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(_at(path, key), "must be a string or null, not {}".format(_kind(value)))
    return value


def _bool(doc: Dict[str, Any], path: str, key: str, default: Any = _MISSING) -> bool:
    value = _get(doc, path, key, default)
    if not isinstance(value, bool):
        raise ProtocolError(_at(path, key), "must be true or false, not {}".format(_kind(value)))
    return value


def _int(doc: Dict[str, Any], path: str, key: str, default: Any = _MISSING, minimum: int = 0) -> int:
    value = _get(doc, path, key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProtocolError(_at(path, key), "must be an integer >= {}, not {!r}".format(minimum, value))
    return value


def _opt_int(doc: Dict[str, Any], path: str, key: str, minimum: int = 0) -> Optional[int]:
    value = doc.get(key)
    if value is None:
        return None
    return _int(doc, path, key, minimum=minimum)


def _number(doc: Dict[str, Any], path: str, key: str, default: Any = _MISSING) -> float:
    value = _get(doc, path, key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ProtocolError(_at(path, key), "must be a non-negative number, not {!r}".format(value))
    return float(value)


def _opt_number(doc: Dict[str, Any], path: str, key: str) -> Optional[float]:
    value = doc.get(key)
    return None if value is None else _number(doc, path, key)


def _opt_object(doc: Dict[str, Any], path: str, key: str) -> Optional[Dict[str, Any]]:
    value = doc.get(key)
    return None if value is None else _object(value, _at(path, key))


def _strings(doc: Dict[str, Any], path: str, key: str, default: Any = _MISSING) -> Tuple[str, ...]:
    value = _get(doc, path, key, default)
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(_at(path, key), "must be a list of strings, not {}".format(_kind(value)))
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ProtocolError(_at(_at(path, key), index), "must be a string, not {}".format(_kind(item)))
    return tuple(value)


def _opt_strings(doc: Dict[str, Any], path: str, key: str) -> Optional[Tuple[str, ...]]:
    return None if doc.get(key) is None else _strings(doc, path, key)


def _list(doc: Dict[str, Any], path: str, key: str) -> Tuple[Any, ...]:
    value = doc.get(key) or []
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(_at(path, key), "must be a list, not {}".format(_kind(value)))
    return tuple(value)


def _pairs(doc: Dict[str, Any], path: str, key: str) -> Tuple[Tuple[str, str], ...]:
    value = _get(doc, path, key, _MISSING)
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(_at(path, key), "must be a list of [string, string] pairs, not {}".format(_kind(value)))
    out = []
    for index, item in enumerate(value):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            raise ProtocolError(_at(_at(path, key), index), "must be a [string, string] pair, not {!r}".format(item))
        out.append((item[0], item[1]))
    return tuple(out)


def is_plain_name(name: object) -> bool:
    """Whether ``name`` is one file name: not empty, not . or .., no / or NUL."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\x00" not in name


def container_name(job_name: str, algo: str) -> str:
    # Job names are [a-zA-Z0-9-], so this is always a valid Docker name.
    return "distproc-{}-{}".format(job_name, algo)


# -- the task: what one host runs --------------------------------------------------

# Where a file:// Pipe input's files are unpacked (the `untar` verb's path): the agent's
# own, mapped outside the folder mounted at /opt/ml (task.JobDir.host_path), so the
# container sees only the named pipe. No LocalPath can name it: they are under /opt/ml/processing/.
PIPE_STAGING_ROOT = CONTAINER_ML_ROOT + "/.distproc-pipe"


class DockerAccess(NamedTuple):
    command: Tuple[str, ...]
    host: Optional[str]


class OutputSpec(NamedTuple):
    name: str
    local_path: str
    uri: str
    upload_mode: str

    @property
    def is_s3(self) -> bool:
        return self.uri[:8].lower().startswith(("s3://", "https://"))


class PipeSpec(NamedTuple):
    """A Pipe mode input on this host: its named pipe and the objects streamed into it, in order.

    Each object is (source, size): an S3 object as s3://bucket/key, or for a
    file:// input the file's path relative to `staged` (where the coordinator
    unpacked this host's files; None for S3).
    """

    name: str
    path: str
    gzip: bool
    staged: Optional[str]
    objects: Tuple[Tuple[str, int], ...]

    def to_doc(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "gzip": self.gzip,
            "staged": self.staged,
            "objects": [list(o) for o in self.objects],
        }

    @classmethod
    def from_doc(cls, doc: Any, path: str) -> PipeSpec:
        doc = _object(doc, path)
        fifo = _str(doc, path, "path")
        if not fifo.startswith(CONTAINER_ML_ROOT + "/processing/") or ".." in fifo.split("/"):
            raise ProtocolError(_at(path, "path"), "{!r} is outside /opt/ml/processing/".format(fifo))
        staged = _opt_str(doc, path, "staged")
        if staged is not None and (not staged.startswith(PIPE_STAGING_ROOT + "/") or ".." in staged.split("/")):
            raise ProtocolError(_at(path, "staged"), "{!r} is not under {}".format(staged, PIPE_STAGING_ROOT))
        objects = []
        for index, item in enumerate(_list(doc, path, "objects")):
            where = _at(_at(path, "objects"), index)
            ok = isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
            if not ok or not isinstance(item[1], int) or isinstance(item[1], bool) or item[1] < 0:
                raise ProtocolError(where, "must be a [source, size] pair, not {!r}".format(item))
            if staged is not None and (item[0].startswith("/") or ".." in item[0].split("/")):
                raise ProtocolError(where, "{!r} leaves its staging folder".format(item[0]))
            objects.append((item[0], item[1]))
        return cls(_str(doc, path, "name"), fifo, _bool(doc, path, "gzip"), staged, tuple(objects))


class HostTask(NamedTuple):
    """The task document: written by the coordinator (plan.host_task), 0600 on the host (it holds the Environment)."""

    job_name: str
    algo: str
    hosts: Tuple[str, ...]
    add_hosts: Tuple[Tuple[str, str], ...]
    image: str
    entrypoint: Optional[Tuple[str, ...]]
    arguments: Optional[Tuple[str, ...]]
    environment: Tuple[Tuple[str, str], ...]
    resource_config: Dict[str, Any]
    processing_job_config: Dict[str, Any]
    local_paths: Tuple[str, ...]
    docker: DockerAccess
    gpus: Union[int, str]
    gpu_mode: str
    max_runtime_seconds: Optional[int]
    stop_grace_seconds: float
    outputs: Tuple[OutputSpec, ...] = ()
    # S3 client settings for this host: region, endpoint_url, credentials (or None).
    s3: Optional[Dict[str, Any]] = None
    # Where the shipped boto3, pynvml and friends are unpacked on this host.
    deps_dir: Optional[str] = None
    # Seconds between metric samples; 0 turns sampling off.
    metrics_interval_seconds: float = 5.0
    # Stop the container once no coordinator has followed the job for this long; 0: never.
    orphan_timeout_seconds: float = 0.0
    # The container's memory limit in bytes (docker --memory); None: the host's memory.
    memory_limit_bytes: Optional[int] = None
    # Pipe mode inputs: named pipes fed while the container runs (agent/pipes.py).
    pipes: Tuple[PipeSpec, ...] = ()
    # Folders of a filesystem the nodes share, bound into the container instead of copied
    # (run/shared.py): (host folder, LocalPath, read-only).
    binds: Tuple[Tuple[str, str, bool], ...] = ()

    @property
    def container_name(self) -> str:
        return container_name(self.job_name, self.algo)

    def to_doc(self) -> Dict[str, Any]:
        return {
            "version": TASK_VERSION,
            "job_name": self.job_name,
            "algo": self.algo,
            "hosts": list(self.hosts),
            "add_hosts": [list(p) for p in self.add_hosts],
            "image": self.image,
            "entrypoint": None if self.entrypoint is None else list(self.entrypoint),
            "arguments": None if self.arguments is None else list(self.arguments),
            "environment": [list(p) for p in self.environment],
            "resource_config": self.resource_config,
            "processing_job_config": self.processing_job_config,
            "local_paths": list(self.local_paths),
            "docker": {"command": list(self.docker.command), "host": self.docker.host},
            "gpus": self.gpus,
            "gpu_mode": self.gpu_mode,
            "memory_limit_bytes": self.memory_limit_bytes,
            "max_runtime_seconds": self.max_runtime_seconds,
            "stop_grace_seconds": self.stop_grace_seconds,
            "outputs": [o._asdict() for o in self.outputs],
            "s3": self.s3,
            "deps_dir": self.deps_dir,
            "metrics_interval_seconds": self.metrics_interval_seconds,
            "orphan_timeout_seconds": self.orphan_timeout_seconds,
            "pipes": [p.to_doc() for p in self.pipes],
            "binds": [list(b) for b in self.binds],
        }

    @classmethod
    def from_doc(cls, doc: Any, path: str = "task") -> HostTask:
        doc = _object(doc, path)
        if doc.get("version") != TASK_VERSION:
            raise ProtocolError(
                _at(path, "version"),
                "{!r} is not {}: coordinator and agent disagree".format(doc.get("version"), TASK_VERSION),
            )
        docker = _object(doc.get("docker"), _at(path, "docker"))
        gpus = doc.get("gpus", 0)
        if not (gpus == "all" or (isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0)):
            raise ProtocolError(_at(path, "gpus"), "must be a non-negative integer or 'all', not {!r}".format(gpus))
        outputs = []
        for index, item in enumerate(doc.get("outputs") or []):
            where = _at(_at(path, "outputs"), index)
            item = _object(item, where)
            name = _str(item, where, "name")
            if not is_plain_name(name):  # it becomes a file name: uploaded-<name>.json
                raise ProtocolError(_at(where, "name"), "output name {!r} is not a plain file name".format(name))
            outputs.append(
                OutputSpec(
                    name, _str(item, where, "local_path"), _str(item, where, "uri"), _str(item, where, "upload_mode")
                )
            )
        local_paths = _strings(doc, path, "local_paths", [])
        for index, local in enumerate(local_paths):
            if not local.startswith(CONTAINER_ML_ROOT + "/processing/") or ".." in local.split("/"):
                raise ProtocolError(
                    _at(_at(path, "local_paths"), index), "{!r} is outside /opt/ml/processing/".format(local)
                )
        return cls(
            job_name=_str(doc, path, "job_name"),
            algo=_str(doc, path, "algo"),
            hosts=_strings(doc, path, "hosts", []),
            add_hosts=_pairs(doc, path, "add_hosts"),
            image=_str(doc, path, "image"),
            entrypoint=_opt_strings(doc, path, "entrypoint"),
            arguments=_opt_strings(doc, path, "arguments"),
            environment=_pairs(doc, path, "environment"),
            resource_config=_object(doc.get("resource_config"), _at(path, "resource_config")),
            processing_job_config=_object(doc.get("processing_job_config"), _at(path, "processing_job_config")),
            local_paths=local_paths,
            docker=DockerAccess(
                command=_strings(docker, _at(path, "docker"), "command") or ("docker",),
                host=_opt_str(docker, _at(path, "docker"), "host"),
            ),
            gpus=gpus,
            gpu_mode=_str(doc, path, "gpu_mode"),
            max_runtime_seconds=_opt_int(doc, path, "max_runtime_seconds", minimum=1),
            stop_grace_seconds=_number(doc, path, "stop_grace_seconds", 10),
            outputs=tuple(outputs),
            s3=_opt_object(doc, path, "s3"),
            deps_dir=_opt_str(doc, path, "deps_dir"),
            metrics_interval_seconds=_number(doc, path, "metrics_interval_seconds", 5.0),
            orphan_timeout_seconds=_number(doc, path, "orphan_timeout_seconds", 0),
            memory_limit_bytes=_opt_int(doc, path, "memory_limit_bytes", minimum=1),
            pipes=tuple(
                PipeSpec.from_doc(item, _at(_at(path, "pipes"), index))
                for index, item in enumerate(_list(doc, path, "pipes"))
            ),
            binds=_binds(doc, path),
        )


def _binds(doc: Dict[str, Any], path: str) -> Tuple[Tuple[str, str, bool], ...]:
    """The task's shared folders to bind: absolute, one --volume word each, into /opt/ml/processing/."""
    out = []
    for index, item in enumerate(_list(doc, path, "binds")):
        where = _at(_at(path, "binds"), index)
        ok = isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[2], bool)
        source, target = (item[0], item[1]) if ok else (None, None)
        if not (ok and isinstance(source, str) and isinstance(target, str)):
            raise ProtocolError(where, "must be a [source, target, read_only] triple, not {!r}".format(item))
        for value in (source, target):
            if not value.startswith("/") or ".." in value.split("/") or any(c in value for c in ":,\n\0"):
                raise ProtocolError(where, "{!r} is not an absolute path docker can bind".format(value))
        if not target.startswith(CONTAINER_ML_ROOT + "/processing/"):
            raise ProtocolError(where, "{!r} is outside /opt/ml/processing/".format(target))
        out.append((source, target, bool(item[2])))
    return tuple(out)


# -- the claiming agent's conversation: one request a line, one answer each ----------


class PrepareRequest(NamedTuple):
    """Write the task in its job folder; with `launch`, start it at once. The conversation's first request."""

    jobdir: str
    launch: bool
    task: HostTask

    def to_doc(self) -> Dict[str, Any]:
        return {"verb": "prepare", "jobdir": self.jobdir, "launch": self.launch, "task": self.task.to_doc()}


class LaunchRequest(NamedTuple):
    def to_doc(self) -> Dict[str, Any]:
        return {"verb": "launch"}


class FollowRequest(NamedTuple):
    """The follow stream from these offsets; empty lines meanwhile are the coordinator's pings."""

    events_offset: int = 0
    log_offset: int = 0

    def to_doc(self) -> Dict[str, Any]:
        return {"verb": "follow", "events_offset": self.events_offset, "log_offset": self.log_offset}


class CleanupRequest(NamedTuple):
    def to_doc(self) -> Dict[str, Any]:
        return {"verb": "cleanup"}


Request = Union[PrepareRequest, LaunchRequest, FollowRequest, CleanupRequest]


def parse_request(doc: Any, path: str = "request") -> Request:
    """One request of the claiming agent's conversation (a request without a verb is a prepare)."""
    doc = _object(doc, path)
    verb = _str(doc, path, "verb", "prepare")
    if verb == "prepare":
        return PrepareRequest(
            _str(doc, path, "jobdir"),
            _bool(doc, path, "launch", False),
            HostTask.from_doc(doc.get("task"), _at(path, "task")),
        )
    if verb == "launch":
        return LaunchRequest()
    if verb == "follow":
        return FollowRequest(_int(doc, path, "events_offset", 0), _int(doc, path, "log_offset", 0))
    if verb == "cleanup":
        return CleanupRequest()
    raise ProtocolError(_at(path, "verb"), "unknown request {!r}".format(verb))
