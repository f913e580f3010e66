"""The live view of `distproc run` on a terminal: one row per host, kept at
the bottom of the screen while container output and distproc's own messages
scroll above it.

Everything written to the terminal goes through `LiveView.write`, which
erases the block, writes the text, and draws the block again, so the two
never tangle. Rows are cut to the terminal's width: a wrapped row would
throw off the count of lines to erase. Off a terminal none of this is used;
`run` prints plain lines instead.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from typing import IO

# Cursor up N lines, then erase from there to the end of the screen.
_UP = "\x1b[{n}F"
_ERASE_DOWN = "\x1b[J"

#: What each recorded step means for a host's phase column.
PHASE_OF_STEP = {
    "connect_started": "connecting",
    "connected": "installing agent",
    "agent_ready": "agent ready",
    "image_ship_started": "shipping image",
    "image_shipped": "image shipped",
    "staging_started": "staging inputs",
    "inputs_staged": "inputs staged",
    "agent_started": "checking image",
    "image_pull_started": "pulling image",
    "image_ready": "starting",
    "container_started": "running",
    "stopping": "stopping",
    "container_exited": "exited",
    "upload_started": "uploading outputs",
    "outputs_uploaded": "outputs uploaded",
}


@dataclass(frozen=True, slots=True)
class HostRow:
    algo: str
    host: str
    phase: str = "waiting"
    staged_bytes: int | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    status: str | None = None  # Completed / Failed / Stopped once known


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def render_rows(rows: list[HostRow], now: float, width: int) -> list[str]:
    """The block's lines (header first), each at most `width` characters."""
    host_w = max([len("HOST"), *(len(r.host) for r in rows)])
    algo_w = max([len("ALGO"), *(len(r.algo) for r in rows)])
    lines = [f"{'ALGO':<{algo_w}}  {'HOST':<{host_w}}  {'PHASE':<18}  {'STAGED':>10}  {'ELAPSED':>8}  EXIT"]
    for r in rows:
        phase = r.status if r.status else r.phase
        elapsed = "-" if r.started is None else _clock((r.ended or now) - r.started)
        code = "-" if r.exit_code is None else str(r.exit_code)
        lines.append(
            f"{r.algo:<{algo_w}}  {r.host:<{host_w}}  {phase[:18]:<18}  "
            f"{human_bytes(r.staged_bytes):>10}  {elapsed:>8}  {code}"
        )
    return [line[:width] for line in lines]


@dataclass(eq=False)  # hashable by identity: structlog keeps a lock per output stream
class LiveView:
    """A redrawn block of host rows under scrolling text, on one terminal."""

    terminal: IO[str]
    rows: dict[str, HostRow] = field(default_factory=dict)
    #: What the job waits for before it has hosts (Slurm's queue, busy hosts), drawn above the rows.
    waiting_for: str | None = None
    _drawn: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def add_host(self, algo: str, host: str) -> None:
        with self._lock:
            self.rows[algo] = HostRow(algo, host)
            self._redraw()

    def waiting(self, message: str | None) -> None:
        """The job waits (Slurm's reason, busy hosts), or (None) no longer does."""
        with self._lock:
            self.waiting_for = message
            self._redraw()

    def step(self, algo: str, kind: str, **data: object) -> None:
        """A host reached a recorded step (an event kind of the timeline)."""
        with self._lock:
            row = self.rows.get(algo)
            if row is None:
                return
            changes: dict[str, object] = {}
            if kind in PHASE_OF_STEP:
                changes["phase"] = PHASE_OF_STEP[kind]
            if kind == "connect_started" and row.started is None:
                at = data.get("at")
                changes["started"] = at if isinstance(at, float) else time.time()
            if kind == "inputs_staged" and isinstance(data.get("bytes"), int):
                changes["staged_bytes"] = data["bytes"]
            if kind == "container_exited" and isinstance(data.get("exit_code"), int):
                changes["exit_code"] = data["exit_code"]
            self.rows[algo] = replace(row, **changes)  # type: ignore[arg-type]
            self._redraw()

    def staging(self, algo: str, staged_bytes: int) -> None:
        with self._lock:
            if algo in self.rows:
                self.rows[algo] = replace(self.rows[algo], staged_bytes=staged_bytes, phase="staging inputs")
                self._redraw()

    def finished(self, algo: str, status: str, exit_code: int | None) -> None:
        with self._lock:
            if algo in self.rows:
                row = self.rows[algo]
                code = exit_code if exit_code is not None else row.exit_code
                self.rows[algo] = replace(row, status=status, exit_code=code, ended=time.time())
                self._redraw()

    def tick(self) -> None:
        """Redraw, so elapsed times move even when nothing happens."""
        with self._lock:
            self._redraw()

    # A file-like face, so container output and log lines can be written through the view.
    def write(self, text: str) -> int:
        with self._lock:
            self._erase()
            self.terminal.write(text)
            if text.endswith("\n"):
                self._draw()
            self.terminal.flush()
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def isatty(self) -> bool:
        return True

    def close(self) -> None:
        """Leave the last state of the block on the screen."""
        with self._lock:
            self._redraw()
            self._drawn = 0

    def _erase(self) -> None:
        if self._drawn:
            self.terminal.write(_UP.format(n=self._drawn) + _ERASE_DOWN)
            self._drawn = 0

    def _draw(self) -> None:
        if not self.rows and self.waiting_for is None:
            return
        width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
        lines = render_rows(list(self.rows.values()), time.time(), width) if self.rows else []
        if self.waiting_for is not None:
            lines.insert(0, f"queued: {self.waiting_for}"[:width])
        self.terminal.write("".join(line + "\n" for line in lines))
        self._drawn = len(lines)

    def _redraw(self) -> None:
        self._erase()
        self._draw()
        self.terminal.flush()
