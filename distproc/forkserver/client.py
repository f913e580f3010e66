"""The fork-server's client: the part of `distproc` that runs before anything heavy is imported.

With DISTPROC_FORKSERVER=1, distproc.entry calls serve() first. It connects to
the user's fork-server (server.py) and hands it this process's standard
streams (SCM_RIGHTS), argv, cwd, environment and umask (all over the socket,
never argv); the server forks a child that runs the command, tells us the
child's pid, and later its wait status. Meanwhile SIGINT, SIGTERM, SIGHUP and
SIGWINCH sent to us go to the child, so Ctrl-C and `kill` act on the command
as they do without the server; Ctrl-Z (SIGTSTP) stops the child, then us, and
when the shell continues us (`fg`, `bg`) we continue the child. Any failure before the child exists (no
server, a stale socket, a refusal) returns None and the command runs
in-process as before; a missing server is then started in the background for
the next command.

The socket lives in a 0700 folder of ours ($XDG_RUNTIME_DIR/distproc, else
the job store's home/forkserver), is 0600, and is named by a fingerprint of
the installed sources and the interpreter, so an upgraded install never talks
to an old server. Only the standard library's light modules are imported
here (tests/test_cli_conventions.py keeps the light commands light).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import stat
import struct
import sys
import zlib
from pathlib import Path
from typing import TextIO

from ..version import __version__

ENV_ON = "DISTPROC_FORKSERVER"
ENV_IDLE = "DISTPROC_FORKSERVER_IDLE_SECONDS"
ENV_DEBUG = "DISTPROC_FORKSERVER_DEBUG"
#: Signals the client passes on to the command's process (SIGWINCH: the live view's size).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH)
#: Forwarded too, as job control: see suspend().
BLOCKED = (*FORWARDED, signal.SIGTSTP)
#: The request (argv, cwd, environment) may be this large at most; the server refuses more.
MAX_REQUEST = 4 << 20
#: A reply line ("P <pid>", "S <wait status>", "R <reason>") is short.
MAX_REPLY = 256
#: sun_path holds 108 bytes; a longer socket path cannot be bound.
MAX_SOCKET_PATH = 104

_PACKAGE = Path(__file__).resolve().parent.parent


class ForkServerUnavailable(Exception):
    """Internal: the command runs in-process (the reason is logged at debug level)."""


def enabled() -> bool:
    return os.environ.get(ENV_ON) == "1"


def debug(message: str) -> None:
    """The fork-server's own debug log, on stderr only when DISTPROC_FORKSERVER_DEBUG=1,
    so a command's output is the same with and without the server."""
    if os.environ.get(ENV_DEBUG) == "1":
        print(f"distproc: fork-server: {message}", file=sys.stderr, flush=True)


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/distproc, else the job store's home (store.db.default_home, not
    imported: it loads sqlite3) /forkserver."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "distproc"
    home = os.environ.get("DISTPROC_HOME")
    if home:
        base = Path(home).expanduser()
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")) / "distproc"
    return base / "forkserver"


