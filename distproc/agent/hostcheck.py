"""What a host offers a job, measured on the host: Docker, GPUs, disk, clock.

`distproc hosts check` asks for all of it; `prepare` (every `run`) asks
whether Docker answers before any data is staged.
Judging fitness is the coordinator's (distproc/hostcheck.py): this only
measures, and never raises.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any, Dict

from .container import Docker, DockerError
from .engine import docker_socket as _docker_socket
from .engine import ping as _ping
from .task import DockerAccess


def docker_report(docker: Docker, with_runtimes: bool = True) -> Dict[str, Any]:
    try:
        _, out, _ = docker.run(["version", "--format", "{{.Server.Version}}"], timeout=30)
    except DockerError as exc:
        return {"ok": False, "error": exc.stderr.strip()[-300:] or str(exc)}
    report: Dict[str, Any] = {"ok": True, "version": out.strip()}
    if not with_runtimes:
        return report
    try:
        _, runtimes, _ = docker.run(["info", "--format", "{{json .Runtimes}}"], timeout=30)
        report["runtimes"] = sorted(json.loads(runtimes or "{}"))
    except (DockerError, ValueError):
        report["runtimes"] = []
    return report


def docker_answers(access: DockerAccess) -> Dict[str, Any]:
    """Whether the job's Docker daemon answers, told as cheaply as can be: every `prepare` asks.

    With the plain `docker` command and a daemon on a Unix socket, the daemon's
    /_ping is asked directly, which costs no docker CLI process before the
    container starts; any other setup, or a ping that fails, is asked through
    `docker version`, whose error then says what is wrong.
    """
    path = _docker_socket(access)
    if path is not None and _ping(path):
        return {"ok": True}
    return docker_report(Docker(access), with_runtimes=False)


def disk_report(work_dir: str) -> Dict[str, Any]:
    """Free space where the work folder is (or would be: its nearest existing parent)."""
    path = work_dir
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return {"path": path, "error": str(exc)}
    return {"path": path, "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize}


def gpu_report(deps_dir: str) -> Dict[str, Any]:
    if deps_dir and deps_dir not in sys.path:
        sys.path.insert(0, deps_dir)
    from . import gpu

    report = gpu.probe()
    # The container toolkit: `docker run --gpus` needs its hook on the host.
    report["container_toolkit"] = bool(
        shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-container-toolkit")
    )
    return report


def check(
    access: DockerAccess, work_dir: str, deps_dir: str = "", gpus: bool = False, fast: bool = False
) -> Dict[str, Any]:
    started = time.monotonic()
    report: Dict[str, Any] = {
        "python": list(sys.version_info[:3]),
        "docker": docker_report(Docker(access)),
        "disk": disk_report(work_dir),
    }
    report["gpu"] = gpu_report(deps_dir) if gpus else None
    # Last, so the coordinator's round trip brackets it as tightly as it can; with how
    # long the checks took, which the coordinator takes out of the round trip.
    report["time"] = time.time()
    report["busy_seconds"] = time.monotonic() - started
    return report
