"""`distproc hosts check`: is every host in an inventory fit to run jobs?

Every host is checked at once (bounded fan-out): SSH and its host key, the
agent's python, Docker and its version, GPUs and their driver (through the
agent and pynvml) with the container toolkit or nvidia runtime where the
inventory gives a host GPUs, free space where the work folder lives, and
the host clock's offset from this machine's. Measuring is the agent's
(agent/hostcheck.py); judging is `assess`, a pure function.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .bundle import agent_bundle
from .depsbundle import deps_bundle
from .errors import DistprocError
from .hostsession import HostSession
from .inventory import Host
from .transport import transport_for


@dataclass(frozen=True, slots=True)
class Limits:
    min_free_bytes: int = 5 << 30
    max_clock_offset_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class HostReport:
    host: Host
    #: What the agent measured (None: it could not be reached or run).
    measured: dict[str, Any] | None
    #: Host clock minus this machine's, taken at the middle of the round trip.
    clock_offset_seconds: float | None
    problems: tuple[str, ...] = field(default=())

    @property
    def fit(self) -> bool:
        return not self.problems


def _declared_gpus(host: Host) -> int | None:
    """How many GPUs the inventory promises: None for `all` (at least one)."""
    return None if host.gpus == "all" else int(host.gpus)


def assess(host: Host, measured: dict[str, Any], offset: float | None, limits: Limits) -> tuple[str, ...]:
    """Why this host cannot run jobs; empty if it can."""
    problems: list[str] = []
    docker = measured.get("docker") or {}
    if not docker.get("ok"):
        problems.append(f"Docker is not reachable: {docker.get('error', 'no answer')}")
    disk = measured.get("disk") or {}
    free = disk.get("free_bytes")
    if not isinstance(free, int):
        problems.append(f"cannot tell the free space in {host.work_dir}: {disk.get('error')}")
    elif free < limits.min_free_bytes:
        gib = 1 << 30
        problems.append(
            f"{free / gib:.1f} GiB free in {disk.get('path')}, under the {limits.min_free_bytes / gib:.1f} GiB asked"
        )
    if offset is not None and abs(offset) > limits.max_clock_offset_seconds:
        problems.append(f"clock is {offset:+.1f} s off this machine's (more than {limits.max_clock_offset_seconds} s)")
    declared = _declared_gpus(host)
    if declared != 0:
        gpu = measured.get("gpu") or {}
        count = int(gpu.get("count") or 0)
        wanted = 1 if declared is None else declared
        if not gpu.get("available") or count < wanted:
            why = gpu.get("reason") or f"found {count}"
            problems.append(f"the inventory gives it {host.gpus} GPU(s), but {why}")
        if host.gpu_mode == "runtime" and "nvidia" not in (docker.get("runtimes") or []):
            problems.append("distproc_gpu_mode is runtime, but Docker has no nvidia runtime")
        if host.gpu_mode == "gpus" and not gpu.get("container_toolkit"):
            problems.append("docker run --gpus needs the NVIDIA Container Toolkit, which is not installed")
    return tuple(problems)


async def check_host(host: Host, limits: Limits, connect_timeout: float = 15.0) -> HostReport:
    transport = transport_for(host, connect_timeout=connect_timeout)
    bundle = agent_bundle()
    session = HostSession(transport, host.python, host.work_dir, f"{host.work_dir}/checks", bundle)
    try:
        await transport.connect()
        await session.install_agent()
        deps = await session.install_deps(deps_bundle()) if host.gpus else ""
        argv = [
            host.python,
            bundle.remote_path(host.work_dir),
            "check",
            "--work-dir",
            host.work_dir,
            "--docker",
            json.dumps(list(host.docker_command)),
            "--docker-host",
            host.docker_host or "",
            "--deps",
            deps,
            *(["--gpus"] if host.gpus else []),
        ]
        sent = time.time()
        measured = await transport.run_json(argv)
        back = time.time()
    except DistprocError as exc:
        return HostReport(host, None, None, (str(exc),))
    finally:
        await transport.close()
    host_time = measured.get("time")
    offset = float(host_time) - (sent + back) / 2 if isinstance(host_time, (int, float)) else None
    return HostReport(host, measured, offset, assess(host, measured, offset, limits))


async def check_hosts(hosts: Sequence[Host], limits: Limits, fan_out: int = 64) -> list[HostReport]:
    window = asyncio.Semaphore(fan_out)

    async def one(host: Host) -> HostReport:
        async with window:
            return await check_host(host, limits)

    return list(await asyncio.gather(*(one(h) for h in hosts)))


def report_document(report: HostReport) -> dict[str, Any]:
    m = report.measured or {}
    docker = m.get("docker") or {}
    gpu = m.get("gpu") or {}
    disk = m.get("disk") or {}
    return {
        "Host": report.host.name,
        "Address": report.host.address,
        "Fit": report.fit,
        "Problems": list(report.problems),
        "Python": ".".join(str(p) for p in m["python"]) if m.get("python") else None,
        "DockerVersion": docker.get("version"),
        "DockerRuntimes": docker.get("runtimes"),
        "Gpus": gpu.get("count") if m.get("gpu") else None,
        "GpuDriver": gpu.get("driver"),
        "GpuNote": None if not m.get("gpu") or gpu.get("available") else gpu.get("reason"),
        "FreeBytes": disk.get("free_bytes"),
        "ClockOffsetSeconds": report.clock_offset_seconds,
    }


def report_table(reports: Sequence[HostReport]) -> str:
    docs = [report_document(r) for r in reports]
    width = max([4, *(len(d["Host"]) for d in docs)])
    lines = [f"{'HOST':<{width}}  {'PYTHON':<7} {'DOCKER':<9} {'GPUS':>4} {'FREE':>9} {'CLOCK':>7}  STATUS"]
    for d in docs:
        free = "-" if d["FreeBytes"] is None else f"{d['FreeBytes'] / (1 << 30):.1f}G"
        clock = "-" if d["ClockOffsetSeconds"] is None else f"{d['ClockOffsetSeconds']:+.2f}s"
        gpus = "-" if d["Gpus"] is None else str(d["Gpus"])
        status = "ok" if d["Fit"] else "UNFIT: " + "; ".join(d["Problems"])
        lines.append(
            f"{d['Host']:<{width}}  {d['Python'] or '-':<7} {d['DockerVersion'] or '-':<9} {gpus:>4} {free:>9} "
            f"{clock:>7}  {status}"
        )
    return "\n".join(lines)
