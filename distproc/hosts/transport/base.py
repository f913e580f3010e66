"""What orchestration needs from a host connection, whatever carries it.

A Transport runs argv lists on one host. Each command is a Channel with
byte streams, so the same code drives SSH hosts and `ansible_connection:
local` hosts, and tests of orchestration need no SSH server.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ...agent.answers import ErrorAnswer
from ...agent.protocol import ProtocolError
from ...errors import AgentError, RemoteCommandError

A = TypeVar("A")

STDERR_TAIL = 8192


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended, with what it printed."""

    argv: tuple[str, ...]
    exit_status: int | None
    signal: str | None
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class Channel(abc.ABC):
    """One running command on a host, with stdin, stdout and a collected stderr."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send bytes to the command's stdin, waiting while the pipe is full."""

    @abc.abstractmethod
    async def close_stdin(self) -> None: ...

    @abc.abstractmethod
    async def read(self, size: int = 65536) -> bytes:
        """Up to size bytes of stdout; b'' at its end."""

    @abc.abstractmethod
    async def readline(self) -> bytes: ...

    @abc.abstractmethod
    async def wait(self) -> CommandResult:
        """Wait for the command to end; stdout holds what was not read."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Stop waiting for this command and drop the channel."""


class Transport(abc.ABC):
    """A way of running commands on one host."""

    #: The inventory name of the host, for messages.
    name: str
    #: Whether open_socket can reach a Unix socket on the host (and so a warm agent is worth starting).
    forwards_sockets: bool = False

    @abc.abstractmethod
    async def connect(self) -> None: ...

    async def reachable(self) -> None:
        """Before a job's first step on the host: connect, unless the first step is served
        without this transport's own connection (SSH's kept connections: keeper.py)."""
        await self.connect()

    @abc.abstractmethod
    async def open(self, argv: Sequence[str]) -> Channel: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def open_socket(self, path: str, argv: Sequence[str]) -> Channel | None:
        """A channel to a Unix socket on the host (the warm agent's), carrying the call `argv`;
        None where this transport cannot reach one or the host refuses (the caller runs argv
        as a command instead). Only SSH forwards to sockets; the others keep the cold path."""
        return None

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> CommandResult:
        """Run a command to its end; with check, a non-zero exit raises RemoteCommandError."""
        channel = await self.open(argv)
        try:
            if input:
                await channel.write(input)
            await channel.close_stdin()
            result = await channel.wait()
        except BaseException:
            channel.abort()
            raise
        if check and not result.ok:
            raise RemoteCommandError(self.name, result.argv, result.exit_status, result.stderr_text(), result.signal)
        return result

    async def run_json(self, argv: Sequence[str], parse: Callable[[Any, str], A], *, input: bytes | None = None) -> A:
        """Run an agent verb that answers with one JSON object, read as its protocol type by `parse`.

        An error answer (or a failed command) raises AgentError with the agent's
        message; an answer that does not fit the protocol raises AgentError naming the field.
        """
        result = await self.run(argv, input=input, check=False)
        doc = parse_json_reply(self.name, result)
        error = ErrorAnswer.in_answer(doc)
        if error is not None or not result.ok:
            raise AgentError(f"{self.name}: {(error.error if error else '') or result.stderr_text().strip()[-800:]}")
        return read_answer(self.name, parse, doc, argv[2] if len(argv) > 2 else "answer")


def read_answer(host: str, parse: Callable[[Any, str], A], doc: Any, what: str) -> A:
    """An agent's answer as its protocol type; one that does not fit is the agent's error, naming the field."""
    try:
        return parse(doc, what)
    except ProtocolError as exc:
        raise AgentError(f"{host}: the agent's answer does not fit the protocol: {exc}") from exc


def parse_json_reply(host: str, result: CommandResult) -> dict[str, Any]:
    lines = result.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        status = f"signal {result.signal}" if result.signal else f"exit status {result.exit_status}"
        raise AgentError(
            f"{host}: agent gave no JSON answer to {result.argv[2:4] if len(result.argv) > 3 else result.argv}"
            f" ({status}): {result.stderr_text().strip()[-800:] or result.stdout[-400:]!r}"
        )
    return doc


async def collect_tail(reader: Any, limit: int = STDERR_TAIL) -> bytes:
    """Read a stream to its end, keeping only its last `limit` bytes."""
    kept = bytearray()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return bytes(kept)
        kept += chunk
        if len(kept) > limit:
            del kept[: len(kept) - limit]


def cancel_quietly(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
