"""Build the cluster, hold it for a block (:func:`running_cluster`), and say what of it is running."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.cluster.config import ClusterConfig, DaemonLayout
from tests.cluster.constants import LOCAL, MARKER, ClusterError
from tests.cluster.daemons import _clean_daemon, _start_daemons
from tests.cluster.hygiene import _known_daemons, _mark_ours, _our_netns, _pid_from_file, teardown
from tests.cluster.images import ImageSource, _busybox_image, _cache_lock, _import_image, _py_image
from tests.cluster.lock import cluster_lock
from tests.cluster.model import Cluster
from tests.cluster.network import _setup_network
from tests.cluster.preflight import preflight
from tests.cluster.process import _docker_ping, _log
from tests.cluster.sshd import _setup_ssh, _wait_ssh


def build(cfg: ClusterConfig) -> Cluster:
    """Tear down any leftover, then build the whole cluster; returns its description.

    The caller should hold :func:`cluster_lock`.
    """
    problems = preflight(cfg)
    if problems:
        raise ClusterError("cannot build the test cluster:\n  - " + "\n  - ".join(problems))
    t0 = time.monotonic()
    teardown(cfg)
    # Fresh per-run state; keep only the Docker data dirs (image store).
    cfg.cluster_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.cluster_dir, 0o755)
    _mark_ours(cfg.cluster_dir)
    for p in cfg.cluster_dir.iterdir():
        if p.name in ("docker", MARKER):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    _mark_ours(cfg.run_dir)
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    (cfg.cluster_dir / LOCAL / "work").mkdir(parents=True, exist_ok=True)

    _setup_network(cfg)
    _setup_ssh(cfg)
    daemon_names = [*cfg.host_names, LOCAL]

    # Start the daemons while the images are prepared (debootstrap, when not cached).
    with ThreadPoolExecutor(max_workers=1) as pool:
        images_f = pool.submit(_prepare_images, cfg)
        _start_daemons(cfg, daemon_names)
        _wait_ssh(cfg)
        images = images_f.result()
    t1 = time.monotonic()

    layouts = [cfg.daemon(n) for n in daemon_names]
    imported = 0

    def provision(d: DaemonLayout) -> int:
        _clean_daemon(cfg, d)
        return sum(_import_image(cfg, d, img) for img in images)

    with ThreadPoolExecutor(max_workers=min(4, len(layouts))) as pool:
        imported = sum(pool.map(provision, layouts))
    c = cfg.cluster()
    _log(
        f"cluster up: {len(c.hosts)} hosts + local daemon in {time.monotonic() - t0:.1f}s "
        f"(images ready {t1 - t0:.1f}s, {imported} imports)"
    )
    return c


def _prepare_images(cfg: ClusterConfig) -> list[ImageSource]:
    with _cache_lock(cfg.cache_dir):
        return [_py_image(cfg), _busybox_image(cfg)]


@contextlib.contextmanager
def running_cluster(cfg: ClusterConfig | None = None) -> Iterator[Cluster]:
    """Build the cluster (holding the lock), yield it, and tear it down afterwards."""
    cfg = cfg or ClusterConfig.from_env()
    with cluster_lock(cfg):
        try:
            c = build(cfg)
        except BaseException:
            with contextlib.suppress(Exception):
                teardown(cfg)
            raise
        try:
            yield c
        finally:
            teardown(cfg)


def status(cfg: ClusterConfig) -> dict[str, Any]:
    """What of the cluster is running now (for `python -m tests.cluster status`)."""
    out: dict[str, Any] = {
        "cluster_dir": str(cfg.cluster_dir),
        "netns": _our_netns(),
        "daemons": {},
    }
    for d in _known_daemons(cfg):
        entry: dict[str, Any] = {
            "dockerd": _pid_from_file(d.dockerd_pid, str(d.dockerd_pid)),
            "containerd": _pid_from_file(d.containerd_pid, str(d.containerd_config)),
            "docker_ping": _docker_ping(d.docker_sock),
        }
        if d.netns is not None:
            entry["sshd"] = _pid_from_file(d.state_dir / "sshd.pid", str(d.state_dir / "sshd_config"))
            entry["netns"] = d.netns
        out["daemons"][d.name] = entry
    return out
