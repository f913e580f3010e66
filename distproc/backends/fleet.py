"""The SSH fleet: the hosts an inventory names, leased through their agents, reached over SSH.

Hosts are tried in inventory order; a lease is taken atomically on each host
by its agent, so two jobs never share one, and busy or unreachable hosts are
passed over while spares remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from ..errors import DistprocError
from ..hosts.agentbundle import agent_bundle
from ..hosts.session import HostSession
from ..hosts.transport import Endpoint, transport_for
from ..inventory import Host
from ..run.outcome import HostCause, say_once
from ..spec import JobSpec
from .base import Backend, Claimed, Reached, Shortage

log = structlog.get_logger("distproc")


class FleetBackend(Backend):
    """The hosts chosen from an inventory (inventory.select_hosts), in its order."""

    kind = "fleet"

    def __init__(
        self,
        hosts: Sequence[Host],
        *,
        fan_out: int = 64,
        connect_timeout: float = 15.0,
        keepalive_interval: float = 15.0,
    ) -> None:
        self.hosts = tuple(hosts)
        self.fan_out = fan_out
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval

    def _session(self, host: Host | Endpoint, python: str, work_dir: str, job_dir: str) -> HostSession:
        transport = transport_for(
            host, connect_timeout=self.connect_timeout, keepalive_interval=self.keepalive_interval
        )
        return HostSession(transport, python, work_dir, job_dir, agent_bundle())

    async def acquire(self, job: JobSpec) -> Sequence[Claimed] | Shortage:
        """Lease InstanceCount hosts, in inventory order, passing over busy or unreachable ones while spares remain."""
        need = job.cluster.instance_count
        window = asyncio.Semaphore(self.fan_out)
        jlog = log.bind(job=job.name)
        holders: dict[str, str] = {}  # busy host -> the job holding it

        async def claim(index: int, host: Host) -> tuple[int, Claimed | None, HostCause | None, bool]:
            session = self._session(host, host.python, host.work_dir, "")
            transport = session.transport
            async with window:
                started = time.time()
                try:
                    await transport.reachable()
                    connected = time.time()
                    answer, sent = await session.claim(job.name, host.name)
                except DistprocError as exc:
                    await transport.close()
                    return index, None, HostCause(host.name, str(exc), host.address), False
            if answer.leased:
                return index, Claimed(host, session, started, connected, sent), None, False
            await transport.close()
            holder = answer.busy.job if answer.busy is not None else "?"
            holders[host.name] = holder
            why = f"busy with job {holder} (lease renewed {answer.age_seconds} s ago)"
            return index, None, HostCause(host.name, why, host.address), True

        claims: dict[int, Claimed] = {}
        refused: list[tuple[HostCause, bool]] = []
        untried = list(enumerate(self.hosts))
        while len(claims) < need and untried:
            batch, untried = untried[: need - len(claims)], untried[need - len(claims) :]
            for index, found, why, busy in await asyncio.gather(*(claim(i, h) for i, h in batch)):
                if found is not None:
                    claims[index] = found
                elif why is not None:
                    refused.append((why, busy))
                    # The whole reason, however long: the FailureReason may have to cut it.
                    say = jlog.debug if busy and self.waiting_for_hosts else jlog.warning
                    say("host passed over", host=why.who, reason=why.text)
        if len(claims) == need:
            return [claims[i] for i in sorted(claims)]
        for found in claims.values():
            with contextlib.suppress(DistprocError):
                await found.session.release(job.name)
            await found.session.transport.close()
        only_busy = all(busy for _, busy in refused)
        reason = (
            f"too few free hosts: the job needs {need} x {job.cluster.instance_type}, "
            f"{len(claims)} could be had; " + say_once([why for why, _ in refused])
        )
        held = tuple((why.who, holders.get(why.who, "?")) for why, was_busy in refused if was_busy)
        return Shortage(reason, client_error=only_busy, busy=held, enough_if_freed=len(claims) + len(held) >= need)

    def endpoint(self, host: Host) -> Mapping[str, Any]:
        return Endpoint.from_host(host).to_dict()

    def reach(self, endpoint: Mapping[str, Any], job_dir: str) -> Reached:
        where = Endpoint.from_dict(endpoint)
        return Reached(where.to_host(), self._session(where, where.python, where.work_dir, job_dir))

    async def release(self, job: str, session: HostSession) -> None:
        await session.release(job)

    def queue_keys(self) -> tuple[str, ...]:
        # One lease per work folder on a machine: the same host under two inventories' names is one key.
        return tuple(f"{h.address}:{h.port}:{h.work_dir}" for h in self.hosts)
