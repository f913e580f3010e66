"""How the coordinator reaches hosts: SSH, or this machine directly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .base import Channel, CommandResult, Transport
from .local import LocalTransport
from .ssh import SSHTarget, SSHTransport

if TYPE_CHECKING:
    from ...inventory import Host


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach a host again later (kept in the job store for stop and attach)."""

    name: str
    connection: str
    address: str
    port: int
    user: str | None
    key_file: str | None
    known_hosts: str | None
    python: str
    work_dir: str

    @classmethod
    def from_host(cls, host: Host) -> Endpoint:
        return cls(
            name=host.name,
            connection=host.connection,
            address=host.address,
            port=host.port,
            user=host.user,
            key_file=host.key_file,
            known_hosts=host.known_hosts,
            python=host.python,
            work_dir=host.work_dir,
        )

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Endpoint:
        return cls(
            name=str(doc["name"]),
            connection=str(doc["connection"]),
            address=str(doc["address"]),
            port=int(doc["port"]),
            user=doc.get("user"),
            key_file=doc.get("key_file"),
            known_hosts=doc.get("known_hosts"),
            python=str(doc["python"]),
            work_dir=str(doc["work_dir"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_host(self) -> Host:
        """The host this endpoint reaches, as the inventory would have described it (stop, attach)."""
        from ...inventory import Host  # at call time: the inventory imports this package's users

        return Host(
            name=self.name,
            address=self.address,
            port=self.port,
            user=self.user,
            key_file=self.key_file,
            connection="local" if self.connection == "local" else "ssh",
            python=self.python,
            work_dir=self.work_dir,
            known_hosts=self.known_hosts,
        )


__all__ = [
    "Channel",
    "CommandResult",
    "Endpoint",
    "LocalTransport",
    "SSHTarget",
    "SSHTransport",
    "Transport",
    "transport_for",
]


def transport_for(
    host: Host | Endpoint, *, connect_timeout: float = 15.0, keepalive_interval: float = 15.0
) -> Transport:
    """The transport an inventory host asks for (`ansible_connection`)."""
    e = host if isinstance(host, Endpoint) else Endpoint.from_host(host)
    if e.connection == "local":
        return LocalTransport(e.name)
    target = SSHTarget(
        e.name,
        e.address,
        e.port,
        e.user,
        e.key_file,
        e.known_hosts,
        connect_timeout,
        keepalive_interval=keepalive_interval,
    )
    return SSHTransport(target)
