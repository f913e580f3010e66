"""The host task document and the layout of a job's folder on a host.

The coordinator writes one task document per host (JSON, mode 0600, since it
holds the job's Environment); the agent reads it back into a frozen value
(protocol.HostTask, which owns its shape).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Dict, List, Optional, Tuple

# The task's types live with the rest of the wire protocol; the agent's modules take them from here.
from .protocol import CONTAINER_ML_ROOT as CONTAINER_ML_ROOT
from .protocol import PIPE_STAGING_ROOT, ProtocolError, is_plain_name
from .protocol import TASK_VERSION as TASK_VERSION
from .protocol import DockerAccess as DockerAccess
from .protocol import HostTask as HostTask
from .protocol import OutputSpec as OutputSpec
from .protocol import PipeSpec as PipeSpec
from .protocol import container_name as container_name


class TaskError(Exception):
    """The task document is unusable, or a path in the job folder is refused; the message says which."""


def parse_task(doc: Any) -> HostTask:
    """The task document as a HostTask; TaskError naming the field (task.outputs[0].name) if it is unusable."""
    try:
        return HostTask.from_doc(doc)
    except ProtocolError as exc:
        raise TaskError(str(exc)) from exc


class JobDir:
    """Where one host's share of one job lives: <work_dir>/jobs/<job>/<algo>/."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._real_root: Optional[str] = None
        self._checked: Dict[str, str] = {}

    def path(self, name: str) -> str:
        """``root/name``, refused (TaskError) unless ``name`` is one plain file name that stays in the folder.

        The agent's copy of distproc.userfiles.inside (the agent imports nothing
        from distproc; names from the job, an OutputName, become file names here),
        but the folder's links are resolved once per JobDir and each name's once:
        with the folder resolved, a plain name can lead elsewhere only if it is a
        link itself, which one lstat tells. (realpath of the whole path at every
        name was hundreds of stats and most of a millisecond of Python per job on
        every host.)
        """
        found = self._checked.get(name)
        if found is None:
            if not is_plain_name(name):
                raise TaskError("{!r} is not a plain file name: refusing a path under {}".format(name, self.root))
            if self._real_root is None:
                self._real_root = os.path.realpath(self.root)
            base = self._real_root
            try:
                link = stat.S_ISLNK(os.lstat(os.path.join(base, name)).st_mode)
            except OSError:
                link = False  # not there (yet): nothing to follow
            if link and os.path.commonpath([base, os.path.realpath(os.path.join(base, name))]) != base:
                raise TaskError("{} leads outside {} through a link".format(os.path.join(self.root, name), self.root))
            found = self._checked[name] = os.path.join(self.root, name)
        return found

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
    def pipe_data(self) -> str:
        # file:// Pipe inputs' files, next to ml/ rather than in it: the container sees only the pipe.
        return self.path("pipe-data")

    @property
    def data(self) -> Tuple[str, ...]:
        """What cleanup removes: the staged data and outputs, the task (it holds the
        Environment and any forwarded credentials), the env file, a stop request.
        The record (events, log, result, metrics) stays."""
        return (self.ml, self.pipe_data, self.task, self.env_file, self.stop_request)

    def host_path(self, container_path: str) -> str:
        """The host path of a path under /opt/ml in the container (or of the agent's pipe staging, outside it)."""
        if container_path != CONTAINER_ML_ROOT and not container_path.startswith(CONTAINER_ML_ROOT + "/"):
            raise TaskError("{!r} is not under {}".format(container_path, CONTAINER_ML_ROOT))
        rel = container_path[len(CONTAINER_ML_ROOT) :].lstrip("/")
        if ".." in rel.split("/"):
            raise TaskError("{!r} climbs out of {}".format(container_path, CONTAINER_ML_ROOT))
        if container_path == PIPE_STAGING_ROOT or container_path.startswith(PIPE_STAGING_ROOT + "/"):
            rest = container_path[len(PIPE_STAGING_ROOT) :].lstrip("/")
            return os.path.join(self.pipe_data, rest) if rest else self.pipe_data
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
