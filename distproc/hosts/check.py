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

from ..agent.answers import CheckAnswer
from ..errors import DistprocError
from ..inventory import Host
from .agentbundle import agent_bundle
from .depsbundle import deps_bundle
from .session import HostSession
from .transport import transport_for


@dataclass(frozen=True, slots=True)
class Limits:
    min_free_bytes: int = 5 << 30
    max_clock_offset_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class ClockReading:
    """The host's clock minus this machine's: `offset`, known to within ± `uncertainty`."""

    offset: float
    uncertainty: float

    @property
    def shown(self) -> float:
        """The offset, or 0 where the measurement cannot tell it from 0."""
        return 0.0 if abs(self.offset) <= self.uncertainty else self.offset


def clock_reading(sent: float, back: float, host_time: float, host_busy: float = 0.0) -> ClockReading:
    """The host's clock offset from one request, sent at `sent` and answered at `back` (this clock).

    The host read its clock after working `host_busy` seconds on the request,
    so at a moment (on this clock) between `sent + host_busy` and `back`: the
    offset is taken against the middle of that span and is known to half of
    it. A host sharing this machine's clock reads 0 ± that half, never the
    +0.2 s that the host's own work on the request would add.
    """
    earliest = min(back, sent + max(0.0, host_busy))
    return ClockReading(host_time - (earliest + back) / 2, (back - earliest) / 2)


@dataclass(frozen=True, slots=True)
class HostReport:
    host: Host
    #: What the agent measured (None: it could not be reached or run).
    measured: CheckAnswer | None
    #: Host clock minus this machine's (see clock_reading); ± `clock_uncertainty_seconds`.
    clock_offset_seconds: float | None
    problems: tuple[str, ...] = field(default=())
    clock_uncertainty_seconds: float | None = None

    @property
    def fit(self) -> bool:
        return not self.problems


def _declared_gpus(host: Host) -> int | None:
    """How many GPUs the inventory promises: None for `all` (at least one)."""
    return None if host.gpus == "all" else int(host.gpus)


def assess(host: Host, measured: CheckAnswer, clock: ClockReading | None, limits: Limits) -> tuple[str, ...]:
    """Why this host cannot run jobs; empty if it can."""
    problems: list[str] = []
    docker = measured.docker
    if not docker.ok:
        problems.append(f"Docker is not reachable: {docker.error or 'no answer'}")
    disk = measured.disk
    free = disk.free_bytes
    if free is None:
        problems.append(f"cannot tell the free space in {host.work_dir}: {disk.error}")
    elif free < limits.min_free_bytes:
        gib = 1 << 30
        problems.append(
            f"{free / gib:.1f} GiB free in {disk.path}, under the {limits.min_free_bytes / gib:.1f} GiB asked"
        )
    # Only an offset surely past the limit: the measurement's own uncertainty is no fault of the host.
    if clock is not None and abs(clock.offset) - clock.uncertainty > limits.max_clock_offset_seconds:
        problems.append(
            f"clock is {clock.offset:+.1f} s (± {clock.uncertainty:.1f} s) off this machine's "
            f"(more than {limits.max_clock_offset_seconds} s)"
        )
    declared = _declared_gpus(host)
    if declared != 0:
        gpu = measured.gpu
        count = gpu.gpus if gpu else 0
        wanted = 1 if declared is None else declared
        if gpu is None or not gpu.available or count < wanted:
            why = (gpu.reason if gpu else None) or f"found {count}"
            problems.append(f"the inventory gives it {host.gpus} GPU(s), but {why}")
        if host.gpu_mode == "runtime" and "nvidia" not in (docker.runtimes or ()):
            problems.append("distproc_gpu_mode is runtime, but Docker has no nvidia runtime")
        if host.gpu_mode == "gpus" and not (gpu and gpu.container_toolkit):
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
        measured = await transport.run_json(argv, CheckAnswer.from_doc)
        back = time.time()
    except DistprocError as exc:
        return HostReport(host, None, None, (str(exc),))
    finally:
        await transport.close()
    clock = None if measured.time is None else clock_reading(sent, back, measured.time, measured.busy_seconds or 0.0)
    return HostReport(
        host,
        measured,
        None if clock is None else clock.offset,
        assess(host, measured, clock, limits),
        None if clock is None else clock.uncertainty,
    )


async def check_hosts(hosts: Sequence[Host], limits: Limits, fan_out: int = 64) -> list[HostReport]:
    window = asyncio.Semaphore(fan_out)

    async def one(host: Host) -> HostReport:
        async with window:
            return await check_host(host, limits)

    return list(await asyncio.gather(*(one(h) for h in hosts)))


def report_document(report: HostReport) -> dict[str, Any]:
    m = report.measured
    docker = m.docker if m else None
    gpu = m.gpu if m else None
    runtimes = docker.runtimes if docker else None
    return {
        "Host": report.host.name,
        "Address": report.host.address,
        "Fit": report.fit,
        "Problems": list(report.problems),
        "Python": ".".join(str(p) for p in m.python) if m else None,
        "DockerVersion": docker.version if docker else None,
        "DockerRuntimes": None if runtimes is None else list(runtimes),
        "Gpus": gpu.gpus if gpu else None,
        "GpuDriver": gpu.driver if gpu else None,
        "GpuNote": None if gpu is None or gpu.available else gpu.reason,
        "FreeBytes": m.disk.free_bytes if m else None,
        "ClockOffsetSeconds": report.clock_offset_seconds,
        "ClockUncertaintySeconds": report.clock_uncertainty_seconds,
    }


def _clock_cell(d: dict[str, Any]) -> str:
    offset, uncertainty = d["ClockOffsetSeconds"], d["ClockUncertaintySeconds"]
    if offset is None:
        return "-"
    if uncertainty is None:
        return f"{offset:+.2f}s"
    return f"{ClockReading(offset, uncertainty).shown:+.2f}±{uncertainty:.2f}s"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Columns as wide as their widest cell, two spaces apart; the last column is not padded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row[:-1], widths, right, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def report_table(reports: Sequence[HostReport]) -> str:
    docs = [report_document(r) for r in reports]
    rows = [
        (
            d["Host"],
            d["Python"] or "-",
            d["DockerVersion"] or "-",
            "-" if d["Gpus"] is None else str(d["Gpus"]),
            "-" if d["FreeBytes"] is None else f"{d['FreeBytes'] / (1 << 30):.1f}G",
            _clock_cell(d),
            "ok" if d["Fit"] else "UNFIT: " + "; ".join(d["Problems"]),
        )
        for d in docs
    ]
    header = ("HOST", "PYTHON", "DOCKER", "GPUS", "FREE", "CLOCK", "STATUS")
    return table(header, rows, right=(False, False, False, True, True, True))
