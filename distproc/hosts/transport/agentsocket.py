"""A channel to the host's warm agent (agent/warm.py) over a forwarded Unix socket.

An SSH exec channel carries a command's stdout, its stderr and its exit status
apart; a stream to a socket carries bytes only. The warm agent therefore ends
each call with one trailer: a NUL byte (never in the agent's JSON lines), then
{"exit": N, "stderr": "..."}. This channel hands out what comes before it as
the command's stdout, and reads the trailer as the command's end.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from ...errors import ConnectionError_
from .base import STDERR_TAIL, Channel, CommandResult

TRAILER = b"\0"
# The trailer is a few KiB at most (the stderr tail); bound what is kept of it.
MAX_TRAILER = 4 * STDERR_TAIL


class AgentSocketChannel(Channel):
    """One call of the warm agent on a stream (asyncssh's SSHReader/SSHWriter of a direct-streamlocal channel)."""

    def __init__(
        self,
        argv: tuple[str, ...],
        reader: Any,
        writer: Any,
        lost: Callable[[BaseException], ConnectionError_],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._argv = argv
        self._reader = reader
        self._writer = writer
        self._lost = lost
        self._errors = errors
        self._buffer = b""
        self._trailer: bytearray | None = None  # once the NUL came: what follows it
        self._eof = False

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except self._errors as exc:
            raise self._lost(exc) from exc

    async def close_stdin(self) -> None:
        with contextlib.suppress(*self._errors):
            self._writer.write_eof()

    async def _fill(self) -> None:
        """Read one more chunk, sorting it into stdout and trailer."""
        try:
            chunk: bytes = await self._reader.read(65536)
        except self._errors as exc:
            raise self._lost(exc) from exc
        if not chunk:
            self._eof = True
            return
        if self._trailer is not None:
            if len(self._trailer) < MAX_TRAILER:
                self._trailer += chunk
            return
        cut = chunk.find(TRAILER)
        if cut < 0:
            self._buffer += chunk
        else:
            self._buffer += chunk[:cut]
            self._trailer = bytearray(chunk[cut + 1 :])

    def _done(self) -> bool:
        return self._eof or self._trailer is not None

    async def read(self, size: int = 65536) -> bytes:
        while not self._buffer and not self._done():
            await self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def readline(self) -> bytes:
        while True:
            cut = self._buffer.find(b"\n")
            if cut >= 0:
                line, self._buffer = self._buffer[: cut + 1], self._buffer[cut + 1 :]
                return line
            if self._done():
                line, self._buffer = self._buffer, b""
                return line
            await self._fill()

    async def wait(self) -> CommandResult:
        while not self._eof:
            await self._fill()
        stdout, self._buffer = self._buffer, b""
        try:
            doc = json.loads(bytes(self._trailer or b"")) if self._trailer is not None else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("exit"), int):
            return CommandResult(self._argv, None, None, stdout, b"the warm agent's call ended without its status")
        stderr = str(doc.get("stderr", "")).encode()[-STDERR_TAIL:]
        return CommandResult(self._argv, doc["exit"], None, stdout, stderr)

    def abort(self) -> None:
        with contextlib.suppress(*self._errors):
            self._writer.close()
