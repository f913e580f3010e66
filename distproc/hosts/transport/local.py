"""`ansible_connection: local`: commands run on this machine, no SSH."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence

from ...errors import ConnectionError_
from .base import Channel, CommandResult, Transport, cancel_quietly, collect_tail


class _LocalChannel(Channel):
    def __init__(self, argv: tuple[str, ...], proc: asyncio.subprocess.Process) -> None:
        self._argv = argv
        self._proc = proc
        assert proc.stderr is not None
        self._stderr = asyncio.ensure_future(collect_tail(proc.stderr))

    async def write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        await self._proc.stdin.drain()

    async def close_stdin(self) -> None:
        assert self._proc.stdin is not None
        if not self._proc.stdin.is_closing():
            self._proc.stdin.close()

    async def read(self, size: int = 65536) -> bytes:
        assert self._proc.stdout is not None
        return await self._proc.stdout.read(size)

    async def readline(self) -> bytes:
        assert self._proc.stdout is not None
        return await self._proc.stdout.readline()

    async def wait(self) -> CommandResult:
        assert self._proc.stdout is not None
        stdout = await self._proc.stdout.read()
        code = await self._proc.wait()
        stderr = await self._stderr
        sig = None
        if code < 0:
            sig = signal.Signals(-code).name
        return CommandResult(self._argv, code if code >= 0 else None, sig, stdout, stderr)

    def abort(self) -> None:
        cancel_quietly(self._stderr)
        if self._proc.returncode is None:
            self._proc.kill()


class LocalTransport(Transport):
    """Runs argv directly as child processes of the coordinator."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def connect(self) -> None:
        return None

    async def open(self, argv: Sequence[str]) -> Channel:
        args = tuple(argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Our own session: a Ctrl-C at the terminal reaches the
                # coordinator, which stops the job in order, not every child.
                start_new_session=True,
                env=os.environ.copy(),
            )
        except OSError as exc:
            raise ConnectionError_(self.name, f"cannot start {args[0]}: {exc}") from exc
        return _LocalChannel(args, proc)

    async def close(self) -> None:
        return None
