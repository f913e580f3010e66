"""SSH hosts, through asyncssh: the only module that imports it.

One connection per host carries every step of a job, each step a channel.
Host keys are always verified: against the inventory's known_hosts file when
it names one, else the user's ~/.ssh/known_hosts; ~/.ssh/config is honoured.
asyncssh's exceptions become distproc's here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._libsearch import quick_library_lookup

with quick_library_lookup():
    import asyncssh

import structlog

from ...errors import ConnectionError_, HostKeyError
from . import kept
from .agentsocket import AgentSocketChannel
from .base import Channel, CommandResult, Transport, cancel_quietly, collect_tail

log = structlog.get_logger("distproc")

# asyncssh offers chacha20-poly1305 first, and computes it with four calls into
# `cryptography` per packet (a new cipher object each time): it was a fifth of the
# coordinator's CPU. AES-GCM is one call per packet (AES-NI where the CPU has it).
# Both are OpenSSH defaults; the rest of asyncssh's list follows, so a server
# without AES-GCM still gets chacha20-poly1305.
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
# Unanswered keepalives before a connection counts as dead. asyncssh drops it at
# the keepalive after this many unanswered, so 3 to 4 intervals after the last packet.
KEEPALIVE_COUNT_MAX = 3
#: What reading or writing a channel's streams may raise when its connection goes.
STREAM_ERRORS: tuple[type[BaseException], ...] = (asyncssh.Error, OSError, BrokenPipeError)


@functools.lru_cache(maxsize=8)
def _parsed_known_hosts(path: str, mtime_ns: int, size: int) -> asyncssh.SSHKnownHosts:
    """A known_hosts file parsed once (again only if it changes), not once per connection.

    Every host of an inventory usually names the same file, and given its path
    asyncssh parses all of it for each connection: 64 hosts cost 0.8 ms of CPU
    each, 1,000 hosts a million entries in all.
    """
    return asyncssh.read_known_hosts(path)


def _known_hosts(path: str) -> asyncssh.SSHKnownHosts | str:
    try:
        st = os.stat(path)
    except OSError:
        return path  # asyncssh reports it as before
    return _parsed_known_hosts(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _loaded_keys(path: str, mtime_ns: int) -> tuple[asyncssh.SSHKeyPair, ...]:
    return tuple(asyncssh.load_keypairs([path]))


def _client_keys(path: str) -> tuple[asyncssh.SSHKeyPair, ...] | tuple[str]:
    """The key file (and its -cert.pub, as asyncssh pairs them) loaded once; else the path, for asyncssh to report."""
    try:
        return _loaded_keys(path, os.stat(path).st_mtime_ns)
    except (OSError, ValueError, asyncssh.Error):  # unreadable, encrypted, not a key: as before
        return (path,)


# Prepared connection options, by everything that goes into them.
_OPTIONS: dict[tuple[Any, ...], asyncssh.SSHClientConnectionOptions] = {}


@functools.cache
def _ssh_config_may_choose_ciphers() -> bool:
    """Whether ~/.ssh/config (the one file asyncssh reads) names ciphers, or includes files that might."""
    try:
        text = Path("~/.ssh/config").expanduser().read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"(?im)^\s*(ciphers|include|match)\b", text) is not None


@dataclass(frozen=True, slots=True)
class SSHTarget:
    """Everything needed to reach one host."""

    name: str
    address: str
    port: int
    user: str | None
    key_file: str | None
    known_hosts: str | None
    connect_timeout: float = 15.0
    attempts: int = 3
    #: Seconds between keepalives, sent after this long without a packet from the
    #: host; three unanswered ones drop the connection, so a host whose network is
    #: cut is noticed 3 to 4 intervals after it was last heard, even while nothing
    #: else is sent (at the coordinator's window/8, within half the reconnect window).
    keepalive_interval: float = 15.0


def _connect_failure(exc: BaseException) -> str:
    """Why a connection could not be made, in words a user can act on."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there (is sshd running?)"
    if isinstance(exc, TimeoutError):
        return "no answer (host down, or a firewall drops the packets)"
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


