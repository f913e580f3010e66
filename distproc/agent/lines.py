"""Lines from the coordinator on stdin, each wait bounded.

The claiming agent holds one conversation with the coordinator for the
whole job (cli.serve): requests arrive as JSON lines, and while it follows
the run, the coordinator's pings arrive as empty lines on the same stream.
One reader serves both, so no byte meant for the next request is consumed
by the ping watcher.
"""

from __future__ import annotations

import os
import select
import time
from typing import Optional


class StdinLines:
    """Lines read from a file descriptor, with a timeout per wait."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.eof = False
        #: When input last arrived (time.monotonic()), or the reader was made.
        self.last_input = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since input last arrived."""
        return time.monotonic() - self.last_input

    def readline(self, timeout: Optional[float], wake: Optional[int] = None) -> Optional[bytes]:
        """The next line with its newline (at end of input, what is left); b"" once
        input has ended; None if no whole line came within `timeout` seconds, or
        when the file descriptor `wake` turned readable first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            cut = self._buffer.find(b"\n")
            if cut >= 0:
                line, self._buffer = self._buffer[: cut + 1], self._buffer[cut + 1 :]
                return line
            if self.eof:
                line, self._buffer = self._buffer, b""
                return line
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self.fd] if wake is None else [self.fd, wake], [], [], wait)
            except (OSError, ValueError):
                self.eof = True
                continue
            if self.fd not in ready:
                return None
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                chunk = b""
            self.last_input = time.monotonic()
            if chunk:
                self._buffer += chunk
            else:
                self.eof = True

    def unread(self, line: bytes) -> None:
        """Give a line back: the next readline returns it first."""
        self._buffer = line + self._buffer
