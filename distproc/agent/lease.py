"""The host's lease: at most one distproc job on a host (a work folder) at a time.

`<work_dir>/lease.json` is created under an flock of `<work_dir>/lease.lock`,
so of two coordinators claiming a host at once exactly one wins. It names the job and the inventory
host that holds it. Whatever runs for the job on the host renews it (its
modification time); it is released when the job is cleaned up. A lease is
stale, and may be broken, when nothing has renewed it for `stale_after`
seconds and no agent of its job is alive: the coordinator died before the
agent started, or the agent died and nobody cleaned up.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import Any, Dict, Optional

from .pids import pid_alive

DEFAULT_STALE_AFTER = 600.0


def lease_path(work_dir: str) -> str:
    return os.path.join(work_dir, "lease.json")


def work_dir_of(jobdir_root: str) -> str:
    """<work_dir>/jobs/<job>/<algo-K> -> <work_dir>."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(jobdir_root))))


def _read(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read().decode("utf-8"))
        return doc if isinstance(doc, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as held by an unknown job


def _agent_alive(work_dir: str, lease: Dict[str, Any]) -> bool:
    jobs = os.path.join(work_dir, "jobs", str(lease.get("job", "")))
    try:
        algos = os.listdir(jobs)
    except OSError:
        return False
    for algo in algos:
        try:
            with open(os.path.join(jobs, algo, "agent.pid")) as fh:
                if pid_alive(int(fh.read().strip())):
                    return True
        except (OSError, ValueError):
            continue
    return False


def _stale(path: str, work_dir: str, lease: Dict[str, Any], stale_after: float) -> bool:
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    return age > stale_after and not _agent_alive(work_dir, lease)


def acquire(work_dir: str, job: str, holder: str, stale_after: float = DEFAULT_STALE_AFTER) -> Dict[str, Any]:
    """{"leased": True} or {"busy": <the lease that holds the host>, "age_seconds": ...}.

    Claims on one host are serialised by an flock, so judging a lease stale
    and replacing it is one step: two breakers cannot both win.
    """
    os.makedirs(work_dir, mode=0o755, exist_ok=True)
    path = lease_path(work_dir)
    with open(os.path.join(work_dir, "lease.lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        current = _read(path)
        if current is not None:
            if current.get("job") == job and current.get("holder") == holder:
                renew(work_dir, job)
                return {"leased": True, "again": True}
            if not _stale(path, work_dir, current, stale_after):
                try:
                    age = time.time() - os.stat(path).st_mtime
                except OSError:
                    age = 0.0
                return {"busy": current, "age_seconds": round(age, 1)}
            os.unlink(path)
        doc = {"job": job, "holder": holder, "taken": time.time(), "pid": os.getpid()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        return {"leased": True, "broke": current} if current is not None else {"leased": True}


def renew(work_dir: str, job: str) -> bool:
    """Touch the lease if this job holds it."""
    path = lease_path(work_dir)
    current = _read(path)
    if not current or current.get("job") != job:
        return False
    try:
        os.utime(path)
    except OSError:
        return False
    return True


def release(work_dir: str, job: str) -> bool:
    """Give the host back, if this job holds it."""
    path = lease_path(work_dir)
    current = _read(path)
    if not current or current.get("job") != job:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
