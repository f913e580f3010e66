"""A real multi-host test cluster on one Linux machine.

Each "host" is a network namespace ``dp-hN`` plugged into the bridge ``dpbr0``
(198.18.0.1/24, RFC 2544 benchmarking range, no NAT, no routes out), with its
own sshd and its own containerd + dockerd. A further "local" containerd +
dockerd runs in the root namespace for ``ansible_connection: local`` hosts.
Test images are built without a registry (debootstrap or a static busybox
tree, then ``docker import``) and cached under ``/var/cache/distproc-tests``.

The parts, one module each:

- constants: names, addresses, paths, limits; :class:`ClusterError`
- model: :class:`Cluster` and :class:`ClusterHost`, what tests use
- config: :class:`ClusterConfig` (where and how big) and each daemon's paths
- process: running, finding, signalling and reaping processes
- preflight, lock: what the machine must have; one cluster per machine
- hygiene: teardown, which stops and removes only what is ours
- network, sshd, daemons, images: the build steps
- build: :func:`build`, :func:`running_cluster`, :func:`status`
- jobs: what end-to-end tests share (:class:`Env`, ``job_doc``...)
- plugin: the pytest fixtures ``cluster``, ``env``, ``moto``, ``s3env``
  (registered by tests/conftest.py)

Used by the ``cluster`` fixture, and by hand::

    sudo .venv/bin/python -m tests.cluster up      # build (or rebuild) and leave running
    sudo .venv/bin/python -m tests.cluster status
    sudo .venv/bin/python -m tests.cluster down    # stop everything (--purge: drop data too)

See docs/testing.md for the reasons behind each choice.
"""

from tests.cluster.build import build, running_cluster, status
from tests.cluster.config import ClusterConfig, DaemonLayout, host_address
from tests.cluster.constants import (
    BRIDGE,
    BRIDGE_ADDRESS,
    BUSYBOX_IMAGE,
    CONTENT_LABEL,
    IMAGE,
    LOCAL,
    NETNS_PREFIX,
    SUITE,
    USER,
    ClusterError,
)
from tests.cluster.hygiene import teardown
from tests.cluster.images import ImageSource, debian_mirror
from tests.cluster.lock import cluster_lock
from tests.cluster.model import Cluster, ClusterHost
from tests.cluster.preflight import preflight

__all__ = [
    "BRIDGE",
    "BRIDGE_ADDRESS",
    "BUSYBOX_IMAGE",
    "CONTENT_LABEL",
    "IMAGE",
    "LOCAL",
    "NETNS_PREFIX",
    "SUITE",
    "USER",
    "Cluster",
    "ClusterConfig",
    "ClusterError",
    "ClusterHost",
    "DaemonLayout",
    "ImageSource",
    "build",
    "cluster_lock",
    "debian_mirror",
    "host_address",
    "preflight",
    "running_cluster",
    "status",
    "teardown",
]
