"""The typed values an inventory file becomes: :class:`Host` and :class:`Inventory`, and an EC2 file's options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeAlias

Connection: TypeAlias = Literal["ssh", "local"]
GpuMode: TypeAlias = Literal["gpus", "runtime"]
Gpus: TypeAlias = int | Literal["all"]

DEFAULT_PORT = 22
DEFAULT_WORK_DIR = "/var/tmp/distproc"
DEFAULT_PYTHON = "python3"
DEFAULT_DOCKER_COMMAND: tuple[str, ...] = ("docker",)

_NO_VARS: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Host:
    """One machine a job can run on, as the inventory describes it.

    Built by :func:`distproc.inventory.load_inventory`; every field is already
    validated. Constructing one directly (in tests, or from an EC2 listing) needs
    only a name and an address:

    >>> host = Host(name="gpu1", address="10.0.0.11", instance_type=("ml.p3.2xlarge",))
    >>> host.serves("ml.p3.2xlarge"), host.port, host.private_address
    (True, 22, '10.0.0.11')
    """

    name: str
    address: str
    port: int = DEFAULT_PORT
    user: str | None = None
    #: Absolute path on this machine (the coordinator), or None for ssh's defaults.
    key_file: str | None = None
    connection: Connection = "ssh"
    #: Every instance type this host serves; empty means it serves none.
    instance_type: tuple[str, ...] = ()
    gpus: Gpus = 0
    gpu_mode: GpuMode = "gpus"
    docker_command: tuple[str, ...] = DEFAULT_DOCKER_COMMAND
    docker_host: str | None = None
    #: Absolute, normalised POSIX path on the host.
    work_dir: str = DEFAULT_WORK_DIR
    #: The address other hosts and their containers reach this host on.
    private_address: str = ""
    python: str = DEFAULT_PYTHON
    #: Absolute path on this machine, or None for the user's ~/.ssh/known_hosts.
    known_hosts: str | None = None
    #: An S3-compatible endpoint (MinIO, Ceph, a test server) this host stages
    #: data through; None for AWS's own.
    s3_endpoint_url: str | None = None
    #: The AWS region for S3 on this host; None for the host's own default.
    aws_region: str | None = None
    #: The container's memory limit in bytes (``distproc_memory_limit``); None: all the host has.
    memory_limit_bytes: int | None = None
    #: Every group the host is in, directly or through children, lowest
    #: precedence first; the implicit ``all`` is left out.
    groups: tuple[str, ...] = ()
    #: Every merged variable, read-only all the way down (mappings are
    #: MappingProxyType, lists are tuples). Left out of the hash because a
    #: mapping has none; equality still compares it.
    vars: Mapping[str, object] = field(default_factory=lambda: _NO_VARS, hash=False)

    def __post_init__(self) -> None:
        if not self.private_address:
            # A frozen dataclass can only fill a derived default this way.
            object.__setattr__(self, "private_address", self.address)

    def serves(self, instance_type: str) -> bool:
        """Whether a job asking for ``instance_type`` may run here."""
        return instance_type in self.instance_type


@dataclass(frozen=True, slots=True)
class Inventory:
    """The hosts of one inventory file, in inventory order (first appearance)."""

    path: Path
    hosts: tuple[Host, ...]

    def names(self) -> tuple[str, ...]:
        """Host names in inventory order."""
        return tuple(host.name for host in self.hosts)


#: One describe-instances query: filter name to the values any of which matches.
Filters = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value comes from on an instance: an attribute (``private-ip-address``) or a tag."""

    kind: Literal["attribute", "tag"]
    #: The EC2 field name (``PrivateIpAddress``) or the tag key.
    key: str
    #: As written in the file, for messages.
    text: str


@dataclass(frozen=True, slots=True)
class Hostname:
    """One ``hostnames`` entry: ``name``'s value, after ``prefix``'s value and ``separator`` if set."""

    name: Source
    prefix: Source | None = None
    separator: str = "_"


@dataclass(frozen=True, slots=True)
class Expression:
    """A ``compose`` value: a path into the instance's facts, or a literal."""

    path: tuple[str, ...] | None
    literal: object = None


@dataclass(frozen=True, slots=True)
class Ec2Config:
    """An EC2 inventory file's options, every one checked."""

    source: str
    plugin: str
    #: Empty: boto3's default region (AWS_DEFAULT_REGION, ~/.aws/config).
    regions: tuple[str, ...]
    #: One query each (``filters`` first, then ``include_filters``); an instance matching any is in.
    include_filters: tuple[Filters, ...]
    #: One query each; an instance matching any is out.
    exclude_filters: tuple[Filters, ...]
    hostnames: tuple[Hostname, ...]
    #: First that the instance has is ``ansible_host``, unless compose sets it.
    address: tuple[Source, ...]
    #: None when ``vars`` or ``compose`` give ``distproc_instance_type`` instead.
    instance_type_from: Source | None
    instance_type_map: Mapping[str, tuple[str, ...]]
    compose: Mapping[str, Expression]
    vars: Mapping[str, object]
    strict: bool
    endpoint_url: str | None
    profile: str | None
    page_size: int | None
