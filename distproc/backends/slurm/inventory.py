"""The Slurm inventory document: how a Slurm cluster is named, parsed into frozen values.

A file whose top level is one ``slurm:`` mapping names a cluster instead of
listing hosts::

    slurm:
      submit:                      # the submit (login) node: this machine ...
        ansible_connection: local
      # ... or over SSH, with the same variables (and host-key rules) as a host
      # of a static inventory: ansible_host, ansible_user, ansible_port,
      # ansible_ssh_private_key_file, distproc_known_hosts ...
      account: proj42              # optional; Slurm's default account otherwise
      qos: normal                  # optional
      exclusive: true              # whole nodes (default true)
      shared_dir: /shared/distproc # optional: a filesystem every node and the submit node see
      docker_host: unix:///run/docker-{node}.sock  # optional: each node's Docker ({node}: its name)
      work_dir: /var/tmp/distproc  # optional: each node's own folder for the agent and job files
      python: python3              # optional: the nodes' Python for the agent
      s3_endpoint_url: https://minio.example.org  # optional: an S3-compatible endpoint for the nodes
      aws_region: eu-west-1        # optional: the nodes' AWS region for S3
      instance_types:
        ml.m5.xlarge: {partition: cpu}
        ml.g4dn.12xlarge: {partition: gpu, gpus: 4, gpu_type: t4, qos: gpu}

Everything is checked before anything is used: every problem is collected and
raised as one :class:`~distproc.errors.InventoryError` naming the file and the
field (``slurm.instance_types.ml.g4dn.12xlarge.gpus``). A value that could not
be handed to Slurm as one plain word (a partition with a space, an account
with a ``;``) is refused here, so nothing from this file needs shell quoting
later, though submission quotes it anyway.

``load_inventory`` does not read it (its result is a list of hosts; a Slurm
cluster has none until Slurm allocates them): :func:`load_slurm_inventory`
reads such a file, :func:`slurm_inventory_at` tells one apart (the CLI's
``run`` and ``validate`` use it).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from ...errors import InventoryError, Violation
from ...inventory import Host
from ...inventory._document import RawHost, load_yaml
from ...inventory._hosts import check_host
from ...spec.instance_types import closest, processing_instance_types

__all__ = [
    "GpuFlag",
    "PartitionMapping",
    "SlurmInventory",
    "is_slurm_document",
    "load_slurm_inventory",
    "parse_slurm_inventory",
    "slurm_inventory_at",
]

GpuFlag: TypeAlias = Literal["gres", "gpus-per-node"]

#: What a partition, account, QoS or GPU type may be: one plain word as Slurm's
#: own names are in practice. Slurm allows a little more in some of them; a
#: site that needs it tells us, rather than this accepting shell syntax.
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_KEYS = frozenset(
    {
        "submit",
        "account",
        "qos",
        "exclusive",
        "shared_dir",
        "instance_types",
        "docker_host",
        "work_dir",
        "python",
        "s3_endpoint_url",
        "aws_region",
    }
)
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
#: What a node's Docker address may start with (the fleet's distproc_docker_host rule).
_DOCKER_HOST_SCHEMES = ("unix://", "tcp://", "ssh://", "fd://", "npipe://")
DEFAULT_NODE_WORK_DIR = "/var/tmp/distproc"
_TYPE_KEYS = frozenset({"partition", "gpus", "gpu_type", "gpu_flag", "account", "qos"})
_GPU_FLAGS: tuple[GpuFlag, ...] = ("gres", "gpus-per-node")
#: Host variables that describe a compute host, not the submit node: on Slurm
#: the instance_types section says what each node is.
_NOT_FOR_SUBMIT = frozenset(
    {"distproc_instance_type", "distproc_gpus", "distproc_gpu_mode", "distproc_private_address"}
)
_MAX_GPUS = 64


@dataclass(frozen=True, slots=True)
class PartitionMapping:
    """Where a job of one instance type goes: the partition and what it asks of each node."""

    instance_type: str
    partition: str
    #: GPUs per node; 0 asks for none.
    gpus: int = 0
    gpu_type: str | None = None
    #: How the GPUs are asked for: ``--gres=gpu[:type]:N`` or ``--gpus-per-node=[type:]N``.
    gpu_flag: GpuFlag = "gres"
    #: The account and QoS in effect (the type's own, else the cluster's), None for Slurm's default.
    account: str | None = None
    qos: str | None = None


@dataclass(frozen=True, slots=True)
class SlurmInventory:
    """A checked Slurm cluster description."""

    path: Path
    #: The submit node: ``connection == "local"`` for this machine, else reached over SSH like a fleet host.
    submit: Host
    instance_types: Mapping[str, PartitionMapping]
    account: str | None = None
    qos: str | None = None
    exclusive: bool = True
    #: A directory every node and the submit node see (None: nothing shared is assumed).
    shared_dir: str | None = None
    #: Each node's Docker daemon, ``{node}`` standing for the node's name; None: the node's default.
    docker_host: str | None = None
    #: Each node's own folder for the agent and the job's files (bind-mounted: it must be node-local
    #: or at least what that node's Docker sees).
    work_dir: str = DEFAULT_NODE_WORK_DIR
    #: The Python that runs the agent on every node.
    python: str = "python3"
    #: The S3 endpoint (MinIO, Ceph, a test server) and region the nodes stage through; None:
    #: AWS's own, the nodes' default region. The fleet's distproc_s3_endpoint_url/distproc_aws_region.
    s3_endpoint_url: str | None = None
    aws_region: str | None = None

    def mapping_for(self, instance_type: str) -> PartitionMapping:
        """The partition for a job's instance type; an InventoryError naming the field if there is none."""
        found = self.instance_types.get(instance_type)
        if found is None:
            known = ", ".join(sorted(self.instance_types)) or "none"
            raise InventoryError(
                f"{self.path}: slurm.instance_types has no {instance_type!r} (the job's InstanceType); it maps: {known}"
            )
        return found


