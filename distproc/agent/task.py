"""The host task document and the layout of a job's folder on a host.

The coordinator writes one task document per host (JSON, mode 0600, since it
holds the job's Environment); the agent reads it back into a frozen value.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

TASK_VERSION = 1

# The container mounts the job folder's ml/ at /opt/ml; every LocalPath lives under it.
CONTAINER_ML_ROOT = "/opt/ml"


class TaskError(Exception):
    """The task document is unusable; the message says which field."""


# Frozen values as NamedTuples rather than dataclasses: importing dataclasses
# (and the inspect module it needs) was about a fifth of an agent start's imports.


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


class HostTask(NamedTuple):
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

    @property
    def container_name(self) -> str:
        return container_name(self.job_name, self.algo)


def container_name(job_name: str, algo: str) -> str:
    # Job names are [a-zA-Z0-9-], so this is always a valid Docker name.
    return "distproc-{}-{}".format(job_name, algo)


def _str_tuple(doc: Dict[str, Any], key: str, optional: bool = False) -> Optional[Tuple[str, ...]]:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskError("task field {} must be a list of strings".format(key))
    return tuple(value)


def _pairs(doc: Dict[str, Any], key: str) -> Tuple[Tuple[str, str], ...]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise TaskError("task field {} must be a list of pairs".format(key))
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            raise TaskError("task field {} must hold [string, string] pairs".format(key))
        out.append((item[0], item[1]))
    return tuple(out)


def parse_task(doc: Any) -> HostTask:
    if not isinstance(doc, dict):
        raise TaskError("task document must be a JSON object")
    if doc.get("version") != TASK_VERSION:
        raise TaskError(
            "task version {!r} is not {}: coordinator and agent disagree".format(doc.get("version"), TASK_VERSION)
        )
    for key in ("job_name", "algo", "image", "gpu_mode"):
        if not isinstance(doc.get(key), str):
            raise TaskError("task field {} must be a string".format(key))
    for key in ("resource_config", "processing_job_config", "docker"):
        if not isinstance(doc.get(key), dict):
            raise TaskError("task field {} must be an object".format(key))
    docker = doc["docker"]
    command = _str_tuple(docker, "command") or ("docker",)
    docker_host = docker.get("host")
    if docker_host is not None and not isinstance(docker_host, str):
        raise TaskError("task field docker.host must be a string or null")
    gpus = doc.get("gpus", 0)
    if not (gpus == "all" or (isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0)):
        raise TaskError("task field gpus must be a non-negative integer or 'all'")
    runtime = doc.get("max_runtime_seconds")
    if runtime is not None and (not isinstance(runtime, int) or runtime <= 0):
        raise TaskError("task field max_runtime_seconds must be a positive integer or null")
    grace = doc.get("stop_grace_seconds", 10)
    if not isinstance(grace, (int, float)) or grace < 0:
        raise TaskError("task field stop_grace_seconds must be a non-negative number")
    outputs = []
    for item in doc.get("outputs") or []:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) for k in ("name", "local_path", "uri", "upload_mode")
        ):
            raise TaskError("task outputs must be objects with name, local_path, uri, upload_mode")
        if not is_plain_name(item["name"]):  # it becomes a file name: uploaded-<name>.json
            raise TaskError("task output name {!r} is not a plain file name".format(item["name"]))
        outputs.append(OutputSpec(item["name"], item["local_path"], item["uri"], item["upload_mode"]))
    s3 = doc.get("s3")
    if s3 is not None and not isinstance(s3, dict):
        raise TaskError("task field s3 must be an object or null")
    deps_dir = doc.get("deps_dir")
    if deps_dir is not None and not isinstance(deps_dir, str):
        raise TaskError("task field deps_dir must be a string or null")
    interval = doc.get("metrics_interval_seconds", 5.0)
    if not isinstance(interval, (int, float)) or interval < 0:
        raise TaskError("task field metrics_interval_seconds must be a non-negative number")
    orphan_timeout = doc.get("orphan_timeout_seconds", 0)
    if not isinstance(orphan_timeout, (int, float)) or orphan_timeout < 0:
        raise TaskError("task field orphan_timeout_seconds must be a non-negative number")
    memory_limit = doc.get("memory_limit_bytes")
    if memory_limit is not None and (not isinstance(memory_limit, int) or memory_limit <= 0):
        raise TaskError("task field memory_limit_bytes must be a positive integer or null")
    local_paths = _str_tuple(doc, "local_paths") or ()
    for path in local_paths:
        if not path.startswith(CONTAINER_ML_ROOT + "/processing/") or ".." in path.split("/"):
            raise TaskError("task local path {!r} is outside /opt/ml/processing/".format(path))
    return HostTask(
        job_name=doc["job_name"],
        algo=doc["algo"],
        hosts=_str_tuple(doc, "hosts") or (),
        add_hosts=_pairs(doc, "add_hosts"),
        image=doc["image"],
        entrypoint=_str_tuple(doc, "entrypoint", optional=True),
        arguments=_str_tuple(doc, "arguments", optional=True),
        environment=_pairs(doc, "environment"),
        resource_config=doc["resource_config"],
        processing_job_config=doc["processing_job_config"],
        local_paths=local_paths,
        docker=DockerAccess(command=command, host=docker_host),
        gpus=gpus,
        gpu_mode=doc["gpu_mode"],
        max_runtime_seconds=runtime,
        stop_grace_seconds=float(grace),
        outputs=tuple(outputs),
        s3=s3,
        deps_dir=deps_dir,
        metrics_interval_seconds=float(interval),
        orphan_timeout_seconds=float(orphan_timeout),
        memory_limit_bytes=memory_limit,
    )


def is_plain_name(name: object) -> bool:
    """Whether ``name`` is one file name: not empty, not . or .., no / or NUL."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\x00" not in name


