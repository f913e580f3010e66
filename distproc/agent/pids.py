"""Whether a process is alive: shared by the runner, the lease and the follower.

A module of its own because lease.py needs it and runner.py imports lease.py.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True
