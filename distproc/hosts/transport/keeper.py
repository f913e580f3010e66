"""Each host's SSH connection kept open between `distproc` commands (with DISTPROC_FORKSERVER=1).

Every command used to open its own SSH connection to every host: the key
exchange, authentication and session cost the coordinator a few milliseconds
of CPU and about seven round trips per host, and each host's sshd about 20 ms
of CPU (it re-executes itself for every connection), for every job. With the
opt-in fork-server on, a per-user keeper process holds one connection per
host instead, and a command asks it for its channels to the hosts' warm
agents (agent/warm.py, reached through sshd's `direct-streamlocal`): the
keeper opens each on its connection and relays the bytes between it and the
command's end of a Unix socket. A warm job then costs a host's sshd a
channel, not a connection.

What does not change: host keys are verified as before (the keeper connects
with the command's own target: its known_hosts, key file, user and port; a
host whose key is not trusted is never kept, and the command's own attempt
then says why); only the warm agent's channels are relayed (anything else, a
cold host's agent start, staging, `stop`, goes over the command's own
connection, opened when first needed); a command that ends, however, closes
its relayed channels (the keeper sees its socket close), so the host sees the
same end of a conversation as before.

The keeper's socket lives beside the fork-server's (a 0700 folder of the
user's), is 0600, serves only its own user (SO_PEERCRED), and is named by the
same fingerprint of the installed sources. Whatever goes wrong with it (none
running, a refusal, a connection it cannot make) the command goes on over its
own connection; the first command that finds none starts one in the
background for the next. It exits after DISTPROC_FORKSERVER_IDLE_SECONDS
(default 600) with no channel open, closing its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ...errors import ConnectionError_
from ...forkserver import client
from .kept import MAX_REQUEST, STREAM_ERRORS, idle_seconds
from .ssh import SSHTarget, SSHTransport

RELAY_CHUNK = 65536
#: SSHTarget's fields as a request may give them.
_TARGET_KINDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "address": (str,),
    "port": (int,),
    "user": (str, type(None)),
    "key_file": (str, type(None)),
    "known_hosts": (str, type(None)),
    "connect_timeout": (int, float),
    "attempts": (int,),
    "keepalive_interval": (int, float),
}


class Keeper:
    """One SSHTransport per distinct target, each connected once and kept; channels relayed."""

    def __init__(self, path: Path, log: Any) -> None:
        self.path = path
        self.log = log
        self.transports: dict[tuple[Any, ...], SSHTransport] = {}
        self.locks: dict[tuple[Any, ...], asyncio.Lock] = {}
        self.open_channels = 0
        self.last_active = time.monotonic()
        self.inode = 0

    def note(self, message: str) -> None:
        self.log.write(f"{time.time():.3f} {message}\n")
        self.log.flush()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_channels += 1
        try:
            if client.peer_uid(writer.get_extra_info("socket")) != os.getuid():
                return  # not ours: say nothing
            try:
                line = await asyncio.wait_for(reader.readline(), 5.0)
                request = json.loads(line)
                target, path, agent = self._parse(request)
            except (*STREAM_ERRORS, TimeoutError, ValueError, TypeError, KeyError) as exc:
                self.note(f"bad request: {type(exc).__name__}")
                return
            answer, streams = await self._channel(target, path, agent)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
            if streams is not None:
                await _relay(reader, writer, *streams)
        except STREAM_ERRORS:
            pass
        finally:
            self.open_channels -= 1
            self.last_active = time.monotonic()
            writer.close()

    def _parse(self, request: Any) -> tuple[SSHTarget, str, str | None]:
        doc = request["target"]
        if not isinstance(doc, dict) or set(doc) - set(_TARGET_KINDS):
            raise ValueError("target")
        for name, value in doc.items():
            if not isinstance(value, _TARGET_KINDS[name]) or isinstance(value, bool):
                raise ValueError(name)
        # One attempt here: a host the keeper cannot reach is tried again by the command itself,
        # with its own attempts, and reported in its own words.
        target = dataclasses.replace(SSHTarget(**doc), attempts=1)
        path, agent = request["socket"], request.get("agent")
        if not isinstance(path, str) or not (agent is None or isinstance(agent, str)):
            raise ValueError("socket")
        return target, path, agent

    async def _channel(
        self, target: SSHTarget, path: str, agent: str | None
    ) -> tuple[dict[str, Any], tuple[Any, Any] | None]:
        """The answer to a request, and the channel's streams if it was opened."""
        if agent != os.environ.get("SSH_AUTH_SOCK"):
            return {"error": "another SSH agent than the keeper's"}, None
        key = (*dataclasses.astuple(target)[1:], agent)  # all but the name, which only labels messages
        lock = self.locks.setdefault(key, asyncio.Lock())
        for attempt in (1, 2):
            async with lock:
                transport = self.transports.get(key)
                if transport is None:
                    transport = self.transports[key] = SSHTransport(target)
                    self.note(f"connecting {target.name} {target.address}:{target.port}")
                try:
                    streams = await transport.open_stream(path)
                except ConnectionError_ as exc:
                    # A kept connection that died (the host restarted, keepalives unanswered):
                    # connected again once; a host not reached at all is the command's to report.
                    self.transports.pop(key, None)
                    self.note(f"lost {target.name}: {exc}")
                    if attempt == 2:
                        return {"error": str(exc)}, None
                    continue
                except Exception as exc:  # a host key not trusted, a refused login: the command's own words
                    self.transports.pop(key, None)
                    self.note(f"not kept {target.name}: {type(exc).__name__}")
                    return {"error": type(exc).__name__}, None
            if streams is None:
                return {"refused": True}, None
            self.note(f"channel {target.name} {path}")
            return {"ok": True}, streams
        return {"error": "unreachable"}, None

    async def serve(self, idle: float) -> None:
        server = await asyncio.start_unix_server(self.handle, sock=self._listen(), limit=MAX_REQUEST)
        self.note(f"serving pid={os.getpid()}")
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 1.0)
                if not self._still_ours():
                    self.note("socket gone: exiting")
                    break
                if self.open_channels == 0 and time.monotonic() - self.last_active > idle:
                    self.note("idle: exiting")
                    break
        finally:
            server.close()
            if self._still_ours():
                os.unlink(self.path)
            for transport in self.transports.values():
                with contextlib.suppress(Exception):
                    await transport.close()
            self.note("stopped")

    def _listen(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # stale: we hold the lock, so no live keeper owns it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        listener.listen(128)
        self.inode = os.stat(self.path).st_ino
        return listener

    def _still_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False


async def _relay(
    local_reader: asyncio.StreamReader, local_writer: asyncio.StreamWriter, remote_reader: Any, remote_writer: Any
) -> None:
    """Bytes both ways until both ends have finished; an end's EOF is passed on as EOF."""

    async def pump(src: Any, dst: Any) -> None:
        try:
            while True:
                data = await src.read(RELAY_CHUNK)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
            with contextlib.suppress(Exception):
                dst.write_eof()
        except Exception:
            # One side broke: the other is closed too, as a dropped connection would close both.
            with contextlib.suppress(Exception):
                remote_writer.close()
            with contextlib.suppress(Exception):
                local_writer.close()

    try:
        await asyncio.gather(pump(local_reader, remote_writer), pump(remote_reader, local_writer))
    finally:
        with contextlib.suppress(Exception):
            remote_writer.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m distproc.hosts.transport.keeper SOCKET", file=sys.stderr)
        return 2
    path = Path(argv[1])
    os.chdir("/")
    claimed = client.claim_socket_folder(path)
    if claimed is None:
        return 0  # another keeper of this version is starting or serving
    _lock, log = claimed
    with log:
        for sig in (signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        asyncio.run(Keeper(path, log).serve(idle_seconds()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
