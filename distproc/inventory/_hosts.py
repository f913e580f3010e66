"""From merged variables to a checked :class:`Host` (static inventories and EC2 ones alike).

A variable set to null counts as unset everywhere, so a child group can undo a
parent's value with ``ansible_user: null``.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from ..errors import InventoryError, Violation
from ..spec.instance_types import closest, processing_instance_types
from ._document import RawHost, Unsafe
from ._model import (
    DEFAULT_DOCKER_COMMAND,
    DEFAULT_PORT,
    DEFAULT_PYTHON,
    DEFAULT_WORK_DIR,
    Connection,
    GpuMode,
    Gpus,
    Host,
)
from ._names import KNOWN_DISTPROC_VARIABLES, unknown_variable

__all__ = ["KNOWN_DISTPROC_VARIABLES", "build_host", "check_host"]

_T = TypeVar("_T")

_CONNECTIONS: Mapping[str, Connection] = {
    "ssh": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "smart": "ssh",
    "local": "local",
    "ansible.builtin.ssh": "ssh",
    "ansible.builtin.paramiko_ssh": "ssh",
    "ansible.builtin.local": "local",
}
_DOCKER_HOST_SCHEMES = ("unix://", "tcp://", "ssh://", "fd://", "npipe://")
# Ansible's interpreter discovery; distproc does not discover, it falls back.
_DISCOVERY = frozenset({"auto", "auto_silent", "auto_legacy", "auto_legacy_silent"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def build_host(
    raw: RawHost,
    source: str,
    base_dir: Path,
    memo: dict[int, object],
    owner: str | None = None,
    found_types: Collection[str] = (),
) -> Host:
    """A checked Host from a host's merged variables; errors name ``source`` and ``owner`` (default ``host NAME``).

    ``found_types`` are instance types read from the machine itself (an EC2
    instance's own type), accepted as they are; any other must be one a job can ask for.
    """
    host, problems = check_host(raw, base_dir, memo, found_types)
    if host is None:
        where = owner or f"host {raw.name}"
        raise InventoryError.listing(source, [Violation(where, problem) for problem in problems])
    return host


def check_host(
    raw: RawHost, base_dir: Path, memo: dict[int, object], found_types: Collection[str] = ()
) -> tuple[Host | None, list[str]]:
    """A checked Host from a host's merged variables, or None and every problem they have."""
    v = _Variables(raw, base_dir, found_types)
    v.refuse_unknown()
    address = v.read(v.address, "ansible_host", "ansible_ssh_host", default=None) or raw.name
    connection: Connection = v.read(v.connection, default="ssh")
    private = v.read(v.address, "distproc_private_address", default=None)
    if private is None:
        # 'localhost' means the coordinator itself, but an --add-host entry needs an IP.
        local_self = connection == "local" and address.lower() in _LOOPBACK_NAMES
        private = "127.0.0.1" if local_self else address
    interpreter = v.read(v.text, "ansible_python_interpreter", default=None)
    if interpreter in _DISCOVERY:
        interpreter = None
    host = Host(
        name=raw.name,
        address=address,
        port=v.read(v.port, default=DEFAULT_PORT),
        user=v.read(v.text, "ansible_user", "ansible_ssh_user", default=None),
        key_file=v.read(v.local_path, "ansible_ssh_private_key_file", "ansible_private_key_file", default=None),
        connection=connection,
        instance_type=v.read(v.instance_types, default=()),
        gpus=v.read(v.gpus, default=0),
        gpu_mode=v.read(v.gpu_mode, default="gpus"),
        docker_command=v.read(v.docker_command, default=DEFAULT_DOCKER_COMMAND),
        docker_host=v.read(v.docker_host, default=None),
        work_dir=v.read(v.work_dir, default=DEFAULT_WORK_DIR),
        private_address=private,
        python=interpreter or v.read(v.text, "distproc_python", default=None) or DEFAULT_PYTHON,
        known_hosts=v.read(v.local_path, "distproc_known_hosts", default=None),
        s3_endpoint_url=v.read(v.text, "distproc_s3_endpoint_url", default=None),
        aws_region=v.read(v.text, "distproc_aws_region", default=None),
        memory_limit_bytes=v.read(v.memory_limit, default=None),
        groups=raw.groups,
        vars=_freeze_mapping(raw.vars, memo),
    )
    return (None, v.problems) if v.problems else (host, [])


class _Refused(Exception):
    """One variable's problem, said without its host (the caller knows which)."""


class _Variables:
    """Typed reads of one host's merged variables, each problem naming the variable."""

    def __init__(self, raw: RawHost, base_dir: Path, found_types: Collection[str]) -> None:
        self.raw = raw
        self.base_dir = base_dir
        self.found_types = found_types
        self.problems: list[str] = []

    def read(self, method: Callable[..., _T], *names: str, default: _T) -> _T:
        """``method(*names)``, or ``default`` with the problem noted: every variable is checked."""
        try:
            return method(*names)
        except _Refused as refused:
            self.problems.append(str(refused))
            return default

    def fail(self, name: str, rule: str, value: object) -> NoReturn:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise _Refused(f"{name} {rule} (got {shown})")

    def get(self, name: str, alias: str | None = None) -> tuple[str, Any]:
        """The variable's value (None when unset), and which name it came from."""
        value = self.raw.vars.get(name)
        if alias is not None:
            other = self.raw.vars.get(alias)
            if value is not None and other is not None and other != value:
                raise _Refused(f"{name} ({value!r}) and its older name {alias} ({other!r}) disagree; set only {name}")
            if value is None and other is not None:
                return alias, other
        return name, value

    def refuse_unknown(self) -> None:
        # A static file's names were checked where they are written; this catches
        # those an EC2 file's compose gives.
        for name in self.raw.vars:
            refusal = unknown_variable(name)
            if refusal is not None:
                self.problems.append(refusal)

    def text(self, name: str, alias: str | None = None) -> str | None:
        name, value = self.get(name, alias)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or "\x00" in value or "\n" in value:
            self.fail(name, "must be a non-empty single-line string", value)
        return str(value)

    def address(self, name: str, alias: str | None = None) -> str | None:
        value = self.text(name, alias)
        if value is not None and not _is_word(value):
            self.fail(name, "must be a host name or IP address, without spaces", value)
        return value

    def port(self) -> int:
        name, value = self.get("ansible_port", "ansible_ssh_port")
        if value is None:
            return DEFAULT_PORT
        number = _whole_number(value)
        if number is None or not 1 <= number <= 65535:
            self.fail(name, "must be a whole number from 1 to 65535", value)
        return number

    def connection(self) -> Connection:
        value = self.get("ansible_connection")[1]
        if value is None:
            return "ssh"
        if not isinstance(value, str) or value not in _CONNECTIONS:
            self.fail(
                "ansible_connection",
                "must be ssh or local (paramiko and smart count as ssh)",
                value,
            )
        return _CONNECTIONS[value]

    def local_path(self, name: str, alias: str | None = None) -> str | None:
        """A file on this machine: ~ expanded, relative to the inventory's folder."""
        value = self.text(name, alias)
        if value is None:
            return None
        expanded = os.path.expanduser(value)
        return os.path.normpath(os.path.join(self.base_dir, expanded))

    def instance_types(self) -> tuple[str, ...]:
        value = self.get("distproc_instance_type")[1]
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        rule = "must be an instance type like ml.m5.xlarge, or a list of them"
        if not isinstance(items, list) or not all(_is_word(item) for item in items):
            self.fail("distproc_instance_type", rule, value)
        known = processing_instance_types()
        for item in items:
            if item not in known and item not in self.found_types:
                # Refused here rather than when a job asks: the job would be told its
                # own, valid type has no hosts, and the hint would point at the typo.
                close = closest(item, known)
                hint = f"; did you mean {close}?" if close else ""
                self.problems.append(
                    f"distproc_instance_type: {item} is not an instance type a processing job can ask for{hint}"
                )
        return tuple(dict.fromkeys(str(item) for item in items))

    def gpus(self) -> Gpus:
        value = self.get("distproc_gpus")[1]
        if value is None:
            return 0
        if value == "all":
            return "all"
        number = _whole_number(value)
        if number is None:
            self.fail("distproc_gpus", 'must be a non-negative integer or "all"', value)
        return number

    def gpu_mode(self) -> GpuMode:
        value = self.get("distproc_gpu_mode")[1]
        if value is None:
            return "gpus"
        if value == "gpus":
            return "gpus"
        if value == "runtime":
            return "runtime"
        self.fail(
            "distproc_gpu_mode",
            'must be "gpus" (docker --gpus) or "runtime" (docker --runtime nvidia)',
            value,
        )

    def docker_command(self) -> tuple[str, ...]:
        value = self.get("distproc_docker_command")[1]
        if value is None:
            return DEFAULT_DOCKER_COMMAND
        rule = "must be a command: a list of words, or one string split like a shell line"
        words: object = value
        if isinstance(value, str):
            try:
                words = shlex.split(value)
            except ValueError as exc:
                self.fail("distproc_docker_command", f"cannot be split ({exc})", value)
        if not isinstance(words, list) or not words or not all(_is_text(w) for w in words):
            self.fail("distproc_docker_command", rule, value)
        return tuple(str(word) for word in words)

    def docker_host(self) -> str | None:
        value = self.text("distproc_docker_host")
        if value is not None and not value.startswith(_DOCKER_HOST_SCHEMES):
            schemes = ", ".join(_DOCKER_HOST_SCHEMES)
            self.fail("distproc_docker_host", f"must be a Docker address starting {schemes}", value)
        return value

    def memory_limit(self) -> int | None:
        value = self.get("distproc_memory_limit")[1]
        if value is None:
            return None
        limit = _byte_size(value)
        if limit is None or limit < MIN_MEMORY_LIMIT:
            self.fail(
                "distproc_memory_limit",
                "must be a size of at least 6m: a number of bytes, or a number with k, m or g (e.g. 512m, 16g)",
                value,
            )
        return limit

    def work_dir(self) -> str:
        value = self.text("distproc_work_dir")
        if value is None:
            return DEFAULT_WORK_DIR
        normal = posixpath.normpath(value)
        if not posixpath.isabs(value) or normal in ("/", "//"):
            self.fail("distproc_work_dir", "must be an absolute path below /", value)
        return normal


#: Docker refuses a container memory limit under 6 MiB.
MIN_MEMORY_LIMIT = 6 * 1024 * 1024
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _byte_size(value: object) -> int | None:
    """Bytes from an int or a Docker-style size (``512m``, ``16g``); None if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    unit = text[-1:] if text[-1:] in _UNITS and not text[-1:].isdigit() else ""
    number = text[: len(text) - len(unit)]
    if not (0 < len(number) <= 15 and number.isascii() and number.isdecimal()):
        return None
    return int(number) * _UNITS[unit]


def _whole_number(value: object) -> int | None:
    """A non-negative int from an int or a string of ASCII digits; None otherwise."""
    if isinstance(value, str) and 0 < len(value) <= 12 and value.isascii() and value.isdecimal():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value != "" and "\x00" not in value


def _is_word(value: object) -> bool:
    return isinstance(value, str) and value != "" and not any(c.isspace() for c in value)


def _freeze_mapping(value: Mapping[str, Any], memo: dict[int, object]) -> Mapping[str, object]:
    return MappingProxyType({key: _freeze(item, memo) for key, item in value.items()})


def _freeze(value: object, memo: dict[int, object]) -> object:
    """A read-only copy: mappings become MappingProxyType, lists tuples, sets frozensets."""
    if isinstance(value, Unsafe):
        return str(value)
    convert: Callable[[Any], object]
    if isinstance(value, dict):
        convert = lambda d: MappingProxyType({k: _freeze(i, memo) for k, i in d.items()})  # noqa: E731
    elif isinstance(value, list):
        convert = lambda items: tuple(_freeze(i, memo) for i in items)  # noqa: E731
    elif isinstance(value, set):
        convert = frozenset
    else:
        return value
    # Aliased values are shared objects; freezing each once keeps alias-heavy files linear.
    ident = id(value)
    if ident not in memo:
        memo[ident] = convert(value)
    return memo[ident]
