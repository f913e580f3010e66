"""The warm agent: one per host, SSH user and agent version, serving claims between jobs.

Starting python and importing the agent was most of what a job cost a host
besides its container (about 80 ms of CPU per host per job). So the first cold
`claim` (an agent started over an SSH exec channel, cli.cmd_claim) also starts
this server in the background, and it stays up until it has had nothing to do
for its idle time. The coordinator then reaches it through sshd's
`direct-streamlocal` forwarding (asyncssh's open_unix_connection): sshd connects
the channel to the socket itself and starts no process on the host.

Each connection is one agent call, served by a child forked off this server
(so a job's state lives and dies with its own process, as with a cold call):
the first line is {"agent": DIGEST, "argv": [VERB, ...]}; the child then runs
the verb with the connection as its stdin and stdout, exactly as a cold call
would, and ends with one trailer that a cold call's SSH channel carries on its
own: a NUL byte, then {"exit": N, "stderr": "..."} (JSON never holds a raw NUL).

Safety: the socket lives in a 0700 folder owned by the user (checked, never
followed through a link), is itself 0600, and every peer's uid is checked
(SO_PEERCRED) against the server's own. Its name holds the agent's content
hash, so a coordinator of another version never reaches it (it finds no
socket and takes the cold path). Only `claim` is served; a run launched from
here is the same detached run as from a cold call, with its own orphan
timeout and MaxRuntime.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import socket
import stat
import struct
import sys
import time
from typing import Callable, List, Optional, Tuple

# The verbs a warm connection may run: the whole conversation of a job (cli.serve).
VERBS = frozenset({"claim"})
# A request line is a verb's argv: a few hundred bytes.
MAX_REQUEST = 64 * 1024
# How long a new connection may take to send its request line.
REQUEST_SECONDS = 30.0
STDERR_TAIL = 8192
# Unix socket paths are at most 107 bytes (sun_path).
MAX_SOCKET_PATH = 107
BUNDLE_PREFIX = "distproc-agent-"
# The warm agent's log (a line per call) is emptied when a warm agent starts with more.
MAX_LOG = 1 << 20


def bundle_digest(bundle_dir: str) -> Optional[str]:
    """The content hash in the name of the unpacked agent folder, or None (not run as shipped)."""
    name = os.path.basename(bundle_dir.rstrip("/"))
    return name[len(BUNDLE_PREFIX) :] if name.startswith(BUNDLE_PREFIX) else None


def warm_dir(work_dir: str) -> str:
    return os.path.join(work_dir, "agent", "warm")


def socket_path(work_dir: str, digest: str) -> Optional[str]:
    """Where the warm agent of this version listens; None if the path is too long for a socket."""
    path = os.path.join(warm_dir(work_dir), "{}.sock".format(digest))
    return path if len(path.encode()) <= MAX_SOCKET_PATH else None


def private_dir(path: str) -> bool:
    """Make `path` (if missing) and check it is a real folder of ours that nobody else can enter."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return False
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError:
            return False
    return True


def _answers(path: str) -> bool:
    """Whether a warm agent accepts connections on `path` now."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def start(python: str, bundle_dir: str, work_dir: str, idle_seconds: float) -> None:
    """Start the warm agent of this bundle in the background unless one answers already.

    Returns at once: the server is a new interpreter (`python BUNDLE warm ...`),
    detached from this call's SSH session, with nothing of this call's state
    (its command line names no job, its file descriptors hold no channel).
    """
    digest = bundle_digest(bundle_dir)
    path = socket_path(work_dir, digest) if digest else None
    if path is None or idle_seconds <= 0 or _answers(path):
        return
    argv = [python, bundle_dir, "warm", work_dir, "--idle", repr(float(idle_seconds))]
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
                os.execve(python, argv, env)  # noqa: S606 - an argv list, no shell
        finally:
            os._exit(0)
    os.waitpid(child, 0)


def serve_forever(bundle_dir: str, work_dir: str, idle_seconds: float, main: Callable[[List[str]], int]) -> int:
    """The server: accept, fork a child per connection, exit after `idle_seconds` with nothing to do.

    `main` is the agent's command line (cli.main), which each call runs.
    """
    import fcntl

    digest = bundle_digest(bundle_dir)
    path = socket_path(work_dir, digest) if digest else None
    folder = warm_dir(work_dir)
    if path is None or not private_dir(folder):
        return 2
    log = os.open(os.path.join(folder, "{}.log".format(digest)), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if os.fstat(log).st_size > MAX_LOG:
        os.ftruncate(log, 0)  # a line per call: started afresh now and then, never unbounded
    os.dup2(log, 2)
    os.close(log)
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another warm agent of this version is starting or running
    if _answers(path):
        return 0
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a socket left by one that was killed
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(path)  # created 0600 under this umask: never reachable by others, not even briefly
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(128)
    ours = os.stat(path).st_ino
    with open(os.path.join(folder, "{}.pid".format(digest)), "w") as fh:
        fh.write("{}\n".format(os.getpid()))
    _preload()
    sys.stderr.write("warm agent {} listening on {} (idle {} s)\n".format(os.getpid(), path, idle_seconds))
    sys.stderr.flush()
    children: List[int] = []
    last = time.monotonic()
    try:
        while True:
            children = [pid for pid in children if not _reaped(pid)]
            now = time.monotonic()
            if children:
                last = now
            left = idle_seconds - (now - last)
            if left <= 0:
                return 0
            ready, _, _ = select.select([server], [], [], 1.0 if children else min(left, 30.0))
            if not _still_ours(path, ours, bundle_dir):
                return 0
            if not ready:
                continue
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            last = time.monotonic()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the forked child
                code = 1
                try:
                    # Nothing of the server's goes on in the call, nor in a run it launches:
                    # a run holding the lock would keep the next warm agent from starting.
                    server.close()
                    os.close(lock)
                    code = _serve_one(conn, digest or "", bundle_dir, main)
                except BaseException:
                    import traceback

                    traceback.print_exc()  # to the warm agent's log (fd 2 until the call took it)
                finally:
                    os._exit(code)
            conn.close()
            children.append(pid)
    finally:
        if _still_ours(path, ours, bundle_dir):
            os.unlink(path)


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _still_ours(path: str, ours: int, bundle_dir: str) -> bool:
    """The socket is still the one this server made, and its agent is still installed."""
    try:
        return os.lstat(path).st_ino == ours and os.path.isdir(bundle_dir)
    except OSError:
        return False


def _preload() -> None:
    """Import what a job's conversation needs once, here: every child then starts with it."""
    import ctypes
    import encodings.idna  # noqa: F401 - the first name lookup of each call imported it (3 modules)
    import ipaddress  # noqa: F401 - runner resolves --add-host names with it
    import tempfile  # noqa: F401 - each call's stderr file

    from . import dirwatch, engine, files, follow, hostcheck, lines, metrics, netif, pids, runner, session  # noqa: F401

    ctypes.CDLL(None, use_errno=True)  # dirwatch's inotify: libc found once
    # What is loaded now stays as it is: the collector leaves it alone in every
    # child, whose pages then stay shared with this server instead of being copied.
    gc.collect()
    gc.freeze()


