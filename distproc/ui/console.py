"""Container output as it arrives: prefixed with algo-K on the console, and kept
byte for byte in one log file per host in the job store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO


class OutputSink:
    """Writes each host's output to its log file and, line by line, to the console."""

    def __init__(self, log_paths: dict[str, Path], console: IO[str] | None = sys.stdout) -> None:
        self._console = console
        self._partial: dict[str, bytes] = {}
        self._files = {}
        for algo, path in log_paths.items():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._files[algo] = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._width = max((len(a) for a in log_paths), default=0)

    def write(self, algo: str, data: bytes) -> None:
        log = self._files.get(algo)
        if log is not None:
            log.write(data)
            log.flush()
        if self._console is None:
            return
        pending = self._partial.get(algo, b"") + data
        *lines, rest = pending.split(b"\n")
        self._partial[algo] = rest
        for line in lines:
            self._print(algo, line)

    def _print(self, algo: str, line: bytes) -> None:
        assert self._console is not None
        text = line.decode("utf-8", "replace").rstrip("\r")
        self._console.write(f"[{algo.ljust(self._width)}] {text}\n")
        self._console.flush()

    def flush(self, algo: str) -> None:
        rest = self._partial.pop(algo, b"")
        if rest and self._console is not None:
            self._print(algo, rest)

    def close(self) -> None:
        for algo in list(self._partial):
            self.flush(algo)
        for fh in self._files.values():
            fh.close()
        self._files.clear()
