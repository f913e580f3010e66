"""Stream a run's events and container output as JSON lines, from given offsets.

The coordinator reads this over an SSH channel. Offsets make it resumable:
after a lost connection the coordinator asks again from where it stopped, so
nothing is shown twice or lost. Container output travels as text decoded with
surrogateescape, which turns back into the exact bytes on the other side.

The coordinator also writes a line to our stdin every few seconds; each one
touches the job's `watched` file, which is how the runner knows someone is
still following (see runner.py: a job nobody follows is stopped after the
orphan timeout). The other way, a follower with nothing to send says it is
alive every few seconds: the coordinator's reconnect window counts from the
last line it heard.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import IO, Any, Dict, Optional, Tuple

from .dirwatch import DirWatch
from .files import read_json
from .lines import StdinLines
from .runner import agent_pid, pid_alive
from .task import JobDir

POLL_SECONDS = 0.2
# After progress the follower looks again soon, backing off to POLL_SECONDS while
# nothing happens: a short job's end is seen within tens of milliseconds, and a
# quiet long one costs five looks a second.
FIRST_POLL_SECONDS = 0.02
# With inotify the files are read when they change; the timeout is only how
# often the agent's life is checked. MIN_GAP keeps a chatty container's output
# in chunks rather than a read per write.
WATCHED_POLL_SECONDS = 0.5
MIN_GAP_SECONDS = 0.01
CHUNK = 64 * 1024
# With nothing else to send, a follower sends {"stream": "alive"} this often.
ALIVE_SECONDS = 5.0
# A follower that heard no ping for this long (two of the coordinator's, sent
# every 5 s: hostsession.PING_SECONDS) while its run was stopped for want of
# them has nobody at the other end of its channel.
PINGS_MISSED_SECONDS = 10.0
# follow()'s return when that is so: the caller ends its SSH session (cli.py).
UNWATCHED = 4


class _Appended:
    """A file the run appends to, read from an offset: opened once it exists, kept open
    (the run only appends; it never replaces these files), each look one pread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def read_from(self, offset: int) -> Tuple[bytes, int]:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return b"", offset
        data = os.pread(self.fd, CHUNK, offset)
        return data, offset + len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _emit(out: IO[str], doc: Dict[str, Any], flush: bool = True) -> None:
    out.write(json.dumps(doc, sort_keys=True) + "\n")
    if flush:
        out.flush()


class _Pings:
    """The coordinator's pings on stdin, each one noted in the job's `watched` file."""

    def __init__(self, jobdir: JobDir, lines: Optional[StdinLines]) -> None:
        self.path = jobdir.watched
        self.lines = lines
        self.source = lines
        self.started = time.monotonic()
        self.touch()

    def silent_for(self) -> float:
        """Seconds since anything came from the coordinator (or since following began)."""
        if self.source is None:
            return time.monotonic() - self.started
        return min(self.source.silent_for(), time.monotonic() - self.started)

    def touch(self) -> None:
        try:
            with open(self.path, "a"):
                pass
            os.utime(self.path)
        except OSError:
            pass  # the job's folder is gone: the runner is past caring

    def wait(self, seconds: float, wake: Optional[int] = None) -> None:
        """Sleep up to `seconds`, or until `wake` turns readable, taking any pings that arrive meanwhile."""
        if self.lines is None:
            if wake is None:
                time.sleep(seconds)
            else:
                select.select([wake], [], [], seconds)
            return
        line = self.lines.readline(seconds, wake)
        if line is None:
            return
        if not line:
            self.lines = None  # stdin closed: nothing more will come, sleep from now on
            return
        self.touch()
        if line.strip():
            # Not a ping but the coordinator's next request: keep it for the
            # conversation, and take no more pings (none come after it).
            self.lines.unread(line)
            self.lines = None