def private_dir(path: Path) -> Path:
    """Create the folder 0700, or check an existing one is ours and closed to others."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ForkServerUnavailable(f"{path} is not a folder of ours closed to others (mode {info.st_mode:o})")
    return path


def fingerprint() -> str:
    """A checksum of the installed sources (each .py file's name, size and mtime), their
    location, the interpreter and the version: any change names another socket, hence
    another server."""
    head = f"{sys.executable}\0{_PACKAGE}\0{__version__}\n"
    stack = [str(_PACKAGE)]
    entries: list[str] = []
    while stack:
        with os.scandir(stack.pop()) as found:
            for entry in found:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    info = entry.stat(follow_symlinks=False)
                    entries.append(f"{entry.path}\0{info.st_size}\0{info.st_mtime_ns}")
    # Two checksums, 64 bits: this names a version among one user's installs, not a secret or
    # a signature (the folder is the user's own), and zlib loads in a fraction of hashlib's
    # time (which loads OpenSSL).
    data = (head + "\n".join(sorted(entries))).encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def socket_path(directory: Path, print_: str) -> Path:
    path = directory / f"fs-{print_}.sock"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ForkServerUnavailable(f"socket path {path} is longer than a Unix socket allows")
    return path


def peer_uid(sock: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


#: What the server's own environment keeps of the first client's: what decides which sources
#: the interpreter imports (PYTHON*), its locale, and the fork-server's settings. Each command
#: gets its own client's environment; the server holds no one's credentials.
_SERVER_ENV_PREFIXES = ("PYTHON", "LANG", "LC_", "DISTPROC_FORKSERVER", "PATH", "HOME", "TMPDIR", "XDG_RUNTIME_DIR")


def start_server(path: Path, print_: str) -> None:
    """The server in the background (spawn_detached)."""
    spawn_detached(["-m", "distproc.forkserver.server", str(path), print_], _SERVER_ENV_PREFIXES)


def spawn_detached(args: list[str], env_prefixes: tuple[str, ...]) -> None:
    """`python ARGS` in the background: its own session, stdio on /dev/null, no signal blocked,
    only the environment variables whose names start with one of env_prefixes. It is not
    waited for: it outlives this command (a zombie only until the command exits)."""
    os.posix_spawn(
        sys.executable,
        [sys.executable, *args],
        {k: v for k, v in os.environ.items() if k.startswith(env_prefixes)},
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ],
        setsid=True,
        setsigmask=(),
    )


def claim_socket_folder(path: Path) -> tuple[int, TextIO] | None:
    """For the process that will serve on `path`: the lock beside it (held while it lives: one
    process per socket name) and its log, opened afresh; None if another one holds the lock."""
    directory = private_dir(path.parent)
    stem = path.name.removesuffix(".sock")
    lock = os.open(directory / f"{stem}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return None  # another one of this version is starting or serving
    log_fd = os.open(directory / f"{stem}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    return lock, os.fdopen(log_fd, "w", encoding="utf-8")


class _Lines:
    """Reply lines from the server, each bounded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> str | None:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_REPLY:
                return None
            chunk = self.sock.recv(MAX_REPLY)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("ascii", "replace")


def request_bytes(print_: str) -> bytes:
    umask = os.umask(0o077)
    os.umask(umask)
    return json.dumps(
        {"fingerprint": print_, "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}
    ).encode()


def exit_code(status: int) -> int:
    """The child's wait status as our own exit: its code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        sys.stdout.flush()
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)


def serve() -> int | None:
    """The command's exit code once the server's child has run it, or None to run it here."""
    try:
        print_ = fingerprint()
        path = socket_path(private_dir(runtime_dir()), print_)
        payload = request_bytes(print_)
    except (OSError, ForkServerUnavailable) as exc:
        debug(f"not used: {exc}")
        return None
    if len(payload) > MAX_REQUEST:
        debug("not used: the environment and arguments are too large to pass")
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            debug(f"no server at {path} ({exc.strerror}); starting one for the next command")
            try:
                start_server(path, print_)
            except OSError as spawn_exc:
                debug(f"could not start the server: {spawn_exc}")
            return None
        if peer_uid(sock) != os.getuid():
            debug(f"not used: {path} is served by another user")
            return None
        return _conversation(sock, payload)
    except OSError as exc:
        debug(f"not used: {exc}")
        return None
    finally:
        sock.close()


def _conversation(sock: socket.socket, payload: bytes) -> int | None:
    # Signals wait (blocked) until the child's pid is known, then go to it; if the server
    # refuses, the old handlers are back before they are delivered here.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
    old_handlers = {}
    try:
        socket.send_fds(sock, [struct.pack("!Q", len(payload))], [0, 1, 2])
        sock.sendall(payload)
        lines = _Lines(sock)
        first = lines.next()
        if first is None or not first.startswith("P ") or not first[2:].isdigit():
            debug(f"not used: the server answered {first!r}")
            return None
        child = int(first[2:])

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

        def suspend(_signum: int, _frame: object) -> None:
            # The child is in the server's process group, not our terminal's: the
            # terminal's SIGTSTP reaches only us. SIGSTOP, not SIGTSTP: a process group
            # with no parent in a session ignores the terminal stop signals.
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
            signal.signal(signal.SIGTSTP, suspend)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)

        for sig in FORWARDED:
            old_handlers[sig] = signal.signal(sig, forward)
        old_handlers[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, suspend)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        # From here the command runs in the child: whatever happens, it must not run here too.
        try:
            last = lines.next()
        except OSError:
            last = None
        if last is None or not last.startswith("S ") or not last[2:].isdigit():
            print(f"distproc: the fork-server lost command pid {child} (its status is unknown)", file=sys.stderr)
            return 4
        return exit_code(int(last[2:]))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
