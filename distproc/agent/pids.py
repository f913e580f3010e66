"""Whether a process is alive: shared by the runner, the lease and the follower.

A module of its own because lease.py needs it and runner.py imports lease.py.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs. A child of this process that has ended (a zombie, which
    kill(pid, 0) still finds) is reaped here and is not alive: the process that launched
    a run (runner.launch, one fork) and then follows it asks exactly this."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass  # not our child (ChildProcessError): ask the kernel whether it exists
    else:
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True