def follow(
    jobdir: JobDir,
    events_offset: int = 0,
    log_offset: int = 0,
    out: IO[str] = sys.stdout,
    stdin: Optional[IO[bytes]] = None,
    lines: Optional[StdinLines] = None,
) -> int:
    """Emit new events and output until the run has finished; 0 then, 3 if the run is lost,
    UNWATCHED if it finished because nobody followed it, and nobody pinged this follower either.

    Pings come from `lines` (the claiming agent's conversation) or else `stdin`.
    """
    if lines is None and stdin is not None:
        try:
            lines = StdinLines(stdin.fileno())
        except (OSError, ValueError):
            lines = None
    watch = DirWatch.open(jobdir.root)
    pings = _Pings(jobdir, lines)
    try:
        code = _follow(jobdir, events_offset, log_offset, out, pings, watch)
    finally:
        if watch is not None:
            watch.close()
    if code == 0 and pings.silent_for() >= PINGS_MISSED_SECONDS and orphaned(jobdir):
        return UNWATCHED
    return code


def orphaned(jobdir: JobDir) -> bool:
    """Whether the run ended stopped by its orphan timeout (runner.py)."""
    try:
        result = read_json(jobdir.result)
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and bool(result.get("orphaned"))


def _follow(
    jobdir: JobDir, events_offset: int, log_offset: int, out: IO[str], pings: _Pings, watch: Optional[DirWatch]
) -> int:
    events, log = _Appended(jobdir.events), _Appended(jobdir.log)
    try:
        return _follow_files(jobdir, events, log, events_offset, log_offset, out, pings, watch)
    finally:
        events.close()
        log.close()


def _follow_files(
    jobdir: JobDir,
    events: _Appended,
    log: _Appended,
    events_offset: int,
    log_offset: int,
    out: IO[str],
    pings: _Pings,
    watch: Optional[DirWatch],
) -> int:
    lost_checks = 0
    poll = FIRST_POLL_SECONDS
    said = float("-inf")  # when a line last went out
    while True:
        looked = time.monotonic()
        if watch is not None:
            watch.drain()  # what changes from here on wakes the wait below
        finished = os.path.exists(jobdir.result)
        progressed = True
        sent = False  # lines written and not yet flushed
        while progressed:
            progressed = False
            data, new_offset = events.read_from(events_offset)
            # Only whole lines: a line still being written is read next time.
            cut = data.rfind(b"\n") + 1
            if cut:
                for line in data[:cut].splitlines():
                    events_offset += len(line) + 1
                    try:
                        event = json.loads(line.decode("utf-8"))
                    except ValueError:
                        continue
                    # What is read in one look goes out together: one write, one SSH packet.
                    _emit(out, {"stream": "event", "offset": events_offset, "event": event}, flush=False)
                    sent = True
                progressed = True
                poll = FIRST_POLL_SECONDS
            data, new_offset = log.read_from(log_offset)
            if data:
                log_offset = new_offset
                text = data.decode("utf-8", "surrogateescape")
                _emit(out, {"stream": "log", "offset": log_offset, "data": text}, flush=False)
                sent = True
                progressed = True
                poll = FIRST_POLL_SECONDS
            if progressed:
                said = time.monotonic()
        if finished:
            _emit(out, {"stream": "result", "result": read_json(jobdir.result)})  # flushes the rest too
            return 0
        if sent:
            out.flush()
        pid = agent_pid(jobdir)
        if pid is None or not pid_alive(pid):
            # The result may land between our two checks; look a few more times.
            lost_checks += 1
            if lost_checks > 5:
                _emit(out, {"stream": "lost", "pid": pid})
                return 3
        else:
            lost_checks = 0
        if time.monotonic() - said >= ALIVE_SECONDS:
            _emit(out, {"stream": "alive"})
            said = time.monotonic()
        if watch is None:
            pings.wait(poll)
            poll = min(poll * 2, POLL_SECONDS)
            continue
        pings.wait(WATCHED_POLL_SECONDS, watch.fd)
        gap = looked + MIN_GAP_SECONDS - time.monotonic()
        if gap > 0:
            time.sleep(gap)
