"""A real multi-host test cluster on one Linux machine.

Each "host" is a network namespace ``dp-hN`` plugged into the bridge ``dpbr0``
(198.18.0.1/24, RFC 2544 benchmarking range, no NAT, no routes out), with its
own sshd and its own containerd + dockerd. A further "local" containerd +
dockerd runs in the root namespace for ``ansible_connection: local`` hosts.
Test images are built without a registry (debootstrap or a static busybox
tree, then ``docker import``) and cached under ``/var/cache/distproc-tests``.

Used by the ``cluster`` fixture in tests/conftest.py, and by hand::

    sudo .venv/bin/python -m tests.cluster up      # build (or rebuild) and leave running
    sudo .venv/bin/python -m tests.cluster status
    sudo .venv/bin/python -m tests.cluster down    # stop everything (--purge: drop data too)

See docs/testing.md for the reasons behind each choice.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# --------------------------------------------------------------------------
# Constants

BRIDGE = "dpbr0"
BRIDGE_ADDRESS = "198.18.0.1"
NETWORK_PREFIX = "198.18.0."
PREFIX_LEN = 24
HOST_ADDRESS_OFFSET = 10  # hN gets 198.18.0.(10+N)
NETNS_PREFIX = "dp-"
NETNS_RE = re.compile(r"^dp-h[0-9]+$")
VETH_RE = re.compile(r"^dpv[0-9]+$")
SSH_PORT = 22
USER = "dproot"
IMAGE = "distproc-test:py"
BUSYBOX_IMAGE = "distproc-test:busybox"
LOCAL = "local"
LOCAL_PRIVATE_ADDRESS = "127.0.0.1"
DEFAULT_HOSTS = 3
MIN_HOSTS = 3
MAX_HOSTS = 240
DEFAULT_CLUSTER_DIR = Path("/var/lib/distproc-tests/cluster")
DEFAULT_RUN_DIR = Path("/run/dp")
DEFAULT_CACHE_DIR = Path("/var/cache/distproc-tests")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
CGROUP_PARENT = "distproc-tests"
CONTENT_LABEL = "org.distproc.test.content"
KEX = "curve25519-sha256,curve25519-sha256@libssh.org"
OVERLAY_DIR = Path(__file__).resolve().parent / "image" / "overlay"
# Bump when the way a rootfs or an image is made changes, to invalidate caches.
ROOTFS_RECIPE = 1
IMAGE_RECIPE = 1
PY_IMAGE_CHANGES = (
    'ENTRYPOINT ["/usr/local/bin/probe", "from-entrypoint"]',
    'CMD ["from-cmd"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
)
BUSYBOX_IMAGE_CHANGES = ('CMD ["/bin/sh"]',)
# Parts of a rootfs that a test image does not need (about 140 MB of 260 MB).
ROOTFS_STRIP = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "dev",
)
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Programs we start (or that they start); only these are ever killed by a path match.
OUR_PROGRAMS = frozenset({"dockerd", "containerd", "containerd-shim-runc-v2", "containerd-shim", "sshd", "runc"})

REQUIRED_TOOLS = (
    "ip",
    "nsenter",
    "sshd",
    "ssh",
    "ssh-keygen",
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker",
    "debootstrap",
    "busybox",
    "tar",
    "useradd",
    "usermod",
    "mount",
    "umount",
    "sysctl",
)
TOOL_PACKAGES = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "useradd": "passwd",
    "usermod": "passwd",
    "sysctl": "procps",
}

# Written into the cluster and run dirs; a non-empty dir without it is never wiped.
MARKER = ".distproc-test-cluster"

STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


class ClusterError(RuntimeError):
    """The test cluster could not be built, used or torn down; the message says why."""


# --------------------------------------------------------------------------
# Public API


@dataclass(frozen=True, slots=True)
class ClusterHost:
    """One emulated host: a network namespace with its own sshd and dockerd."""

    name: str
    netns: str
    address: str
    ssh_port: int
    docker_host: str
    work_dir: Path

    @property
    def private_address(self) -> str:
        """The address other hosts reach this one on (the same as the SSH address here)."""
        return self.address


@dataclass(frozen=True)
class Cluster:
    """A running test cluster. Build one with :func:`build` (or the ``cluster`` fixture)."""

    hosts: tuple[ClusterHost, ...]
    dir: Path
    user: str
    key_file: Path
    known_hosts: Path
    bridge_address: str
    local_docker_host: str
    local_work_dir: Path
    image: str = IMAGE
    busybox_image: str = BUSYBOX_IMAGE
    docker_binary: str = field(default="docker", repr=False)

    # -- lookup ------------------------------------------------------------

    def host(self, name: str) -> ClusterHost:
        """The host called ``name`` (``h1``, ``h2``...)."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in the test cluster ({', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def _resolve(self, host: ClusterHost | str) -> ClusterHost:
        return host if isinstance(host, ClusterHost) else self.host(host)

    def _docker_host_of(self, host: ClusterHost | str) -> str:
        if host == LOCAL:
            return self.local_docker_host
        return self._resolve(host).docker_host

    # -- inventory -----------------------------------------------------------

    def write_inventory(
        self,
        path: str | os.PathLike[str],
        *,
        instance_type: str = "ml.m5.xlarge",
        hosts: Iterable[ClusterHost | str] | None = None,
        extra_host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        local: bool = False,
        group_vars: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write an Ansible YAML inventory for (some of) the cluster and return its path.

        ``hosts`` picks hosts (objects or names; default all). ``extra_host_vars``
        maps a host name (``"local"`` for the local host) to variables added to,
        or overriding, that host's. ``group_vars`` go under ``all.vars``.
        ``local=True`` writes a single ``ansible_connection: local`` host named
        ``local`` that uses the local (root namespace) Docker daemon.
        """
        entries: dict[str, dict[str, Any]] = {}
        if local:
            if hosts is not None:
                raise ValueError("write_inventory: pass either local=True or hosts, not both")
            entries[LOCAL] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": "/usr/bin/python3",
                "distproc_instance_type": instance_type,
                "distproc_docker_host": self.local_docker_host,
                "distproc_work_dir": str(self.local_work_dir),
                "distproc_private_address": LOCAL_PRIVATE_ADDRESS,
            }
        else:
            chosen = self.hosts if hosts is None else tuple(self._resolve(h) for h in hosts)
            if not chosen:
                raise ValueError("write_inventory: no hosts chosen")
            ssh_args = " ".join(
                [
                    "-o IdentitiesOnly=yes",
                    f"-o UserKnownHostsFile={self.known_hosts}",
                    "-o GlobalKnownHostsFile=/dev/null",
                    "-o StrictHostKeyChecking=yes",
                ]
            )
            for h in chosen:
                entries[h.name] = {
                    "ansible_host": h.address,
                    "ansible_port": h.ssh_port,
                    "ansible_user": self.user,
                    "ansible_ssh_private_key_file": str(self.key_file),
                    "ansible_ssh_common_args": ssh_args,
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "distproc_known_hosts": str(self.known_hosts),
                    "distproc_instance_type": instance_type,
                    "distproc_docker_host": h.docker_host,
                    "distproc_work_dir": str(h.work_dir),
                    "distproc_private_address": h.private_address,
                }
        for name, extra in (extra_host_vars or {}).items():
            if name not in entries:
                raise ValueError(
                    f"write_inventory: extra_host_vars names {name!r}, "
                    f"which is not in this inventory ({', '.join(entries)})"
                )
            entries[name].update(extra)
        doc: dict[str, Any] = {"all": {"hosts": entries}}
        if group_vars:
            doc["all"]["vars"] = dict(group_vars)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        return out

    # -- commands -------------------------------------------------------------

    def docker(
        self,
        host: ClusterHost | str,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against ``host``'s daemon (``"local"``: the local daemon)."""
        argv = [self.docker_binary, "-H", self._docker_host_of(host), *args]
        return _run(argv, check=check, timeout=timeout, input=input, env=_docker_cli_env())

    def containers(self, host: ClusterHost | str, all: bool = True) -> list[str]:
        """Names of the containers on ``host``'s daemon (running ones only if ``all=False``)."""
        args = ["ps", "--format", "{{.Names}}", "--no-trunc"]
        if all:
            args.insert(1, "--all")
        out = self.docker(host, *args).stdout
        return [line for line in out.splitlines() if line]

    def run_in(
        self,
        host: ClusterHost | str,
        *argv: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host``'s network namespace (root mount namespace, as root)."""
        h = self._resolve(host)
        return _run(
            [_tool("nsenter"), f"--net={_netns_path(h.netns)}", "--", *argv],
            check=check,
            timeout=timeout,
            input=input,
        )

    def ssh_argv(self, host: ClusterHost | str, *command: str) -> list[str]:
        """An ``ssh`` argv that logs in to ``host`` with strict host-key checking."""
        h = self._resolve(host)
        return [
            _tool("ssh"),
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            str(self.key_file),
            "-p",
            str(h.ssh_port),
            "-l",
            self.user,
            h.address,
            *command,
        ]

    def ssh(
        self,
        host: ClusterHost | str,
        *command: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` over SSH (as the test login ``dproot``)."""
        return _run(self.ssh_argv(host, *command), check=check, timeout=timeout, input=input)


# --------------------------------------------------------------------------
# Configuration and layout


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster lives and how big it is."""

    n_hosts: int = DEFAULT_HOSTS
    cluster_dir: Path = DEFAULT_CLUSTER_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    mirror: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClusterConfig:
        env = os.environ if environ is None else environ
        raw = env.get("DISTPROC_TEST_HOSTS", "").strip()
        try:
            n = int(raw) if raw else DEFAULT_HOSTS
        except ValueError:
            raise ClusterError(f"DISTPROC_TEST_HOSTS={raw!r} is not a whole number") from None
        cfg = cls(
            n_hosts=n,
            cluster_dir=Path(env.get("DISTPROC_TEST_CLUSTER_DIR") or DEFAULT_CLUSTER_DIR),
            run_dir=Path(env.get("DISTPROC_TEST_RUN_DIR") or DEFAULT_RUN_DIR),
            cache_dir=Path(env.get("DISTPROC_TEST_CACHE_DIR") or DEFAULT_CACHE_DIR),
            mirror=env.get("DISTPROC_TEST_DEBIAN_MIRROR") or None,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not MIN_HOSTS <= self.n_hosts <= MAX_HOSTS:
            raise ClusterError(
                f"the test cluster needs {MIN_HOSTS}..{MAX_HOSTS} hosts (DISTPROC_TEST_HOSTS), not {self.n_hosts}"
            )
        for what, p in (
            ("cluster dir", self.cluster_dir),
            ("run dir", self.run_dir),
            ("cache dir", self.cache_dir),
        ):
            if not p.is_absolute() or len(p.parts) < 3 or ".." in p.parts:
                raise ClusterError(f"the {what} must be an absolute path at least two levels deep: {p}")
        # Docker and containerd put unix sockets under the run dir; sun_path is 108 bytes.
        if len(str(self.run_dir)) > 40:
            raise ClusterError(f"the run dir {self.run_dir} is too long for unix sockets")

    @property
    def lock_file(self) -> Path:
        return self.cluster_dir.with_name(self.cluster_dir.name + ".lock")

    @property
    def home(self) -> Path:
        return self.cluster_dir / "home"

    @property
    def key_file(self) -> Path:
        return self.cluster_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.cluster_dir / "known_hosts"

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(f"h{i}" for i in range(1, self.n_hosts + 1))

    def daemon(self, name: str) -> DaemonLayout:
        return DaemonLayout.of(self, name)

    def cluster(self) -> Cluster:
        hosts = tuple(
            ClusterHost(
                name=name,
                netns=NETNS_PREFIX + name,
                address=host_address(i),
                ssh_port=SSH_PORT,
                docker_host=f"unix://{self.daemon(name).docker_sock}",
                work_dir=self.cluster_dir / name / "work",
            )
            for i, name in enumerate(self.host_names, start=1)
        )
        return Cluster(
            hosts=hosts,
            dir=self.cluster_dir,
            user=USER,
            key_file=self.key_file,
            known_hosts=self.known_hosts,
            bridge_address=BRIDGE_ADDRESS,
            local_docker_host=f"unix://{self.daemon(LOCAL).docker_sock}",
            local_work_dir=self.cluster_dir / LOCAL / "work",
            docker_binary=_tool("docker") if shutil.which("docker") else "docker",
        )


def host_address(index: int) -> str:
    return f"{NETWORK_PREFIX}{HOST_ADDRESS_OFFSET + index}"


@dataclass(frozen=True)
class DaemonLayout:
    """Paths of one containerd + dockerd pair (a host's, or the local one)."""

    name: str
    netns: str | None
    state_dir: Path  # per run: config, pid files, logs (wiped at each build)
    data_dir: Path  # kept between runs: image store (docker/NAME)
    run_dir: Path  # short path for sockets and exec roots

    @classmethod
    def of(cls, cfg: ClusterConfig, name: str) -> DaemonLayout:
        return cls(
            name=name,
            netns=None if name == LOCAL else NETNS_PREFIX + name,
            state_dir=cfg.cluster_dir / name,
            data_dir=cfg.cluster_dir / "docker" / name,
            run_dir=cfg.run_dir / name,
        )

    docker_root = property(lambda self: self.data_dir / "dockerd")
    containerd_root = property(lambda self: self.data_dir / "containerd")
    exec_root = property(lambda self: self.run_dir / "exec")
    containerd_state = property(lambda self: self.run_dir / "containerd")
    containerd_sock = property(lambda self: self.run_dir / "containerd.sock")
    docker_sock = property(lambda self: self.run_dir / "docker.sock")
    dockerd_pid = property(lambda self: self.state_dir / "dockerd.pid")
    containerd_pid = property(lambda self: self.state_dir / "containerd.pid")
    containerd_config = property(lambda self: self.state_dir / "containerd.toml")
    dockerd_config = property(lambda self: self.state_dir / "daemon.json")
    dockerd_log = property(lambda self: self.state_dir / "dockerd.log")
    containerd_log = property(lambda self: self.state_dir / "containerd.log")
    cgroup_parent = property(lambda self: f"/{CGROUP_PARENT}/{self.name}")


# --------------------------------------------------------------------------
# Small helpers


def _env_path() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    for extra in SBIN_PATH.split(":"):
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(p for p in parts if p)


def _tool(name: str) -> str:
    found = shutil.which(name, path=_env_path())
    if not found:
        pkg = TOOL_PACKAGES.get(name)
        hint = f" (Debian package {pkg})" if pkg else ""
        raise ClusterError(f"required program {name!r} not found{hint}")
    return found


def _daemon_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DOCKER_", "CONTAINERD_")) and k not in {"NOTIFY_SOCKET", "LISTEN_FDS"}
    }
    env["PATH"] = _env_path()
    return env


def _docker_cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DOCKER_HOST", "DOCKER_CONTEXT"}}
    env["PATH"] = _env_path()
    return env


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60.0,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv, capture text output; with check, fail with the command's stderr."""
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"timed out after {timeout:g}s: {_fmt(argv)}") from e
    except FileNotFoundError as e:
        raise ClusterError(f"cannot run {argv[0]!r}: {e.strerror}") from e
    if check and cp.returncode != 0:
        raise ClusterError(
            f"command failed (exit {cp.returncode}): {_fmt(argv)}\n{(cp.stderr or cp.stdout).strip()[-4000:]}"
        )
    return cp


def _fmt(argv: Sequence[str]) -> str:
    return " ".join(argv)


def _log(msg: str) -> None:
    if os.environ.get("DISTPROC_TEST_CLUSTER_QUIET") != "1":
        print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path})"
    return "\n".join(lines[-n:])


def _wait_for(
    what: str,
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if predicate():
            return
        now = time.monotonic()
        if now >= deadline:
            detail = on_timeout() if on_timeout else ""
            raise ClusterError(f"timed out after {timeout:g}s waiting for {what}\n{detail}".rstrip())
        # Back off between polls (5 ms doubling up to ``interval``); the wait is
        # bounded by the deadline and ends as soon as the condition holds.
        time.sleep(max(min(delay, interval, deadline - now), 0.0))
        delay *= 2


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _proc_state(pid: int) -> str | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split(" ", 1)[0]


def _none_alive(pids: Iterable[int]) -> bool:
    return not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in {"Z", "X"}


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _protected_pids() -> set[int]:
    """This process and its ancestors: never signalled."""
    pids = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat_line[stat_line.rfind(")") + 2 :].split()[1])
    return pids


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# Children started by this process, so they can be reaped (no zombies, no warnings).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a long-running daemon in its own session, output appended to ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_daemon_env(),
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _netns_path(name: str) -> str:
    return f"/run/netns/{name}"


# --------------------------------------------------------------------------
# Preflight


def preflight(cfg: ClusterConfig) -> list[str]:
    """Reasons the cluster cannot be built here (empty when it can)."""
    problems: list[str] = []
    if not sys.platform.startswith("linux"):
        problems.append("the test cluster needs Linux (network namespaces)")
        return problems
    if os.geteuid() != 0:
        problems.append(
            "the test cluster needs root (network namespaces, sshd, dockerd): "
            "run `sudo .venv/bin/pytest` or use .ci/run"
        )
    for name in REQUIRED_TOOLS:
        try:
            _tool(name)
        except ClusterError as e:
            problems.append(str(e))
    if shutil.which("busybox", path=_env_path()):
        try:
            if not _is_static_elf(Path(_tool("busybox"))):
                problems.append("busybox is dynamically linked; install the busybox-static package")
        except OSError as e:
            problems.append(f"cannot read busybox: {e}")
    try:
        cfg.validate()
    except ClusterError as e:
        problems.append(str(e))
    return problems


def _is_static_elf(path: Path) -> bool:
    """True if the ELF file has no program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        endian = "<" if head[5] == 1 else ">"
        phoff = struct.unpack_from(endian + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


# --------------------------------------------------------------------------
# Locking


@contextlib.contextmanager
def cluster_lock(cfg: ClusterConfig, wait: float | None = None) -> Iterator[None]:
    """Hold the machine-wide lock of the cluster dir for as long as the cluster is in use.

    One test session per machine: if another holds the lock, wait for it up to
    ``wait`` seconds (default DISTPROC_TEST_LOCK_WAIT, else 600), then fail.
    """
    if wait is None:
        raw = os.environ.get("DISTPROC_TEST_LOCK_WAIT", "")
        wait = float(raw) if raw.strip() else 600.0
    cfg.lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(cfg.lock_file, os.O_RDWR | os.O_CREAT, 0o600)

    def acquired() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        if not acquired():
            _log(f"another session is using the test cluster ({cfg.lock_file}); waiting up to {wait:g}s")
            try:
                _wait_for("the test-cluster lock", acquired, timeout=wait, interval=0.5)
            except ClusterError:
                raise ClusterError(
                    f"another process has been using the test cluster for over {wait:g}s "
                    f"({cfg.lock_file} is locked); one test session per machine"
                ) from None
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Teardown (also the first step of every build)


def _our_netns() -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if NETNS_RE.match(n))


def _netns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(_netns_path(name))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pids_in_netns(names: Iterable[str]) -> list[int]:
    """Processes whose network namespace is one of ours (like `ip netns pids`)."""
    wanted = {ino for n in names if (ino := _netns_inode(n)) is not None}
    if not wanted:
        return []
    found = []
    for pid in _all_pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in wanted:
            found.append(pid)
    return found


def _pids_in_our_cgroups(names: Iterable[str] | None = None) -> list[int]:
    """Container processes our daemons (all, or those named) placed under the cgroup parent."""
    markers = [f":/{CGROUP_PARENT}/"] if names is None else [f":/{CGROUP_PARENT}/{n}/" for n in names]
    found = []
    for pid in _all_pids():
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if any(m in text for m in markers):
            found.append(pid)
    return found


def _pids_of_our_programs(prefixes: Sequence[str], programs: frozenset[str] = OUR_PROGRAMS) -> list[int]:
    """Daemons we start, recognised by program name and one of our paths in argv."""
    found = []
    for pid in _all_pids():
        argv = _cmdline(pid)
        if not argv:
            continue
        prog = os.path.basename(argv[0].split(":")[0].split()[0]) if argv[0] else ""
        comm = _comm(pid)
        if prog not in programs and comm not in programs:
            continue
        joined = " ".join(argv)
        if any(p in joined for p in prefixes):
            found.append(pid)
    return found


def _pid_from_file(path: Path, must_contain: str) -> int | None:
    """A live pid from a pid file, only if its command line names ``must_contain``."""
    pid = _read_pid(path)
    if pid is None or not _alive(pid):
        return None
    if must_contain not in " ".join(_cmdline(pid)):
        return None  # the pid was reused by something else
    return pid


def _known_daemons(cfg: ClusterConfig) -> list[DaemonLayout]:
    names: set[str] = set()
    for base in (cfg.cluster_dir, cfg.run_dir):
        with contextlib.suppress(OSError):
            for p in base.iterdir():
                if p.is_dir() and (re.fullmatch(r"h[0-9]+", p.name) or p.name == LOCAL):
                    names.add(p.name)
    return [cfg.daemon(n) for n in sorted(names)]


def _mounts_under(prefixes: Sequence[Path]) -> list[str]:
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        for pref in prefixes:
            p = str(pref)
            if mp == p or mp.startswith(p + "/"):
                found.append(mp)
                break
    # Deepest first, each once.
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


def _unmount_all(prefixes: Sequence[Path]) -> None:
    umount = _tool("umount")
    for _ in range(5):
        mounts = _mounts_under(prefixes)
        if not mounts:
            return
        for mp in mounts:
            cp = _run([umount, mp], check=False, timeout=30)
            if cp.returncode != 0:
                _run([umount, "-l", mp], check=False, timeout=30)
    left = _mounts_under(prefixes)
    if left:
        raise ClusterError("could not unmount: " + ", ".join(left[:10]))


def _stop_pids(pids: Sequence[int], *, timeout: float, what: str) -> None:
    """SIGTERM, wait for exit, then SIGKILL whatever is left."""
    pids = [p for p in pids if p not in _protected_pids()]
    if not pids:
        return
    _signal(pids, signal.SIGTERM)
    try:
        _wait_for(what, lambda: not any(_alive(p) for p in pids), timeout=timeout)
    except ClusterError:
        _signal([p for p in pids if _alive(p)], signal.SIGKILL)
        _wait_for(
            f"{what} after SIGKILL",
            lambda: not any(_alive(p) for p in pids),
            timeout=15,
        )
    _reap()


def _kill_everything(cfg: ClusterConfig, netns: Sequence[str], daemons: Sequence[DaemonLayout] | None = None) -> None:
    """SIGKILL every process left in our namespaces, cgroups, or running our daemons.

    With ``daemons``, only the Docker side (containerd, dockerd, shims, containers)
    of those daemons.
    """
    protected = _protected_pids()
    if daemons is None:
        prefixes = [f"{cfg.run_dir}/", f"{cfg.cluster_dir}/"]
        programs = OUR_PROGRAMS
        cgroup_names: list[str] | None = None
    else:
        prefixes = [p for d in daemons for p in (f"{d.run_dir}/", f"{d.state_dir}/")]
        programs = OUR_PROGRAMS - {"sshd"}
        cgroup_names = [d.name for d in daemons]

    def leftovers() -> list[int]:
        pids = set(_pids_in_netns(netns)) | set(_pids_in_our_cgroups(cgroup_names))
        pids |= set(_pids_of_our_programs(prefixes, programs))
        return sorted(p for p in pids if p not in protected and _alive(p))

    for _ in range(10):
        pids = leftovers()
        if not pids:
            break
        _signal(pids, signal.SIGKILL)
        with contextlib.suppress(ClusterError):
            _wait_for("processes to die", functools.partial(_none_alive, pids), timeout=10)
    _reap()
    pids = leftovers()
    if pids:
        desc = ", ".join(f"{p} ({_comm(p)})" for p in pids[:10])
        raise ClusterError(f"processes of the test cluster survive SIGKILL: {desc}")


def _remove_cgroups() -> None:
    roots = [Path("/sys/fs/cgroup") / CGROUP_PARENT]
    with contextlib.suppress(OSError):
        roots += [c / CGROUP_PARENT for c in Path("/sys/fs/cgroup").iterdir() if c.is_dir()]
    for root in roots:
        if not root.is_dir() or root.is_symlink():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _daemon_pids(d: DaemonLayout) -> tuple[int | None, int | None]:
    """Live (dockerd, containerd) pids of one daemon, from its pid files."""
    return (
        _pid_from_file(d.dockerd_pid, str(d.dockerd_pid)),
        _pid_from_file(d.containerd_pid, str(d.containerd_config)),
    )


def _remove_containers(layouts: Sequence[DaemonLayout]) -> None:
    """Ask each healthy dockerd to remove its containers (fast, and lets dockerd clean up)."""
    docker = shutil.which("docker", path=_env_path())
    if not docker:
        return

    def one(d: DaemonLayout) -> None:
        host = f"unix://{d.docker_sock}"
        cp = _run([docker, "-H", host, "ps", "-aq"], check=False, timeout=20, env=_docker_cli_env())
        ids = cp.stdout.split()
        if ids and cp.returncode == 0:
            _run(
                [docker, "-H", host, "rm", "-f", "-v", *ids],
                check=False,
                timeout=20,
                env=_docker_cli_env(),
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, layouts))


def _stop_daemons(layouts: Sequence[DaemonLayout], *, sshd: bool) -> None:
    """Stop the daemons known by pid file: politely where they are healthy, else SIGKILL.

    Healthy daemons (dockerd and its containerd both up and answering) first
    remove their containers; dockerd (and sshd) get SIGTERM, then containerd.
    A dockerd whose containerd is gone would hang on shutdown: it is killed.
    """
    healthy: list[DaemonLayout] = []
    doomed: list[int] = []
    first: list[int] = []
    second: list[int] = []
    for d in layouts:
        dockerd, containerd = _daemon_pids(d)
        if dockerd is not None and containerd is not None and _docker_ping(d.docker_sock, 2.0):
            healthy.append(d)
            first.append(dockerd)
        elif dockerd is not None:
            doomed.append(dockerd)
        if containerd is not None:
            second.append(containerd)
        if sshd:
            pid = _pid_from_file(d.state_dir / "sshd.pid", str(d.state_dir / "sshd_config"))
            if pid is not None:
                first.append(pid)
    _signal(doomed, signal.SIGKILL)
    _remove_containers(healthy)
    _stop_pids(first, timeout=STOP_TIMEOUT, what="dockerd and sshd to stop")
    _stop_pids(second, timeout=STOP_TIMEOUT, what="containerd to stop")


def _check_ours(d: Path) -> None:
    """Refuse to work in (and later wipe) a non-empty directory we did not make."""
    try:
        entries = [p.name for p in d.iterdir()]
    except FileNotFoundError:
        return
    if entries and MARKER not in entries:
        raise ClusterError(
            f"{d} is not empty and has no {MARKER} file: not a test-cluster directory, "
            "refusing to use (and wipe) it; pick another DISTPROC_TEST_* directory"
        )


def _mark_ours(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text("made by tests/cluster.py; wiped and rebuilt by every test session\n")


def teardown(cfg: ClusterConfig, *, purge: bool = False) -> None:
    """Stop and remove everything the test cluster made on this machine.

    Copes with any leftover of an earlier, crashed run. Keeps the Docker data
    dirs (image store) and per-host logs unless ``purge``.
    """
    _check_ours(cfg.cluster_dir)
    _check_ours(cfg.run_dir)
    layouts = _known_daemons(cfg)
    netns = _our_netns()
    _stop_daemons(layouts, sshd=True)

    # Whatever is left (shims, containers, SSH sessions, detached agents): SIGKILL.
    _kill_everything(cfg, netns)
    _unmount_all([cfg.run_dir, cfg.cluster_dir])

    ip = _tool("ip")
    links = _run([ip, "-o", "link", "show"], check=False).stdout
    for m in re.finditer(r"^\d+:\s+([^:@\s]+)", links, re.M):
        if VETH_RE.match(m.group(1)):
            _run([ip, "link", "del", m.group(1)], check=False)
    for n in netns:
        _run([ip, "netns", "del", n], check=False)
    if re.search(rf"^\d+:\s+{BRIDGE}[:@]", links, re.M):
        _run([ip, "link", "del", BRIDGE], check=False)
    left = _our_netns()
    if left:
        raise ClusterError(f"could not delete network namespaces: {', '.join(left)}")

    _remove_cgroups()
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    if purge:
        shutil.rmtree(cfg.cluster_dir, ignore_errors=True)
    _reap()


# --------------------------------------------------------------------------
# Network


def _write_sysctl(path: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).write_text(value)


def _setup_network(cfg: ClusterConfig) -> None:
    ip = _tool("ip")
    nsenter = _tool("nsenter")

    def run(*args: str) -> None:
        _run([ip, *args])

    run("link", "add", BRIDGE, "type", "bridge")
    _write_sysctl(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6", "1")
    run("addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LEN}", "dev", BRIDGE)
    run("link", "set", BRIDGE, "up")
    # With br_netfilter loaded, bridged frames go through iptables FORWARD, whose
    # policy docker.io's own daemon sets to DROP: let bridged frames bypass iptables.
    for fam in ("iptables", "ip6tables", "arptables"):
        p = Path(f"/proc/sys/net/bridge/bridge-nf-call-{fam}")
        if p.exists() and p.read_text().strip() != "0":
            p.write_text("0")

    # The kernel's ARP table is one table for all namespaces, capped by the root
    # namespace's gc_thresh3 (1024 by default). A full mesh of N hosts needs about
    # N*N entries (each side of each pair); 64 hosts overflow it ("neighbor table
    # overflow!"), and new connections time out. Raise the limits, never lower them.
    need = 2 * (cfg.n_hosts + 2) ** 2
    for knob, value in (("gc_thresh1", need // 4), ("gc_thresh2", need // 2), ("gc_thresh3", need)):
        p = Path("/proc/sys/net/ipv4/neigh/default") / knob
        with contextlib.suppress(OSError, ValueError):
            if int(p.read_text()) < value:
                p.write_text(str(value))

    for i, name in enumerate(cfg.host_names, start=1):
        ns = NETNS_PREFIX + name
        veth = f"dpv{i}"
        run("netns", "add", ns)
        _run(
            [
                nsenter,
                f"--net={_netns_path(ns)}",
                "--",
                _tool("sysctl"),
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            check=False,
        )
        run("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6", "1")
        run("link", "set", veth, "master", BRIDGE)
        run("link", "set", veth, "up")
        run("-n", ns, "link", "set", "lo", "up")
        run("-n", ns, "addr", "add", f"{host_address(i)}/{PREFIX_LEN}", "dev", "eth0")
        run("-n", ns, "link", "set", "eth0", "up")


# --------------------------------------------------------------------------
# SSH


def _ensure_user(cfg: ClusterConfig) -> None:
    """The test login: uid 0, /bin/sh, home in the cluster dir, no password (but not locked)."""
    home = str(cfg.home)
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        _run(
            [
                _tool("useradd"),
                "-o",
                "-u",
                "0",
                "-g",
                "0",
                "-M",
                "-d",
                home,
                "-s",
                "/bin/sh",
                "-p",
                "*",
                "-c",
                "distproc test login",
                USER,
            ]
        )
        return
    if entry.pw_uid != 0 or entry.pw_gid != 0 or entry.pw_dir != home or entry.pw_shell != "/bin/sh":
        _run(
            [
                _tool("usermod"),
                "-o",
                "-u",
                "0",
                "-g",
                "0",
                "-d",
                home,
                "-s",
                "/bin/sh",
                USER,
            ]
        )
    # A "!" (locked) password makes sshd refuse even key logins when UsePAM is off.
    _run([_tool("usermod"), "-p", "*", USER])


def _keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair at ``path`` (replacing any) and return the public key."""
    pub = Path(str(path) + ".pub")
    for p in (path, pub):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return pub.read_text().strip()


def _sshd_config(cfg: ClusterConfig, name: str, address: str) -> str:
    d = cfg.cluster_dir / name
    return "\n".join(
        [
            "# distproc test cluster: sshd of one emulated host",
            f"ListenAddress {address}:{SSH_PORT}",
            f"HostKey {d / 'ssh_host_ed25519_key'}",
            f"PidFile {d / 'sshd.pid'}",
            f"KexAlgorithms {KEX}",
            "HostKeyAlgorithms ssh-ed25519",
            f"AllowUsers {USER}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            f"AuthorizedKeysFile {cfg.home / '.ssh' / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "PermitUserEnvironment no",
            "MaxStartups 256:30:512",
            "MaxSessions 256",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _setup_ssh(cfg: ClusterConfig) -> None:
    _ensure_user(cfg)
    ssh_dir = cfg.home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.home, 0o700)
    os.chmod(ssh_dir, 0o700)
    client_pub = _keygen(cfg.key_file, "distproc-tests-client")
    (ssh_dir / "authorized_keys").write_text(client_pub + "\n")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # sshd's privilege-separation directory (normally made by the systemd unit).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    known: list[str] = []
    for i, name in enumerate(cfg.host_names, start=1):
        d = cfg.cluster_dir / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "work").mkdir(exist_ok=True)
        pub = _keygen(d / "ssh_host_ed25519_key", f"distproc-tests-{name}")
        keytype, key = pub.split()[:2]
        known.append(f"{host_address(i)} {keytype} {key}")
        (d / "sshd_config").write_text(_sshd_config(cfg, name, host_address(i)))
    cfg.known_hosts.write_text("\n".join(known) + "\n")

    ip = _tool("ip")
    sshd = _tool("sshd")
    for name in cfg.host_names:
        d = cfg.cluster_dir / name
        # `ip netns exec` also remounts /sys for the namespace, so SSH sessions see
        # their own interfaces under /sys/class/net, as on a real host.
        _run(
            [
                ip,
                "netns",
                "exec",
                NETNS_PREFIX + name,
                sshd,
                "-f",
                str(d / "sshd_config"),
                "-E",
                str(d / "sshd.log"),
            ],
            timeout=30,
        )


def _ssh_banner(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _wait_ssh(cfg: ClusterConfig) -> None:
    pending = {name: host_address(i) for i, name in enumerate(cfg.host_names, start=1)}

    def ready() -> bool:
        for name, addr in list(pending.items()):
            if _ssh_banner(addr, SSH_PORT):
                del pending[name]
        return not pending

    _wait_for(
        "sshd of every host to answer",
        ready,
        timeout=30,
        on_timeout=lambda: "\n".join(f"{n}: {_tail(cfg.cluster_dir / n / 'sshd.log', 10)}" for n in pending),
    )


# --------------------------------------------------------------------------
# Docker daemons


def _containerd_config(d: DaemonLayout) -> str:
    return "\n".join(
        [
            "# distproc test cluster: containerd of one emulated host",
            "version = 2",
            f'root = "{d.containerd_root}"',
            f'state = "{d.containerd_state}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "",
            "[grpc]",
            f'  address = "{d.containerd_sock}"',
            "",
            "[debug]",
            '  address = ""',
            "",
            "[metrics]",
            '  address = ""',
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{d.containerd_root}/opt"',
            "",
        ]
    )


def _in_netns(d: DaemonLayout, argv: list[str]) -> list[str]:
    if d.netns is None:
        return argv
    # nsenter, not `ip netns exec`: the latter remounts /sys, and dockerd then
    # cannot find the devices cgroup.
    return [_tool("nsenter"), f"--net={_netns_path(d.netns)}", "--", *argv]


def _unix_connects(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(path))
        return True
    except OSError:
        return False


def _docker_ping(sock: Path, timeout: float = 1.0) -> bool:
    """GET /_ping on a Docker socket: cheaper than `docker version` in a poll loop."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]
    except OSError:
        return False


class _DaemonStart:
    """Start containerd and then dockerd for each layout, concurrently."""

    def __init__(self, layouts: Sequence[DaemonLayout]) -> None:
        self.layouts = list(layouts)
        self.containerd: dict[str, subprocess.Popen[bytes]] = {}
        self.dockerd: dict[str, subprocess.Popen[bytes]] = {}

    def _prepare(self, d: DaemonLayout) -> None:
        d.state_dir.mkdir(parents=True, exist_ok=True)
        d.run_dir.mkdir(parents=True, exist_ok=True)
        d.docker_root.mkdir(parents=True, exist_ok=True)
        d.containerd_root.mkdir(parents=True, exist_ok=True)
        d.containerd_config.write_text(_containerd_config(d))
        # Our own (empty) daemon.json: the machine's /etc/docker/daemon.json must not apply.
        d.dockerd_config.write_text("{}\n")
        for p in (d.dockerd_pid, d.containerd_pid, d.docker_sock, d.containerd_sock):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def start_containerd(self, d: DaemonLayout) -> None:
        self._prepare(d)
        argv = _in_netns(d, [_tool("containerd"), "--config", str(d.containerd_config), "--log-level", "warn"])
        proc = _spawn(argv, d.containerd_log)
        d.containerd_pid.write_text(f"{proc.pid}\n")
        self.containerd[d.name] = proc

    def start_dockerd(self, d: DaemonLayout) -> None:
        argv = _in_netns(
            d,
            [
                _tool("dockerd"),
                "--config-file",
                str(d.dockerd_config),
                "--data-root",
                str(d.docker_root),
                "--exec-root",
                str(d.exec_root),
                "--pidfile",
                str(d.dockerd_pid),
                "--host",
                f"unix://{d.docker_sock}",
                "--containerd",
                str(d.containerd_sock),
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--cgroup-parent",
                d.cgroup_parent,
                "--log-level",
                "warn",
            ],
        )
        self.dockerd[d.name] = _spawn(argv, d.dockerd_log)

    def _check_alive(self, procs: Mapping[str, subprocess.Popen[bytes]], what: str) -> None:
        for name, proc in procs.items():
            if proc.poll() is not None:
                d = next(x for x in self.layouts if x.name == name)
                log = d.containerd_log if what == "containerd" else d.dockerd_log
                raise ClusterError(f"{what} of {name} exited with status {proc.returncode}; log {log}:\n{_tail(log)}")

    def run(self) -> None:
        for d in self.layouts:
            self.start_containerd(d)
        pending = {d.name: d for d in self.layouts}

        def containerd_ready() -> bool:
            self._check_alive(self.containerd, "containerd")
            for name, d in list(pending.items()):
                if _unix_connects(d.containerd_sock):
                    del pending[name]
                    self.start_dockerd(d)
            return not pending

        _wait_for("containerd to listen", containerd_ready, timeout=STARTUP_TIMEOUT)
        pending = {d.name: d for d in self.layouts}

        def dockerd_ready() -> bool:
            self._check_alive(self.dockerd, "dockerd")
            for name, d in list(pending.items()):
                if _docker_ping(d.docker_sock):
                    del pending[name]
            return not pending

        _wait_for(
            "dockerd to answer /_ping",
            dockerd_ready,
            timeout=STARTUP_TIMEOUT,
            on_timeout=lambda: "\n".join(f"{n}: {_tail(d.dockerd_log, 10)}" for n, d in pending.items()),
        )


def _start_daemons(cfg: ClusterConfig, names: Sequence[str]) -> None:
    layouts = [cfg.daemon(n) for n in names]
    try:
        _DaemonStart(layouts).run()
    except ClusterError as first:
        # A data dir left inconsistent by a crash can stop dockerd starting: drop
        # the (cache-only) data dirs and try once more from scratch.
        _log(f"daemon start failed, retrying with fresh data dirs: {str(first).splitlines()[0]}")
        teardown_daemons(cfg, layouts)
        for d in layouts:
            shutil.rmtree(d.data_dir, ignore_errors=True)
        _DaemonStart(layouts).run()


def teardown_daemons(cfg: ClusterConfig, layouts: Sequence[DaemonLayout]) -> None:
    """Stop and clean up some Docker daemons only (their hosts' sshd keep running)."""
    _stop_daemons(layouts, sshd=False)
    _kill_everything(cfg, [], layouts)
    _unmount_all([d.run_dir for d in layouts] + [d.data_dir for d in layouts])
    for d in layouts:
        shutil.rmtree(d.run_dir, ignore_errors=True)


def _docker_cli(cfg: ClusterConfig, d: DaemonLayout, *args: str, timeout: float = 120.0) -> str:
    argv = [_tool("docker"), "-H", f"unix://{d.docker_sock}", *args]
    return _run(argv, timeout=timeout, env=_docker_cli_env()).stdout


def _clean_daemon(cfg: ClusterConfig, d: DaemonLayout) -> None:
    """Remove containers, networks and volumes a previous run left in a kept data dir."""
    ids = _docker_cli(cfg, d, "ps", "-aq").split()
    if ids:
        _docker_cli(cfg, d, "rm", "-f", "-v", *ids)
    _docker_cli(cfg, d, "network", "prune", "-f")
    _docker_cli(cfg, d, "volume", "prune", "-f")


# --------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class ImageSource:
    name: str
    tarball: Path
    key: str
    changes: tuple[str, ...]


def debian_mirror(cfg: ClusterConfig) -> str:
    """The Debian mirror this machine's apt uses (or DISTPROC_TEST_DEBIAN_MIRROR)."""
    if cfg.mirror:
        return cfg.mirror.rstrip("/")
    candidates: list[str] = []
    files = [Path("/etc/apt/sources.list")]
    with contextlib.suppress(OSError):
        files += sorted(Path("/etc/apt/sources.list.d").iterdir())
    for f in files:
        if not f.is_file():
            continue
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f.suffix == ".sources":
            for block in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in block.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split():
                    candidates += fields.get("uris", "").split()
        elif f.suffix == ".list":
            for line in text.splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    candidates.append(parts[1])
    for uri in candidates:
        if uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _dpkg_arch() -> str:
    if shutil.which("dpkg"):
        cp = _run(["dpkg", "--print-architecture"], check=False)
        if cp.returncode == 0 and cp.stdout.strip():
            return cp.stdout.strip()
    return os.uname().machine


def _debootstrap_argv(root: Path, mirror: str, arch: str) -> list[str]:
    return [
        _tool("debootstrap"),
        "--variant=minbase",
        "--include=python3",
        f"--arch={arch}",
        SUITE,
        str(root),
        mirror,
    ]


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an image build by another session: wait for it
        yield
    finally:
        os.close(fd)


def _clean_build_dirs(cache_dir: Path) -> None:
    for p in cache_dir.glob("build-*"):
        _unmount_all([p])
        shutil.rmtree(p, ignore_errors=True)
    for p in cache_dir.glob("*.tar.tmp*"):
        with contextlib.suppress(OSError):
            p.unlink()


def _base_rootfs(cfg: ClusterConfig) -> tuple[Path, str]:
    """The debootstrapped rootfs tarball (cached), and its cache key."""
    mirror = debian_mirror(cfg)
    arch = _dpkg_arch()
    key = _sha(
        {
            "argv": _debootstrap_argv(Path("ROOT"), mirror, arch)[1:],
            "strip": ROOTFS_STRIP,
            "recipe": ROOTFS_RECIPE,
        }
    )
    target = cfg.cache_dir / f"rootfs-{SUITE}-minbase-python3-{key[:16]}.tar"
    if target.exists():
        return target, key
    _clean_build_dirs(cfg.cache_dir)
    build = Path(tempfile.mkdtemp(prefix="build-", dir=cfg.cache_dir))
    try:
        root = build / "rootfs"
        log = cfg.cache_dir / "debootstrap.log"
        _log(f"debootstrap {SUITE} (minbase + python3) from {mirror}: about a minute, once")
        started = time.monotonic()
        with open(log, "wb") as out:
            try:
                proc = subprocess.run(
                    _debootstrap_argv(root, mirror, arch),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=1200,
                    env=_daemon_env(),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ClusterError(f"debootstrap timed out; log {log}:\n{_tail(log)}") from None
        if proc.returncode != 0:
            extra = _tail(root / "debootstrap" / "debootstrap.log")
            raise ClusterError(f"debootstrap failed (exit {proc.returncode}); log {log}:\n{_tail(log)}\n{extra}")
        _log(f"debootstrap done in {time.monotonic() - started:.0f}s")
        _unmount_all([root])
        for rel in ROOTFS_STRIP:
            p = root / rel
            if p.is_dir() and not p.is_symlink():
                for child in p.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        for rel in ("etc/hostname", "etc/resolv.conf"):
            with contextlib.suppress(FileNotFoundError):
                (root / rel).unlink()
        tmp = build / "rootfs.tar"
        _run(
            [
                _tool("tar"),
                "--numeric-owner",
                "--one-file-system",
                "-C",
                str(root),
                "-cf",
                str(tmp),
                ".",
            ],
            timeout=600,
        )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(ClusterError):
            _unmount_all([build])
        shutil.rmtree(build, ignore_errors=True)
    return target, key


def _overlay_entries(overlay: Path) -> list[tuple[str, str, int, bytes]]:
    """(relative path, kind, mode, content or link target) for the overlay, sorted."""
    entries: list[tuple[str, str, int, bytes]] = []
    if not overlay.is_dir():
        return entries
    for dirpath, dirnames, filenames in os.walk(overlay):
        dirnames[:] = sorted(n for n in dirnames if n != "__pycache__")
        base = Path(dirpath)
        for n in dirnames:
            p = base / n
            rel = p.relative_to(overlay).as_posix()
            if p.is_symlink():
                entries.append((rel, "symlink", 0o777, os.readlink(p).encode()))
            else:
                entries.append((rel, "dir", 0o755, b""))
        for n in sorted(filenames):
            p = base / n
            rel = p.relative_to(overlay).as_posix()
            if p.is_symlink():
                entries.append((rel, "symlink", 0o777, os.readlink(p).encode()))
            else:
                mode = 0o755 if os.stat(p).st_mode & 0o111 else 0o644
                entries.append((rel, "file", mode, p.read_bytes()))
    return sorted(entries)


_FIXED_MTIME = 1_700_000_000


def _tarinfo(name: str, kind: str, mode: int, data: bytes) -> tarfile.TarInfo:
    ti = tarfile.TarInfo("./" + name)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mode = mode
    ti.mtime = _FIXED_MTIME
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = data.decode()
    else:
        ti.type = tarfile.REGTYPE
        ti.size = len(data)
    return ti


def _py_image(cfg: ClusterConfig) -> ImageSource:
    base, base_key = _base_rootfs(cfg)
    entries = _overlay_entries(OVERLAY_DIR)
    key = _sha(
        {
            "base": base_key,
            "overlay": [(r, k, m, hashlib.sha256(c).hexdigest()) for r, k, m, c in entries],
            "changes": PY_IMAGE_CHANGES,
            "recipe": IMAGE_RECIPE,
        }
    )
    target = cfg.cache_dir / f"image-py-{key[:16]}.tar"
    if not target.exists():
        for old in cfg.cache_dir.glob("image-py-*.tar"):
            with contextlib.suppress(OSError):
                old.unlink()
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        overlay_names = {r for r, _, _, _ in entries}
        with (
            tarfile.open(base, "r:") as src,
            tarfile.open(tmp, "w:", format=tarfile.GNU_FORMAT) as dst,
        ):
            present = set()
            for member in src:
                rel = member.name.removeprefix("./")
                present.add(rel)
                if rel in overlay_names and not member.isdir():
                    continue  # replaced by the overlay
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
            for rel, kind, mode, data in entries:
                if kind == "dir" and rel in present:
                    continue
                dst.addfile(_tarinfo(rel, kind, mode, data), io.BytesIO(data) if kind == "file" else None)
        os.replace(tmp, target)
    return ImageSource(IMAGE, target, key, PY_IMAGE_CHANGES)


def _busybox_image(cfg: ClusterConfig) -> ImageSource:
    busybox = Path(_tool("busybox")).resolve()
    binary = busybox.read_bytes()
    key = _sha(
        {
            "busybox": hashlib.sha256(binary).hexdigest(),
            "changes": BUSYBOX_IMAGE_CHANGES,
            "recipe": IMAGE_RECIPE,
        }
    )
    target = cfg.cache_dir / f"image-busybox-{key[:16]}.tar"
    if target.exists():
        return ImageSource(BUSYBOX_IMAGE, target, key, BUSYBOX_IMAGE_CHANGES)
    for old in cfg.cache_dir.glob("image-busybox-*.tar"):
        with contextlib.suppress(OSError):
            old.unlink()
    applets = _run([str(busybox), "--list-full"]).stdout.split()
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev"]
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    with tarfile.open(tmp, "w:", format=tarfile.GNU_FORMAT) as t:
        for rel in dirs:
            t.addfile(_tarinfo(rel, "dir", 0o1777 if rel == "tmp" else 0o755, b""))
        t.addfile(_tarinfo("bin/busybox", "file", 0o755, binary), io.BytesIO(binary))
        files = {
            "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
            "etc/group": b"root:x:0:\n",
        }
        for rel, data in files.items():
            t.addfile(_tarinfo(rel, "file", 0o644, data), io.BytesIO(data))
        for applet in sorted(set(applets)):
            applet = applet.strip("/")
            if applet == "bin/busybox" or "/" not in applet:
                continue
            t.addfile(_tarinfo(applet, "symlink", 0o777, b"/bin/busybox"))
    os.replace(tmp, target)
    return ImageSource(BUSYBOX_IMAGE, target, key, BUSYBOX_IMAGE_CHANGES)


def _image_key_in(cfg: ClusterConfig, d: DaemonLayout, image: str) -> str | None:
    argv = [
        _tool("docker"),
        "-H",
        f"unix://{d.docker_sock}",
        "image",
        "inspect",
        "--format",
        f'{{{{ index .Config.Labels "{CONTENT_LABEL}" }}}}',
        image,
    ]
    cp = _run(argv, check=False, timeout=60, env=_docker_cli_env())
    return cp.stdout.strip() if cp.returncode == 0 else None


def _import_image(cfg: ClusterConfig, d: DaemonLayout, src: ImageSource) -> bool:
    """Import ``src`` into ``d``'s daemon unless it is there already; True if imported."""
    if _image_key_in(cfg, d, src.name) == src.key:
        return False
    changes: list[str] = []
    for c in (*src.changes, f"LABEL {CONTENT_LABEL}={src.key}"):
        changes += ["--change", c]
    _docker_cli(cfg, d, "import", *changes, str(src.tarball), src.name, timeout=600)
    if _image_key_in(cfg, d, src.name) != src.key:
        raise ClusterError(f"importing {src.name} into {d.name} did not take")
    # The image the tag pointed at before, if any, is now dangling.
    _docker_cli(cfg, d, "image", "prune", "-f")
    return True


# --------------------------------------------------------------------------
# Build


def build(cfg: ClusterConfig) -> Cluster:
    """Tear down any leftover, then build the whole cluster; returns its description.

    The caller should hold :func:`cluster_lock`.
    """
    problems = preflight(cfg)
    if problems:
        raise ClusterError("cannot build the test cluster:\n  - " + "\n  - ".join(problems))
    t0 = time.monotonic()
    teardown(cfg)
    # Fresh per-run state; keep only the Docker data dirs (image store).
    cfg.cluster_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.cluster_dir, 0o755)
    _mark_ours(cfg.cluster_dir)
    for p in cfg.cluster_dir.iterdir():
        if p.name in ("docker", MARKER):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    _mark_ours(cfg.run_dir)
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    (cfg.cluster_dir / LOCAL / "work").mkdir(parents=True, exist_ok=True)

    _setup_network(cfg)
    _setup_ssh(cfg)
    daemon_names = [*cfg.host_names, LOCAL]

    # Start the daemons while the images are prepared (debootstrap, when not cached).
    with ThreadPoolExecutor(max_workers=1) as pool:
        images_f = pool.submit(_prepare_images, cfg)
        _start_daemons(cfg, daemon_names)
        _wait_ssh(cfg)
        images = images_f.result()
    t1 = time.monotonic()

    layouts = [cfg.daemon(n) for n in daemon_names]
    imported = 0

    def provision(d: DaemonLayout) -> int:
        _clean_daemon(cfg, d)
        return sum(_import_image(cfg, d, img) for img in images)

    with ThreadPoolExecutor(max_workers=min(4, len(layouts))) as pool:
        imported = sum(pool.map(provision, layouts))
    c = cfg.cluster()
    _log(
        f"cluster up: {len(c.hosts)} hosts + local daemon in {time.monotonic() - t0:.1f}s "
        f"(images ready {t1 - t0:.1f}s, {imported} imports)"
    )
    return c


def _prepare_images(cfg: ClusterConfig) -> list[ImageSource]:
    with _cache_lock(cfg.cache_dir):
        return [_py_image(cfg), _busybox_image(cfg)]


@contextlib.contextmanager
def running_cluster(cfg: ClusterConfig | None = None) -> Iterator[Cluster]:
    """Build the cluster (holding the lock), yield it, and tear it down afterwards."""
    cfg = cfg or ClusterConfig.from_env()
    with cluster_lock(cfg):
        try:
            c = build(cfg)
        except BaseException:
            with contextlib.suppress(Exception):
                teardown(cfg)
            raise
        try:
            yield c
        finally:
            teardown(cfg)


# --------------------------------------------------------------------------
# Status and command line


def status(cfg: ClusterConfig) -> dict[str, Any]:
    """What of the cluster is running now (for `python -m tests.cluster status`)."""
    out: dict[str, Any] = {
        "cluster_dir": str(cfg.cluster_dir),
        "netns": _our_netns(),
        "daemons": {},
    }
    for d in _known_daemons(cfg):
        entry: dict[str, Any] = {
            "dockerd": _pid_from_file(d.dockerd_pid, str(d.dockerd_pid)),
            "containerd": _pid_from_file(d.containerd_pid, str(d.containerd_config)),
            "docker_ping": _docker_ping(d.docker_sock),
        }
        if d.netns is not None:
            entry["sshd"] = _pid_from_file(d.state_dir / "sshd.pid", str(d.state_dir / "sshd_config"))
            entry["netns"] = d.netns
        out["daemons"][d.name] = entry
    return out


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster", description="Manage the distproc test cluster by hand."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="(re)build the cluster and leave it running")
    up.add_argument("--hosts", type=int, help="number of hosts (default: DISTPROC_TEST_HOSTS or 3)")
    up.add_argument(
        "--inventory",
        type=Path,
        help="write an Ansible inventory here (default: CLUSTERDIR/inventory.yml)",
    )
    down = sub.add_parser("down", help="stop and remove the cluster")
    down.add_argument("--purge", action="store_true", help="also delete the cluster dir (Docker image stores)")
    sub.add_parser("status", help="show what is running")
    args = parser.parse_args(argv)
    try:
        cfg = ClusterConfig.from_env()
        if args.cmd == "up":
            if args.hosts is not None:
                cfg = ClusterConfig(
                    n_hosts=args.hosts,
                    cluster_dir=cfg.cluster_dir,
                    run_dir=cfg.run_dir,
                    cache_dir=cfg.cache_dir,
                    mirror=cfg.mirror,
                )
                cfg.validate()
            with cluster_lock(cfg):
                c = build(cfg)
            inv = c.write_inventory(args.inventory or cfg.cluster_dir / "inventory.yml")
            local_inv = c.write_inventory(cfg.cluster_dir / "inventory-local.yml", local=True)
            print(f"inventory:        {inv}")
            print(f"local inventory:  {local_inv}")
            print(f"ssh:              {' '.join(c.ssh_argv(c.hosts[0]))}")
            for h in c.hosts:
                print(f"{h.name}: {h.address}  DOCKER_HOST={h.docker_host}  work={h.work_dir}")
            print(f"local: DOCKER_HOST={c.local_docker_host}")
        elif args.cmd == "down":
            with cluster_lock(cfg):
                teardown(cfg, purge=args.purge)
            print("cluster down")
        else:
            print(json.dumps(status(cfg), indent=2))
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
