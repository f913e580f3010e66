"""Running, finding, signalling and reaping processes, and probing sockets: the small helpers every part uses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from tests.cluster.constants import SBIN_PATH, TOOL_PACKAGES, ClusterError


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
