"""One dockerd per Slurm node, in that node's network namespace (``slurm_docker`` fixture).

Started as tests/cluster/daemons.py starts each SSH host's: its own containerd,
sockets, data and exec roots, ``--bridge none --iptables=false``, so a
container (host network) sits in the node's namespace and has its address.
Also in that node's slurmd's mount namespace: there the node-local folder
(``$SL_DIR/local``) is the node's own, so a bind mount the node's agent asks
for (the job folder under its node-local work dir) is the folder the agent
wrote. The agent, inside a Slurm step, reaches its daemon by the socket path
(the filesystem is otherwise shared): the backend's ``docker_host`` template,
:data:`DOCKER_HOST_TEMPLATE`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.cluster.config import ClusterConfig, DaemonLayout
from tests.cluster.constants import ClusterError
from tests.cluster.daemons import _DaemonStart
from tests.cluster.hygiene import _stop_daemons, _unmount_all
from tests.cluster.images import _busybox_image, _cache_lock, _import_image, _py_image
from tests.cluster.process import _netns_path, _tool
from tests.slurm.layout import NETNS_PREFIX, SlurmConfig

#: Short, for unix socket paths (108 bytes at most); one folder per node.
RUN_DIR = Path("/run/dpsl")
DOCKER_HOST_TEMPLATE = f"unix://{RUN_DIR}/{{node}}/docker.sock"


def layouts(cfg: SlurmConfig) -> list[DaemonLayout]:
    return [
        DaemonLayout(
            name=n,
            netns=NETNS_PREFIX + n,
            state_dir=cfg.state_dir / "docker-state" / n,
            data_dir=cfg.state_dir / "docker" / n,  # kept between sessions: the image store
            run_dir=RUN_DIR / n,
        )
        for n in cfg.node_names
    ]


def stop_node_dockerds(cfg: SlurmConfig) -> None:
    """Stop every node's dockerd and containerd known by pid file; unmount what they left."""
    _stop_daemons([d for d in layouts(cfg) if d.state_dir.exists()], sshd=False)
    _unmount_all([RUN_DIR, cfg.state_dir / "docker"])


class _NodeDaemonStart(_DaemonStart):
    """Each daemon in its node's network namespace and its slurmd's mount namespace."""

    def __init__(self, cfg: SlurmConfig, found: list[DaemonLayout]) -> None:
        super().__init__(found)
        self.cfg = cfg

    def _enter(self, d: DaemonLayout, argv: list[str]) -> list[str]:
        try:
            slurmd = int(self.cfg.slurmd_pid(d.name).read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise ClusterError(f"{d.name}: no slurmd pid in {self.cfg.slurmd_pid(d.name)}: {exc}") from exc
        assert d.netns is not None
        return [_tool("nsenter"), f"--net={_netns_path(d.netns)}", f"--mount=/proc/{slurmd}/ns/mnt", "--", *argv]


@contextlib.contextmanager
def node_dockerds(cfg: SlurmConfig) -> Iterator[Mapping[str, str]]:
    """Start each node's dockerd with the test images (busybox, py) in it; yield node -> DOCKER_HOST; stop them."""
    found = layouts(cfg)
    stop_node_dockerds(cfg)
    try:
        _NodeDaemonStart(cfg, found).run()
        images = ClusterConfig.from_env()  # the SSH cluster's image cache, shared
        with _cache_lock(images.cache_dir):
            # distproc-test:py too: the contract tests (tests/test_contract_e2e.py) run on both backends.
            sources = [_busybox_image(images), _py_image(images)]
        for d in found:
            for image in sources:
                _import_image(images, d, image)
        yield {d.name: f"unix://{d.docker_sock}" for d in found}
    finally:
        stop_node_dockerds(cfg)