def inside(folder: str, name: str) -> str:
    """``folder/name``, refused (TaskError) unless ``name`` is one plain file name that stays in ``folder``.

    The agent's copy of distproc.userfiles (the agent imports nothing from
    distproc): names from the job (an OutputName) become file names here.
    """
    if not is_plain_name(name):
        raise TaskError("{!r} is not a plain file name: refusing a path under {}".format(name, folder))
    path = os.path.join(folder, name)
    base = os.path.realpath(folder)
    if os.path.commonpath([base, os.path.realpath(path)]) != base:
        raise TaskError("{} leads outside {} through a link".format(path, folder))
    return path


class JobDir:
    """Where one host's share of one job lives: <work_dir>/jobs/<job>/<algo>/."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def path(self, name: str) -> str:
        return inside(self.root, name)

    @property
    def task(self) -> str:
        return self.path("task.json")

    @property
    def env_file(self) -> str:
        return self.path("container.env")

    @property
    def events(self) -> str:
        return self.path("events.jsonl")

    @property
    def metrics(self) -> str:
        return self.path("metrics.jsonl")

    @property
    def log(self) -> str:
        return self.path("container.log")

    @property
    def result(self) -> str:
        return self.path("result.json")

    @property
    def pid(self) -> str:
        return self.path("agent.pid")

    @property
    def stop_request(self) -> str:
        return self.path("stop-request.json")

    @property
    def watched(self) -> str:
        # Touched while a coordinator follows the job: its mtime is the last sign of one.
        return self.path("watched")

    @property
    def agent_log(self) -> str:
        return self.path("agent.log")

    @property
    def ml(self) -> str:
        return self.path("ml")

    @property
    def data(self) -> Tuple[str, ...]:
        """What cleanup removes: the staged data and outputs, the task (it holds the
        Environment and any forwarded credentials), the env file, a stop request.
        The record (events, log, result, metrics) stays."""
        return (self.ml, self.task, self.env_file, self.stop_request)

    def host_path(self, container_path: str) -> str:
        """The host path of a path under /opt/ml in the container."""
        if container_path != CONTAINER_ML_ROOT and not container_path.startswith(CONTAINER_ML_ROOT + "/"):
            raise TaskError("{!r} is not under {}".format(container_path, CONTAINER_ML_ROOT))
        rel = container_path[len(CONTAINER_ML_ROOT) :].lstrip("/")
        if ".." in rel.split("/"):
            raise TaskError("{!r} climbs out of {}".format(container_path, CONTAINER_ML_ROOT))
        return os.path.join(self.ml, rel) if rel else self.ml

    def load_task(self) -> HostTask:
        try:
            with open(self.task, encoding="utf-8") as fh:
                return parse_task(json.load(fh))
        except OSError as exc:
            raise TaskError("cannot read {}: {}".format(self.task, exc)) from exc
        except ValueError as exc:
            raise TaskError("{} is not JSON: {}".format(self.task, exc)) from exc


def env_lines(environment: Tuple[Tuple[str, str], ...]) -> Tuple[List[str], List[str]]:
    """Split Environment into docker env-file lines and names passed by inheritance.

    Docker's env-file format is one KEY=VALUE per line, so a value holding a
    newline cannot go there; such values reach docker through its own process
    environment (``-e KEY`` with no value), which keeps them out of argv too.
    """
    file_lines: List[str] = []
    inherited: List[str] = []
    for key, value in environment:
        # Docker reads the file line by line and drops a trailing \r, so
        # values holding either character go by inheritance.
        if "\n" in value or "\r" in value:
            inherited.append(key)
        else:
            file_lines.append("{}={}".format(key, value))
    return file_lines, inherited
