"""The running cluster as tests see it: :class:`Cluster` and :class:`ClusterHost`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.constants import BUSYBOX_IMAGE, IMAGE, LOCAL, LOCAL_PRIVATE_ADDRESS
from tests.cluster.process import _docker_cli_env, _netns_path, _run, _tool


@dataclass(frozen=True, slots=True)
class ClusterHost:
    """One emulated host: a network namespace with its own sshd and dockerd."""

    name: str
    netns: str
    address: str
    ssh_port: int
    docker_host: str
    work_dir: Path

    @property
    def private_address(self) -> str:
        """The address other hosts reach this one on (the same as the SSH address here)."""
        return self.address


@dataclass(frozen=True)
class Cluster:
    """A running test cluster. Build one with :func:`build` (or the ``cluster`` fixture)."""

    hosts: tuple[ClusterHost, ...]
    dir: Path
    user: str
    key_file: Path
    known_hosts: Path
    bridge_address: str
    local_docker_host: str
    local_work_dir: Path
    image: str = IMAGE
    busybox_image: str = BUSYBOX_IMAGE
    docker_binary: str = field(default="docker", repr=False)

    # -- lookup ------------------------------------------------------------

    def host(self, name: str) -> ClusterHost:
        """The host called ``name`` (``h1``, ``h2``...)."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in the test cluster ({', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def _resolve(self, host: ClusterHost | str) -> ClusterHost:
        return host if isinstance(host, ClusterHost) else self.host(host)

    def _docker_host_of(self, host: ClusterHost | str) -> str:
        if host == LOCAL:
            return self.local_docker_host
        return self._resolve(host).docker_host

    # -- inventory -----------------------------------------------------------

    def write_inventory(
        self,
        path: str | os.PathLike[str],
        *,
        instance_type: str = "ml.m5.xlarge",
        hosts: Iterable[ClusterHost | str] | None = None,
        extra_host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        local: bool = False,
        group_vars: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write an Ansible YAML inventory for (some of) the cluster and return its path.

        ``hosts`` picks hosts (objects or names; default all). ``extra_host_vars``
        maps a host name (``"local"`` for the local host) to variables added to,
        or overriding, that host's. ``group_vars`` go under ``all.vars``.
        ``local=True`` writes a single ``ansible_connection: local`` host named
        ``local`` that uses the local (root namespace) Docker daemon.
        """
        entries: dict[str, dict[str, Any]] = {}
        if local:
            if hosts is not None:
                raise ValueError("write_inventory: pass either local=True or hosts, not both")
            entries[LOCAL] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": "/usr/bin/python3",
                "distproc_instance_type": instance_type,
                "distproc_docker_host": self.local_docker_host,
                "distproc_work_dir": str(self.local_work_dir),
                "distproc_private_address": LOCAL_PRIVATE_ADDRESS,
            }
        else:
            chosen = self.hosts if hosts is None else tuple(self._resolve(h) for h in hosts)
            if not chosen:
                raise ValueError("write_inventory: no hosts chosen")
            ssh_args = " ".join(
                [
                    "-o IdentitiesOnly=yes",
                    f"-o UserKnownHostsFile={self.known_hosts}",
                    "-o GlobalKnownHostsFile=/dev/null",
                    "-o StrictHostKeyChecking=yes",
                ]
            )
            for h in chosen:
                entries[h.name] = {
                    "ansible_host": h.address,
                    "ansible_port": h.ssh_port,
                    "ansible_user": self.user,
                    "ansible_ssh_private_key_file": str(self.key_file),
                    "ansible_ssh_common_args": ssh_args,
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "distproc_known_hosts": str(self.known_hosts),
                    "distproc_instance_type": instance_type,
                    "distproc_docker_host": h.docker_host,
                    "distproc_work_dir": str(h.work_dir),
                    "distproc_private_address": h.private_address,
                }
        for name, extra in (extra_host_vars or {}).items():
            if name not in entries:
                raise ValueError(
                    f"write_inventory: extra_host_vars names {name!r}, "
                    f"which is not in this inventory ({', '.join(entries)})"
                )
            entries[name].update(extra)
        doc: dict[str, Any] = {"all": {"hosts": entries}}
        if group_vars:
            doc["all"]["vars"] = dict(group_vars)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        return out

    # -- commands -------------------------------------------------------------

    def docker(
        self,
        host: ClusterHost | str,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against ``host``'s daemon (``"local"``: the local daemon)."""
        argv = [self.docker_binary, "-H", self._docker_host_of(host), *args]
        return _run(argv, check=check, timeout=timeout, input=input, env=_docker_cli_env())

    def containers(self, host: ClusterHost | str, all: bool = True) -> list[str]:
        """Names of the containers on ``host``'s daemon (running ones only if ``all=False``)."""
        args = ["ps", "--format", "{{.Names}}", "--no-trunc"]
        if all:
            args.insert(1, "--all")
        out = self.docker(host, *args).stdout
        return [line for line in out.splitlines() if line]

    def run_in(
        self,
        host: ClusterHost | str,
        *argv: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host``'s network namespace (root mount namespace, as root)."""
        h = self._resolve(host)
        return _run(
            [_tool("nsenter"), f"--net={_netns_path(h.netns)}", "--", *argv],
            check=check,
            timeout=timeout,
            input=input,
        )

    def ssh_argv(self, host: ClusterHost | str, *command: str) -> list[str]:
        """An ``ssh`` argv that logs in to ``host`` with strict host-key checking."""
        h = self._resolve(host)
        return [
            _tool("ssh"),
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            str(self.key_file),
            "-p",
            str(h.ssh_port),
            "-l",
            self.user,
            h.address,
            *command,
        ]

    def ssh(
        self,
        host: ClusterHost | str,
        *command: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` over SSH (as the test login ``dproot``)."""
        return _run(self.ssh_argv(host, *command), check=check, timeout=timeout, input=input)
