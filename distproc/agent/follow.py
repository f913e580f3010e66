"""Stream a run's events and container output as JSON lines, from given offsets.

The coordinator reads this over an SSH channel. Offsets make it resumable:
after a lost connection the coordinator asks again from where it stopped, so
nothing is shown twice or lost. Container output travels as text decoded with
surrogateescape, which turns back into the exact bytes on the other side.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any, Dict, Tuple

from .files import read_json
from .runner import agent_pid, pid_alive
from .task import JobDir

POLL_SECONDS = 0.2
CHUNK = 64 * 1024


def _read_from(path: str, offset: int) -> Tuple[bytes, int]:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(CHUNK)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


def _emit(out: IO[str], doc: Dict[str, Any]) -> None:
    out.write(json.dumps(doc, sort_keys=True) + "\n")
    out.flush()


def follow(jobdir: JobDir, events_offset: int = 0, log_offset: int = 0, out: IO[str] = sys.stdout) -> int:
    """Emit new events and output until the run has finished; 0 then, 3 if the run is lost."""
    lost_checks = 0
    while True:
        finished = os.path.exists(jobdir.result)
        progressed = True
        while progressed:
            progressed = False
            data, new_offset = _read_from(jobdir.events, events_offset)
            # Only whole lines: a line still being written is read next time.
            cut = data.rfind(b"\n") + 1
            if cut:
                for line in data[:cut].splitlines():
                    events_offset += len(line) + 1
                    try:
                        event = json.loads(line.decode("utf-8"))
                    except ValueError:
                        continue
                    _emit(out, {"stream": "event", "offset": events_offset, "event": event})
                progressed = True
            data, new_offset = _read_from(jobdir.log, log_offset)
            if data:
                log_offset = new_offset
                _emit(out, {"stream": "log", "offset": log_offset, "data": data.decode("utf-8", "surrogateescape")})
                progressed = True
        if finished:
            _emit(out, {"stream": "result", "result": read_json(jobdir.result)})
            return 0
        pid = agent_pid(jobdir)
        if pid is None or not pid_alive(pid):
            # The result may land between our two checks; look a few more times.
            lost_checks += 1
            if lost_checks > 5:
                _emit(out, {"stream": "lost", "pid": pid})
                return 3
        else:
            lost_checks = 0
        time.sleep(POLL_SECONDS)