def is_slurm_document(data: object) -> bool:
    """Whether a YAML document names a Slurm cluster (a top-level ``slurm:`` key)."""
    return isinstance(data, dict) and "slurm" in data


def slurm_inventory_at(path: str | Path) -> SlurmInventory | None:
    """The Slurm cluster a file names, or None when it is not a Slurm document (a fleet inventory).

    A file that cannot be read as YAML is left to the fleet's reader, whose errors say why.
    """
    path = Path(path)
    problems: list[Violation] = []
    try:
        data = load_yaml(path, str(path), problems)
    except (InventoryError, RecursionError):
        return None  # the fleet's reader says the same, in its own words
    if problems or not is_slurm_document(data):
        return None
    return parse_slurm_inventory(data, path)


def load_slurm_inventory(path: str | Path) -> SlurmInventory:
    """Read a Slurm inventory file (bounded read, duplicate keys refused, as any inventory)."""
    path = Path(path)
    source = str(path)
    problems: list[Violation] = []
    try:
        data = load_yaml(path, source, problems)
    except RecursionError as exc:
        raise InventoryError(f"{source}: nested too deeply to read") from exc
    if problems:
        raise InventoryError.listing(source, problems)
    return parse_slurm_inventory(data, path)


def parse_slurm_inventory(data: Any, path: Path) -> SlurmInventory:
    """Check a parsed document; every problem is listed in one InventoryError, each naming its field."""
    return _Parser(str(path)).parse(data, path)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Violation] = []

    def problem(self, where: str, rule: str) -> None:
        self.problems.append(Violation(where, rule))

    def parse(self, data: Any, path: Path) -> SlurmInventory:
        if not isinstance(data, dict) or set(data) != {"slurm"}:
            other = sorted(str(k) for k in data) if isinstance(data, dict) else []
            extra = f" (it also has: {', '.join(k for k in other if k != 'slurm')})" if other else ""
            raise InventoryError(f"{self.source}: a Slurm inventory is one top-level mapping, slurm:{extra}")
        body = data["slurm"]
        if not isinstance(body, dict):
            raise InventoryError(f"{self.source}: slurm: must be a mapping, not {_kind(body)}")
        for key in body:
            if key not in _KEYS:
                self.problem(f"slurm.{key}", f"unknown setting; the settings are: {', '.join(sorted(_KEYS))}")
        submit = self.submit(body.get("submit"), path)
        account = self.name("slurm.account", body.get("account"))
        qos = self.name("slurm.qos", body.get("qos"))
        exclusive = body.get("exclusive", True)
        if not isinstance(exclusive, bool):
            self.problem("slurm.exclusive", f"must be true or false, not {_kind(exclusive)}")
            exclusive = True
        shared_dir = self.shared_dir(body.get("shared_dir"))
        types = self.instance_types(body.get("instance_types"), account, qos)
        docker_host = self.docker_host(body.get("docker_host"))
        work_dir = self.work_dir(body.get("work_dir"))
        python = self.python(body.get("python"))
        s3_endpoint_url = self.s3_endpoint_url(body.get("s3_endpoint_url"))
        aws_region = body.get("aws_region")
        if aws_region is not None and not (isinstance(aws_region, str) and _REGION.match(aws_region)):
            self.problem("slurm.aws_region", f"must be an AWS region name (us-east-1), not {_show(aws_region)}")
            aws_region = None
        if self.problems or submit is None:
            raise InventoryError.listing(self.source, self.problems)
        return SlurmInventory(
            path=path,
            submit=submit,
            instance_types=MappingProxyType(types),
            account=account,
            qos=qos,
            exclusive=exclusive,
            shared_dir=shared_dir,
            docker_host=docker_host,
            work_dir=work_dir,
            python=python,
            s3_endpoint_url=s3_endpoint_url,
            aws_region=aws_region,
        )

    def submit(self, value: Any, path: Path) -> Host | None:
        where = "slurm.submit"
        if value is None:
            self.problem(where, "missing: how to reach the submit node (ansible_connection: local, or SSH variables)")
            return None
        if not isinstance(value, dict):
            self.problem(where, f"must be a mapping of host variables, not {_kind(value)}")
            return None
        for key in sorted(str(k) for k in value if k in _NOT_FOR_SUBMIT):
            self.problem(f"{where}.{key}", "describes a compute host; on Slurm, slurm.instance_types says that")
        vars_ = {str(k): v for k, v in value.items() if k not in _NOT_FOR_SUBMIT}
        # The same checks as a host of a static inventory: transport, user, key file, known_hosts.
        raw = RawHost(name="submit", groups=(), vars=vars_)
        host, found = check_host(raw, path.parent.absolute(), {})
        for rule in found:
            self.problem(where, rule)
        if (
            host is not None
            and host.connection == "ssh"
            and "ansible_host" not in vars_
            and ("ansible_ssh_host" not in vars_)
        ):
            self.problem(f"{where}.ansible_host", "missing: the submit node's address (or ansible_connection: local)")
            return None
        return host

    def name(self, where: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _SLURM_NAME.match(value):
            self.problem(
                where,
                f"must be a Slurm name (letters, digits, '_', '.', '+', '-'; at most 64), not {_show(value)}",
            )
            return None
        return value

    def shared_dir(self, value: Any) -> str | None:
        where = "slurm.shared_dir"
        if value is None:
            return None
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or ".." in value.split("/")
            or any(c in value for c in "\0\n")
            or len(value) > 1024
        ):
            self.problem(where, f"must be an absolute path without '..', not {_show(value)}")
            return None
        return posixpath.normpath(value)

    def docker_host(self, value: Any) -> str | None:
        where = "slurm.docker_host"
        if value is None:
            return None
        if (
            not isinstance(value, str)
            or not value.startswith(_DOCKER_HOST_SCHEMES)
            or any(c in value for c in "\0\n")
            or len(value) > 1024
        ):
            schemes = ", ".join(_DOCKER_HOST_SCHEMES)
            self.problem(where, f"must be a Docker address starting {schemes} ({{node}}: the node), not {_show(value)}")
            return None
        return value

    def s3_endpoint_url(self, value: Any) -> str | None:
        where = "slurm.s3_endpoint_url"
        if value is None:
            return None
        if (
            not isinstance(value, str)
            or not value.startswith(("http://", "https://"))
            or any(c in value for c in "\0\n \t")
            or len(value) > 1024
        ):
            self.problem(where, f"must be an http:// or https:// URL without spaces, not {_show(value)}")
            return None
        return value

    def work_dir(self, value: Any) -> str:
        where = "slurm.work_dir"
        if value is None:
            return DEFAULT_NODE_WORK_DIR
        normal = posixpath.normpath(value) if isinstance(value, str) else ""
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or normal in ("/", "//")
            or any(c in value for c in "\0\n")
            or len(value) > 1024
        ):
            self.problem(where, f"must be an absolute path below /, not {_show(value)}")
            return DEFAULT_NODE_WORK_DIR
        return normal

    def python(self, value: Any) -> str:
        where = "slurm.python"
        if value is None:
            return "python3"
        if not isinstance(value, str) or not value or any(c in value for c in "\0\n \t") or len(value) > 1024:
            self.problem(where, f"must be one command or path without spaces, not {_show(value)}")
            return "python3"
        return value

    def instance_types(self, value: Any, account: str | None, qos: str | None) -> dict[str, PartitionMapping]:
        where = "slurm.instance_types"
        if value is None:
            self.problem(where, "missing: which partition serves each instance type (ml.m5.xlarge: {partition: cpu})")
            return {}
        if not isinstance(value, dict) or not value:
            self.problem(where, f"must be a non-empty mapping of instance type to partition, not {_show(value)}")
            return {}
        known = processing_instance_types()
        out: dict[str, PartitionMapping] = {}
        for key, body in value.items():
            here = f"{where}.{key}"
            if key not in known:
                hint = closest(str(key), known)
                self.problem(here, "not a processing instance type" + (f"; did you mean {hint}?" if hint else ""))
                continue
            if isinstance(body, str):
                body = {"partition": body}  # ml.m5.xlarge: cpu
            if not isinstance(body, dict):
                self.problem(here, f"must be a partition name or a mapping, not {_kind(body)}")
                continue
            for k in body:
                if k not in _TYPE_KEYS:
                    self.problem(f"{here}.{k}", f"unknown setting; the settings are: {', '.join(sorted(_TYPE_KEYS))}")
            partition = self.name(f"{here}.partition", body.get("partition"))
            if "partition" not in body:
                self.problem(f"{here}.partition", "missing")
            gpus = body.get("gpus", 0)
            if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= _MAX_GPUS:
                rule = f"must be a whole number of GPUs per node, 0..{_MAX_GPUS}, not {_show(gpus)}"
                self.problem(f"{here}.gpus", rule)
                gpus = 0
            gpu_type = self.name(f"{here}.gpu_type", body.get("gpu_type"))
            if gpu_type is not None and gpus == 0:
                self.problem(f"{here}.gpu_type", "given without gpus")
            flag = body.get("gpu_flag", "gres")
            if flag not in _GPU_FLAGS:
                self.problem(f"{here}.gpu_flag", f"must be one of {', '.join(_GPU_FLAGS)}, not {_show(flag)}")
                flag = "gres"
            own_account = self.name(f"{here}.account", body.get("account"))
            own_qos = self.name(f"{here}.qos", body.get("qos"))
            if partition is not None:
                out[key] = PartitionMapping(
                    instance_type=key,
                    partition=partition,
                    gpus=gpus,
                    gpu_type=gpu_type,
                    gpu_flag=flag,
                    account=own_account or account,
                    qos=own_qos or qos,
                )
        return out


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