class _SSHChannel(Channel):
    def __init__(self, argv: tuple[str, ...], process: Any, transport: SSHTransport) -> None:
        self._argv = argv
        self._process = process
        self._transport = transport
        self._stderr = asyncio.ensure_future(collect_tail(process.stderr))

    async def write(self, data: bytes) -> None:
        try:
            self._process.stdin.write(data)
            await self._process.stdin.drain()
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            raise self._transport.lost(exc) from exc

    async def close_stdin(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._process.stdin.write_eof()

    async def read(self, size: int = 65536) -> bytes:
        try:
            data: bytes = await self._process.stdout.read(size)
        except (asyncssh.Error, OSError) as exc:
            raise self._transport.lost(exc) from exc
        return data

    async def readline(self) -> bytes:
        try:
            data: bytes = await self._process.stdout.readline()
        except (asyncssh.Error, OSError) as exc:
            raise self._transport.lost(exc) from exc
        return data

    async def wait(self) -> CommandResult:
        try:
            stdout: bytes = await self._process.stdout.read()
            completed = await self._process.wait()
            stderr = await self._stderr
        except (asyncssh.Error, OSError) as exc:
            raise self._transport.lost(exc) from exc
        return CommandResult(
            self._argv,
            completed.exit_status if completed.exit_signal is None else None,
            completed.exit_signal[0] if completed.exit_signal else None,
            stdout,
            stderr,
        )

    def abort(self) -> None:
        cancel_quietly(self._stderr)
        self._process.close()


class SSHTransport(Transport):
    """Commands on one host over one reused SSH connection."""

    forwards_sockets = True

    def __init__(self, target: SSHTarget) -> None:
        self.name = target.name
        self.target = target
        self._conn: asyncssh.SSHClientConnection | None = None
        # Set once the host's sshd refused to forward to a socket (see open_socket).
        self._no_sockets = False

    def _options(self) -> asyncssh.SSHClientConnectionOptions:
        t = self.target
        known_hosts = _known_hosts(t.known_hosts) if t.known_hosts else None
        client_keys = _client_keys(t.key_file) if t.key_file else None
        # Hosts of one inventory mostly share all of these: asyncssh prepares them
        # (reading key files, ~/.ssh/config) once per distinct set, not once per host.
        key = (t.port, t.user, t.connect_timeout, t.keepalive_interval, client_keys, known_hosts)
        options = _OPTIONS.get(key)
        if options is None:
            kwargs: dict[str, Any] = {
                "port": t.port,
                "connect_timeout": t.connect_timeout,
                "keepalive_interval": t.keepalive_interval,
                "keepalive_count_max": KEEPALIVE_COUNT_MAX,
                # Never forward the user's agent to hosts that run other people's images.
                "agent_forwarding": False,
            }
            if t.user:
                kwargs["username"] = t.user
            if client_keys is not None:
                kwargs["client_keys"] = list(client_keys)  # a tuple would read as (key, certificate)
            if known_hosts is not None:
                kwargs["known_hosts"] = known_hosts
            if not _ssh_config_may_choose_ciphers():
                kwargs["encryption_algs"] = PREFERRED_CIPHERS
            options = _OPTIONS[key] = asyncssh.SSHClientConnectionOptions(**kwargs)
        return options

    async def connect(self) -> None:
        if self._conn is not None:
            return
        t = self.target
        if t.known_hosts and not Path(t.known_hosts).is_file():
            raise HostKeyError(t.name, f"known_hosts file {t.known_hosts} (distproc_known_hosts) does not exist")
        delay = 0.5
        for attempt in range(1, t.attempts + 1):
            try:
                self._conn = await asyncssh.connect(t.address, options=self._options())
                return
            except asyncssh.HostKeyNotVerifiable as exc:
                where = t.known_hosts or "~/.ssh/known_hosts"
                raise HostKeyError(
                    t.name,
                    f"host key of {t.address}:{t.port} is not trusted ({exc.reason}). "
                    f"Check the host's fingerprint, then add its key to {where}, e.g. "
                    f"`ssh-keyscan -p {t.port} {t.address} >> {where}`; "
                    "or name a known_hosts file with distproc_known_hosts in the inventory",
                ) from exc
            except asyncssh.PermissionDenied as exc:
                raise ConnectionError_(
                    t.name,
                    f"authentication failed as {t.user or 'the default user'} ({exc.reason}); "
                    "check ansible_user and ansible_ssh_private_key_file",
                ) from exc
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                if attempt == t.attempts:
                    reason = _connect_failure(exc)
                    raise ConnectionError_(
                        t.name, f"{t.address}:{t.port}: {reason} (after {attempt} attempts)"
                    ) from exc
                await asyncio.sleep(delay)
                delay *= 2

    async def reachable(self) -> None:
        # With a keeper serving, a warm host's first step (the claim) rides on its kept
        # connection: this transport connects only if a step needs it (open_socket's fallback,
        # an exec channel), and an unreachable host is reported by that connect.
        if self._conn is None and kept.wanted() and kept.serving():
            return
        await self.connect()

    def lost(self, exc: BaseException) -> ConnectionError_:
        self._conn = None
        return ConnectionError_(self.name, f"connection lost: {exc}")

    def _relay_lost(self, exc: BaseException) -> ConnectionError_:
        return ConnectionError_(self.name, f"connection lost (kept connection): {exc}")

    async def open(self, argv: Sequence[str]) -> Channel:
        await self.connect()
        assert self._conn is not None
        args = tuple(argv)
        try:
            process = await self._conn.create_process(shlex.join(args), encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise self.lost(exc) from exc
        return _SSHChannel(args, process, self)

    async def open_socket(self, path: str, argv: Sequence[str]) -> Channel | None:
        """sshd's `direct-streamlocal` channel to a Unix socket on the host: sshd starts no process.

        A host with nothing listening there refuses the channel: None. One whose
        sshd forbids it (AllowStreamLocalForwarding no, or DisableForwarding)
        refuses it as "administratively prohibited": None, and this connection
        does not ask again.
        """
        if self._no_sockets:
            return None
        if kept.wanted():
            # A relayed channel that breaks says so without dropping this transport's own connection.
            relayed = await kept.open_socket(dataclasses.asdict(self.target), path, argv, self._relay_lost)
            if not isinstance(relayed, kept.Unavailable):
                return relayed
        streams = await self.open_stream(path)
        if streams is None:
            return None
        reader, writer = streams
        return AgentSocketChannel(tuple(argv), reader, writer, self.lost, STREAM_ERRORS)

    async def open_stream(self, path: str) -> tuple[Any, Any] | None:
        """The reader and writer of a `direct-streamlocal` channel to `path`; None where the host refuses it."""
        if self._no_sockets:
            return None
        await self.connect()
        assert self._conn is not None
        try:
            return await self._conn.open_unix_connection(path)
        except asyncssh.ChannelOpenError as exc:
            if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                self._no_sockets = True
            log.debug("warm agent not reached", host=self.name, path=path, reason=exc.reason)
            return None
        except (asyncssh.Error, OSError) as exc:
            raise self.lost(exc) from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()
