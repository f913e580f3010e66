"""The host lease on its own (distproc/agent/lease.py), in a real work folder: an old lease
is broken only when no agent of its job is alive (agent/pids.py says which are)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from distproc.agent import lease


def _old_lease(work: Path, job: str) -> None:
    assert lease.acquire(str(work), job, "coordinator-a") == {"leased": True}
    os.utime(work / "lease.json", (1.0, 1.0))  # last renewed in 1970: stale by age


def _agent_pid_file(work: Path, job: str, pid: int) -> None:
    algo = work / "jobs" / job / "algo-1"
    algo.mkdir(parents=True)
    (algo / "agent.pid").write_text(f"{pid}\n")


def test_an_old_lease_whose_agent_still_runs_is_kept(tmp_path: Path) -> None:
    _old_lease(tmp_path, "j-old")
    _agent_pid_file(tmp_path, "j-old", os.getpid())  # this process: alive
    answer = lease.acquire(str(tmp_path), "j-new", "coordinator-b")
    assert answer["busy"]["job"] == "j-old"


def test_an_old_lease_whose_agent_is_gone_is_broken(tmp_path: Path) -> None:
    _old_lease(tmp_path, "j-old")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    _agent_pid_file(tmp_path, "j-old", int(done.stdout))  # exited and reaped: no such process
    answer = lease.acquire(str(tmp_path), "j-new", "coordinator-b")
    assert answer["leased"] is True and answer["broke"]["job"] == "j-old"
