"""Where the cluster lives and how big it is (:class:`ClusterConfig`), and each daemon's paths."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.constants import (
    BRIDGE_ADDRESS,
    CGROUP_PARENT,
    DEFAULT_CACHE_DIR,
    DEFAULT_CLUSTER_DIR,
    DEFAULT_HOSTS,
    DEFAULT_RUN_DIR,
    HOST_ADDRESS_OFFSET,
    LOCAL,
    MAX_HOSTS,
    MIN_HOSTS,
    NETNS_PREFIX,
    NETWORK_PREFIX,
    SSH_PORT,
    USER,
    ClusterError,
)
from tests.cluster.model import Cluster, ClusterHost
from tests.cluster.process import _tool


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster lives and how big it is."""

    n_hosts: int = DEFAULT_HOSTS
    cluster_dir: Path = DEFAULT_CLUSTER_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    mirror: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClusterConfig:
        env = os.environ if environ is None else environ
        raw = env.get("DISTPROC_TEST_HOSTS", "").strip()
        try:
            n = int(raw) if raw else DEFAULT_HOSTS
        except ValueError:
            raise ClusterError(f"DISTPROC_TEST_HOSTS={raw!r} is not a whole number") from None
        cfg = cls(
            n_hosts=n,
            cluster_dir=Path(env.get("DISTPROC_TEST_CLUSTER_DIR") or DEFAULT_CLUSTER_DIR),
            run_dir=Path(env.get("DISTPROC_TEST_RUN_DIR") or DEFAULT_RUN_DIR),
            cache_dir=Path(env.get("DISTPROC_TEST_CACHE_DIR") or DEFAULT_CACHE_DIR),
            mirror=env.get("DISTPROC_TEST_DEBIAN_MIRROR") or None,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not MIN_HOSTS <= self.n_hosts <= MAX_HOSTS:
            raise ClusterError(
                f"the test cluster needs {MIN_HOSTS}..{MAX_HOSTS} hosts (DISTPROC_TEST_HOSTS), not {self.n_hosts}"
            )
        for what, p in (
            ("cluster dir", self.cluster_dir),
            ("run dir", self.run_dir),
            ("cache dir", self.cache_dir),
        ):
            if not p.is_absolute() or len(p.parts) < 3 or ".." in p.parts:
                raise ClusterError(f"the {what} must be an absolute path at least two levels deep: {p}")
        # Docker and containerd put unix sockets under the run dir; sun_path is 108 bytes.
        if len(str(self.run_dir)) > 40:
            raise ClusterError(f"the run dir {self.run_dir} is too long for unix sockets")

    @property
    def lock_file(self) -> Path:
        return self.cluster_dir.with_name(self.cluster_dir.name + ".lock")

    @property
    def home(self) -> Path:
        return self.cluster_dir / "home"

    @property
    def key_file(self) -> Path:
        return self.cluster_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.cluster_dir / "known_hosts"

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(f"h{i}" for i in range(1, self.n_hosts + 1))

    def daemon(self, name: str) -> DaemonLayout:
        return DaemonLayout.of(self, name)

    def cluster(self) -> Cluster:
        hosts = tuple(
            ClusterHost(
                name=name,
                netns=NETNS_PREFIX + name,
                address=host_address(i),
                ssh_port=SSH_PORT,
                docker_host=f"unix://{self.daemon(name).docker_sock}",
                work_dir=self.cluster_dir / name / "work",
            )
            for i, name in enumerate(self.host_names, start=1)
        )
        return Cluster(
            hosts=hosts,
            dir=self.cluster_dir,
            user=USER,
            key_file=self.key_file,
            known_hosts=self.known_hosts,
            bridge_address=BRIDGE_ADDRESS,
            local_docker_host=f"unix://{self.daemon(LOCAL).docker_sock}",
            local_work_dir=self.cluster_dir / LOCAL / "work",
            docker_binary=_tool("docker") if shutil.which("docker") else "docker",
        )


def host_address(index: int) -> str:
    return f"{NETWORK_PREFIX}{HOST_ADDRESS_OFFSET + index}"


@dataclass(frozen=True)
class DaemonLayout:
    """Paths of one containerd + dockerd pair (a host's, or the local one)."""

    name: str
    netns: str | None
    state_dir: Path  # per run: config, pid files, logs (wiped at each build)
    data_dir: Path  # kept between runs: image store (docker/NAME)
    run_dir: Path  # short path for sockets and exec roots

    @classmethod
    def of(cls, cfg: ClusterConfig, name: str) -> DaemonLayout:
        return cls(
            name=name,
            netns=None if name == LOCAL else NETNS_PREFIX + name,
            state_dir=cfg.cluster_dir / name,
            data_dir=cfg.cluster_dir / "docker" / name,
            run_dir=cfg.run_dir / name,
        )

    docker_root = property(lambda self: self.data_dir / "dockerd")
    containerd_root = property(lambda self: self.data_dir / "containerd")
    exec_root = property(lambda self: self.run_dir / "exec")
    containerd_state = property(lambda self: self.run_dir / "containerd")
    containerd_sock = property(lambda self: self.run_dir / "containerd.sock")
    docker_sock = property(lambda self: self.run_dir / "docker.sock")
    dockerd_pid = property(lambda self: self.state_dir / "dockerd.pid")
    containerd_pid = property(lambda self: self.state_dir / "containerd.pid")
    containerd_config = property(lambda self: self.state_dir / "containerd.toml")
    dockerd_config = property(lambda self: self.state_dir / "daemon.json")
    dockerd_log = property(lambda self: self.state_dir / "dockerd.log")
    containerd_log = property(lambda self: self.state_dir / "containerd.log")
    cgroup_parent = property(lambda self: f"/{CGROUP_PARENT}/{self.name}")
