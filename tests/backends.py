"""One way to run a job on N hosts and look at its nodes, for each backend (SSH fleet, Slurm).

The contract tests (tests/test_contract_e2e.py) are written once against
:class:`BackendEnv` and run on both: ``env.run_job(doc)`` goes through
`distproc run` with the backend's inventory file, ``env.nodes`` are the hosts
in algo order (an idle Slurm cluster allocates sl1..slN as SLURM_NODEID
0..N-1), each with its Docker daemon, network namespace and the agent's work
folder as this machine sees it. The fixture ``backend_env`` (in
tests/cluster/plugin.py) builds one per test and checks, after it, that no
container and no lease is left on any node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.cluster.jobs import Env
from tests.cluster.model import Cluster

if TYPE_CHECKING:
    from tests.slurm import SlurmCluster

#: The backends every contract test runs on.
BACKENDS = ("fleet", "slurm")


@dataclass(frozen=True)
class Node:
    """One host of a backend's test cluster, as a test inspects it."""

    name: str  # the inventory host (h1) or Slurm node (sl1): what FailureReason names
    address: str
    netns: str
    docker_host: str
    work_dir: Path  # the agent's work folder, as this machine sees it

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", self.docker_host, *args], capture_output=True, text=True, timeout=120, check=True
        )

    def containers(self, all: bool = True) -> list[str]:
        """Names of the containers on this node's daemon (running ones only if ``all=False``)."""
        out = self.docker("ps", *(["--all"] if all else []), "--format", "{{.Names}}", "--no-trunc").stdout
        return [line for line in out.splitlines() if line]

    def nic(self) -> str:
        """The name of the interface that holds this node's address, inside its namespace."""
        out = subprocess.run(
            ["ip", "-n", self.netns, "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
        return next(line.split()[1] for line in out.splitlines() if f" {self.address}/" in line)


@dataclass
class BackendEnv(Env):
    """A test's own distproc home and inventory on one backend's cluster."""

    kind: str = "fleet"
    nodes: tuple[Node, ...] = ()
    slurm: SlurmCluster | None = None
    #: Variables `distproc` needs for this backend (SLURM_CONF for Slurm's clients).
    extra_env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distproc", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.extra_env, "DISTPROC_HOME": str(self.home)},
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "distproc", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.extra_env, "DISTPROC_HOME": str(self.home)},
        )

    def node(self, algo: str) -> Node:
        return self.nodes[int(algo.removeprefix("algo-")) - 1]

    def running_everywhere(self, job: str, count: int | None = None) -> Callable[[], bool]:
        """Whether algo-1..count (all nodes by default) each run the job's container."""
        nodes = self.nodes[: count or len(self.nodes)]

        def check() -> bool:
            return all(f"distproc-{job}-algo-{k}" in n.containers(all=False) for k, n in enumerate(nodes, 1))

        return check


def fleet_env(cluster: Cluster, tmp_path: Path) -> BackendEnv:
    data = tmp_path / "data"
    data.mkdir()
    nodes = tuple(Node(h.name, h.address, h.netns, h.docker_host, h.work_dir) for h in cluster.hosts)
    inventory = cluster.write_inventory(tmp_path / "inventory.yaml")
    return BackendEnv(cluster, tmp_path / "home", data, inventory, kind="fleet", nodes=nodes)


def slurm_env(slurm: SlurmCluster, docker_hosts: dict[str, str], tmp_path: Path) -> BackendEnv:
    data = tmp_path / "data"
    data.mkdir()
    work = slurm.local_dir / "work"  # node-local: no shared filesystem assumed
    doc: dict[str, Any] = {
        "slurm": {
            "submit": {"ansible_connection": "local"},  # this machine is the submit node
            "instance_types": {"ml.m5.xlarge": slurm.partition},
            "docker_host": "unix:///run/dpsl/{node}/docker.sock",
            "work_dir": str(work),
            "python": "/usr/bin/python3",
        }
    }
    inventory = tmp_path / "slurm-cluster.yaml"
    inventory.write_text(yaml.safe_dump(doc))
    nodes = tuple(
        Node(
            n.name,
            n.address,
            n.netns,
            docker_hosts[n.name],
            n.local_dir / work.relative_to(slurm.local_dir),
        )
        for n in slurm.nodes
    )
    return BackendEnv(
        None,  # type: ignore[arg-type]  # no SSH cluster: env.nodes is what a contract test uses
        tmp_path / "home",
        data,
        inventory,
        kind="slurm",
        nodes=nodes,
        slurm=slurm,
        extra_env={"SLURM_CONF": str(slurm.conf)},
    )


def leftovers(env: BackendEnv) -> list[str]:
    """Containers and leases a job left on the backend's nodes (none, after every test)."""
    left = []
    for node in env.nodes:
        left += [f"container {c} on {node.name}" for c in node.containers()]
        lease = node.work_dir / "lease.json"
        if lease.exists():
            left.append(f"lease on {node.name}: {lease.read_text()}")
    return left