def _peer_uid_pid(conn: socket.socket) -> Tuple[int, int]:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return uid, pid


def _read_request(conn: socket.socket) -> Optional[bytes]:
    """The first line, without consuming a byte past it (the rest is the verb's stdin)."""
    deadline = time.monotonic() + REQUEST_SECONDS
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([conn], [], [], left)[0]:
            return None
        peeked = conn.recv(MAX_REQUEST, socket.MSG_PEEK)
        if not peeked:
            return None
        cut = peeked.find(b"\n")
        if cut >= 0:
            return conn.recv(cut + 1)
        if len(peeked) >= MAX_REQUEST:
            return None
        time.sleep(0.005)  # part of a line: wait for the rest of it


def _serve_one(conn: socket.socket, digest: str, bundle_dir: str, main: Callable[[List[str]], int]) -> int:
    """One agent call on one connection, in this forked child."""
    conn.setblocking(True)
    uid, peer = _peer_uid_pid(conn)
    if uid != os.getuid():
        return 1  # not ours: say nothing
    line = _read_request(conn)
    error = None
    argv: List[str] = []
    try:
        doc = json.loads(line.decode("utf-8")) if line else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        error = "no request line"
    elif doc.get("agent") != digest:
        error = "this is agent {}, not {}".format(digest, doc.get("agent"))
    else:
        argv = doc.get("argv")  # type: ignore[assignment]
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv) and argv[0] in VERBS):
            error = "not a verb this agent serves warm: {!r}".format(argv)
    if error is not None:
        _send(conn, json.dumps({"error": error}).encode() + b"\n")
        _send(conn, b"\0" + json.dumps({"exit": 2, "stderr": error}).encode() + b"\n")
        return 0
    # One line per call in the warm agent's log (stderr until the call takes it over).
    sys.stderr.write("{} pid {} for peer {}\n".format(" ".join(argv[:1] + argv[2:]), os.getpid(), peer))
    sys.stderr.flush()
    from . import session

    # The connection's far end is sshd's process of the coordinator's connection:
    # the one to end if nobody is there any more (cli._end_unwatched).
    session.PEER_PID = peer
    # The connection becomes stdin and stdout, a private file stderr, and nothing else
    # stays open: a run launched from here (which puts its own on 0, 1 and 2) holds no
    # copy of the connection, which then ends with this call.
    errors = _stderr_file()
    os.dup2(errors, 2)
    os.close(errors)
    fd = conn.detach()
    os.dup2(fd, 0)
    os.dup2(fd, 1)
    os.close(fd)
    sys.argv = [bundle_dir, *argv]
    code = 1
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    size = os.lseek(2, 0, os.SEEK_END)
    os.lseek(2, max(0, size - STDERR_TAIL), os.SEEK_SET)
    tail = os.read(2, STDERR_TAIL).decode("utf-8", "replace")
    _write_all(1, b"\0" + json.dumps({"exit": code, "stderr": tail}).encode() + b"\n")
    return 0


def _stderr_file() -> int:
    """An unnamed file for the call's stderr, sent back in the trailer."""
    import tempfile

    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


def _send(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data) :]
