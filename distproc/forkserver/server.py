"""The fork-server: imports the run path once, then forks one child per `distproc` command.

Started by client.start_server as `python -m distproc.forkserver.server SOCKET FINGERPRINT`
in its own session. It serves only while its own sources match the fingerprint
its name carries, only its own user (SO_PEERCRED), and exits after
DISTPROC_FORKSERVER_IDLE_SECONDS (default 600) with no request and no command
running; SIGTERM makes it stop taking commands and exit once the running ones
have ended (their clients still get their status). Single-threaded (a fork
from a threaded process may copy a held lock): a selector waits on the
listening socket, the clients' connections (a client that hangs up has its
command killed, as the command would have died with it) and SIGCHLD's wakeup
pipe. Each child adopts the client's standard streams,
cwd, environment and umask, gets a fresh interpreter's signal handlers and
unconfigured logging, and runs cli.main(); its wait status goes back to the
client. One line per served command goes to fs-FINGERPRINT.log beside the
socket (0600), for whoever wonders what the server did.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO

from . import client

#: What `distproc run` imports before its first connection (the rest comes with these).
PRELOAD = (
    "distproc.cli",
    "distproc.run.runner",
    "distproc.backends.fleet",
    "distproc.hosts.transport.ssh",
    "distproc.ui.liveview",
    "distproc.ui.logconfig",
    "distproc.ui.console",
    "distproc.plan",
    "distproc.inventory",
    "distproc.spec",
    "distproc.store.db",
    "distproc.store.views",
    "distproc.run.control",
    "distproc.run.options",
    "distproc.run.attach",
    "asyncio",
    "yaml",
)
DEFAULT_IDLE_SECONDS = 600.0
#: A client has this long to send its request once connected.
REQUEST_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Request:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    umask: int


class Refused(Exception):
    pass


def _idle_seconds() -> float:
    try:
        value = float(os.environ.get(client.ENV_IDLE, DEFAULT_IDLE_SECONDS))
    except ValueError:
        return DEFAULT_IDLE_SECONDS
    return value if value > 0 else DEFAULT_IDLE_SECONDS


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = conn.recv(min(size, 1 << 16))
        if not chunk:
            raise Refused("the client hung up mid-request")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_request(conn: socket.socket, fingerprint: str) -> tuple[Request, list[int]]:
    """The client's request and its three standard streams; the descriptors are the caller's
    to close whatever happens (on Refused they are closed here)."""
    if client.peer_uid(conn) != os.getuid():
        raise Refused("another user")
    header, fds, _flags, _addr = socket.recv_fds(conn, 8, 3)
    try:
        if len(header) != 8 or len(fds) != 3:
            raise Refused("no request header with three descriptors")
        (size,) = struct.unpack("!Q", header)
        if size > client.MAX_REQUEST:
            raise Refused(f"a request of {size} bytes")
        doc = json.loads(_recv_exact(conn, size))
        if doc.get("fingerprint") != fingerprint:
            raise Refused("another version of distproc")
        argv, cwd, env, umask = doc.get("argv"), doc.get("cwd"), doc.get("env"), doc.get("umask")
        if not (
            isinstance(argv, list)
            and argv
            and all(isinstance(a, str) for a in argv)
            and isinstance(cwd, str)
            and isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            and isinstance(umask, int)
            and 0 <= umask <= 0o777
        ):
            raise Refused("a malformed request")
    except (Refused, ValueError):
        for fd in fds:
            os.close(fd)
        raise
    return Request(argv, cwd, env, umask), fds


def _reset_signals() -> None:
    """A fresh interpreter's handlers: SIGINT raises KeyboardInterrupt, SIGPIPE is ignored
    (Python's start-up does so), everything else default, nothing blocked."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _reset_logging() -> None:
    """Nothing the server's imports configured reaches the command: it configures its own."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logging.disable(logging.NOTSET)
    structlog = sys.modules.get("structlog")
    if structlog is not None:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def _streams(env: dict[str, str]) -> None:
    """sys.std* on the adopted descriptors 0-2, buffered as Python buffers them for that kind
    of file (text files on a terminal line-buffered, stderr always)."""
    encoding, errors = sys.__stdout__.encoding if sys.__stdout__ else "utf-8", "strict"
    forced = env.get("PYTHONIOENCODING")
    if forced:
        name, _, how = forced.partition(":")
        encoding, errors = name or encoding, how or errors
    made: list[TextIO] = [
        open(0, encoding=encoding, errors=errors, closefd=False),  # noqa: SIM115 - the process's stdin
        open(1, "w", encoding=encoding, errors=errors, closefd=False),  # noqa: SIM115
        io.TextIOWrapper(open(2, "wb", closefd=False), encoding, "backslashreplace", line_buffering=True),  # noqa: SIM115
    ]
    sys.stdin, sys.stdout, sys.stderr = made
    # The originals too: they are what the interpreter falls back to (and they were /dev/null).
    for name, stream in zip(("__stdin__", "__stdout__", "__stderr__"), made, strict=True):
        setattr(sys, name, stream)


def run_child(request: Request, fds: list[int]) -> NoReturn:
    """In the forked child: become the client's command and exit with its status."""
    code = 1
    try:
        _reset_signals()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        # Everything the server held (its socket, lock, log, other clients' connections,
        # the received descriptors) is not the command's.
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
        os.umask(request.umask)
        os.environ.clear()
        os.environ.update(request.env)
        sys.argv = request.argv
        _streams(request.env)
        _reset_logging()
        try:
            os.chdir(request.cwd)
        except OSError as exc:
            print(f"distproc: cannot enter the working folder {request.cwd}: {exc.strerror}", file=sys.stderr)
            os._exit(4)
        from .. import cli

        try:
            code = cli.main()
        except SystemExit as exc:
            code = _system_exit_code(exc)
        except KeyboardInterrupt:
            traceback.print_exc()
            _flush()
            # As the interpreter does for an uncaught KeyboardInterrupt: die by SIGINT.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
        code = 1
    _flush()
    os._exit(code)


def _system_exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class Server:
    def __init__(self, path: Path, fingerprint: str, log: TextIO) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.log = log
        self.idle = _idle_seconds()
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.wake_r, self.wake_w = os.pipe()
        self.stopping = False

    def note(self, message: str) -> None:
        self.log.write(f"{time.time():.3f} {message}\n")
        self.log.flush()

    def bind(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # stale: we hold the lock, so no live server owns it
        old = os.umask(0o177)
        try:
            self.listener.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.listener.listen(64)
        self.inode = os.stat(self.path).st_ino
        # Whoever started us with a pipe on stdout (a test) learns that we serve; the
        # client starts us with /dev/null there.
        with contextlib.suppress(OSError):
            os.write(1, f"ready {os.getpid()}\n".encode())

    def serve(self) -> None:
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self.stop)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.note(f"serving pid={os.getpid()} idle={self.idle}")
        deadline: float | None = time.monotonic() + self.idle
        while not (self.stopping and not self.children):
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            if self.stopping and self.listener.fileno() >= 0:
                self.note(f"stopping: no new commands; {len(self.children)} running")
                self.selector.unregister(self.listener)
                self.close()
            for key, _ in self.selector.select(timeout):
                if key.fileobj is self.listener:
                    self.accept()
                elif key.fileobj == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                else:
                    self.hung_up(key.fileobj)  # type: ignore[arg-type]
            self.reap()
            if self.children:
                deadline = None
            elif deadline is None:
                deadline = time.monotonic() + self.idle
        self.note("stopped" if self.stopping else "idle: exiting")
        self.close()

    def stop(self, _signum: int, _frame: object) -> None:
        """SIGTERM: serve no new command, and exit once the running ones have ended and their
        clients have their status (a client never loses its command's exit status)."""
        self.stopping = True

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(REQUEST_SECONDS)
        try:
            request, fds = read_request(conn, self.fingerprint)
        except (Refused, OSError) as exc:
            self.note(f"refused: {exc}")
            with contextlib.suppress(OSError):
                conn.sendall(f"R {exc}\n".encode()[: client.MAX_REPLY])
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            run_child(request, fds)
        for fd in fds:
            os.close(fd)
        self.note(f"child pid={pid} argv={json.dumps(request.argv[1:])}")
        try:
            conn.sendall(f"P {pid}\n".encode())
        except OSError:
            os.kill(pid, signal.SIGKILL)
        self.children[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ)

    def hung_up(self, conn: socket.socket) -> None:
        """The client went away before its command ended (it was killed outright): so does the
        command, as it would have in-process."""
        try:
            if conn.recv(64):
                return  # not a hang-up (a client sends nothing after its request; ignored)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            pass  # reset: gone as well
        self.selector.unregister(conn)
        for pid, held in self.children.items():
            if held is conn:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.note(f"client of pid={pid} hung up: killed it")

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            self.note(f"child pid={pid} status={status}")
            with contextlib.suppress(OSError):
                conn.sendall(f"S {status}\n".encode())
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            conn.close()

    def close(self) -> None:
        if self.listener.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        self.listener.close()


def _preload() -> list[str]:
    failed = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a module that fails here fails again in the command, with its message
            failed.append(f"{name}: {exc}")
    return failed


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m distproc.forkserver.server SOCKET FINGERPRINT", file=sys.stderr)
        return 2
    path, expected = Path(argv[1]), argv[2]
    if client.fingerprint() != expected:
        return 2  # the client saw other sources than this interpreter imports
    os.chdir("/")
    claimed = client.claim_socket_folder(path)
    if claimed is None:
        return 0  # another server of this version is starting or serving
    _lock, log = claimed
    for problem in _preload():
        log.write(f"preload failed: {problem}\n")
    # The imported modules are never freed: keep the collector off their pages so the
    # children share them (copy-on-write) instead of each touching every object.
    gc.collect()
    gc.freeze()
    server = Server(path, expected, log)
    server.bind()
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
