"""A command's channels over SSH connections kept between commands (with DISTPROC_FORKSERVER=1).

The command's side of keeper.py (which says why and how): ask the user's
keeper for a channel to a Unix socket on a host (the warm agent's) and get a
relayed byte stream, or UNAVAILABLE, and the command goes on over its own
connection; start a keeper when there is none. It imports nothing of
asyncssh's, and the transport (ssh.py) imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import ConnectionError_
from ...forkserver import client
from .agentsocket import AgentSocketChannel
from .base import Channel


class Unavailable:
    """open_socket's answer when the keeper cannot be used: go on over the command's own connection."""


UNAVAILABLE = Unavailable()
#: A request is one JSON line of this size at most.
MAX_REQUEST = 64 * 1024
#: How long a command waits for the keeper's answer (it may be connecting to the host meanwhile).
ANSWER_SECONDS = 60.0
DEFAULT_IDLE_SECONDS = 600.0
#: What reading or writing a relayed stream may raise when its other end goes.
STREAM_ERRORS = (OSError, ConnectionError, BrokenPipeError, asyncio.IncompleteReadError)

#: What the keeper's environment keeps of the command's that starts it: as the fork-server's,
#: plus the SSH agent (its connections authenticate as the command's would; a command with
#: another agent is not served). No credentials: it needs none.
_KEEPER_ENV_PREFIXES = (
    "PYTHON",
    "LANG",
    "LC_",
    "DISTPROC_FORKSERVER",
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "SSH_AUTH_SOCK",
)
# Once per command: a keeper is started at most once, however many hosts find none.
_started = False


def wanted() -> bool:
    """The keeper is used along with the fork-server (DISTPROC_FORKSERVER=1)."""
    return os.environ.get("DISTPROC_FORKSERVER") == "1"


def idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("DISTPROC_FORKSERVER_IDLE_SECONDS", DEFAULT_IDLE_SECONDS)))
    except ValueError:
        return DEFAULT_IDLE_SECONDS


def socket_path() -> Path | None:
    """Where this version's keeper listens; None where no private folder can be had.

    Worked out once per runtime folder in a process (every host of a job asks, and the
    fingerprint stats every source file: 0.4 ms a time); the sources this process runs
    do not change while it runs, whatever happens to the files.
    """
    runtime = client.runtime_dir()
    if runtime not in _socket_paths:
        try:
            path = client.private_dir(runtime) / f"keeper-{client.fingerprint()}.sock"
        except (OSError, client.ForkServerUnavailable):
            return None  # not kept: the folder may be put right meanwhile
        _socket_paths[runtime] = path if len(os.fsencode(path)) <= client.MAX_SOCKET_PATH else None
    return _socket_paths[runtime]


_socket_paths: dict[Path, Path | None] = {}


def serving() -> bool:
    """Whether a keeper's socket is there to ask (it may still refuse; then the command connects)."""
    path = socket_path()
    return path is not None and path.exists()


# The command's side.


async def open_socket(
    target: Mapping[str, Any], path: str, argv: Sequence[str], lost: Callable[[BaseException], ConnectionError_]
) -> Channel | Unavailable | None:
    """A channel to `path` on the host of `target` (an SSHTarget's fields) relayed by the keeper: a
    Channel, None where the host refuses it (as SSHTransport.open_socket), or UNAVAILABLE to go on
    without the keeper."""
    where = socket_path()
    if where is None:
        return UNAVAILABLE
    try:
        reader, writer = await asyncio.open_unix_connection(str(where), limit=MAX_REQUEST)
    except (FileNotFoundError, ConnectionRefusedError):
        _start(where)
        return UNAVAILABLE
    except OSError:
        return UNAVAILABLE
    try:
        if client.peer_uid(writer.get_extra_info("socket")) != os.getuid():
            writer.close()
            return UNAVAILABLE
        request = {"target": dict(target), "socket": path, "agent": os.environ.get("SSH_AUTH_SOCK")}
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), ANSWER_SECONDS)
        answer = json.loads(line) if line.strip() else None
    except (*STREAM_ERRORS, TimeoutError, ValueError):
        writer.close()
        return UNAVAILABLE
    if not isinstance(answer, dict) or answer.get("refused"):
        writer.close()
        return None if isinstance(answer, dict) else UNAVAILABLE
    if not answer.get("ok"):
        writer.close()
        return UNAVAILABLE
    return AgentSocketChannel(tuple(argv), reader, writer, lost, STREAM_ERRORS)


def _start(where: Path) -> None:
    """The keeper in the background, once per command."""
    global _started
    if _started:
        return
    _started = True
    with contextlib.suppress(OSError):
        client.spawn_detached(["-m", "distproc.hosts.transport.keeper", str(where)], _KEEPER_ENV_PREFIXES)
