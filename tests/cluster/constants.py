"""The names, addresses, paths and limits every part of the harness shares, and its one error."""

from __future__ import annotations

import re
from pathlib import Path

BRIDGE = "dpbr0"
BRIDGE_ADDRESS = "198.18.0.1"
NETWORK_PREFIX = "198.18.0."
PREFIX_LEN = 24
HOST_ADDRESS_OFFSET = 10  # hN gets 198.18.0.(10+N)
NETNS_PREFIX = "dp-"
NETNS_RE = re.compile(r"^dp-h[0-9]+$")
VETH_RE = re.compile(r"^dpv[0-9]+$")
SSH_PORT = 22
USER = "dproot"
IMAGE = "distproc-test:py"
BUSYBOX_IMAGE = "distproc-test:busybox"
LOCAL = "local"
LOCAL_PRIVATE_ADDRESS = "127.0.0.1"
DEFAULT_HOSTS = 3
MIN_HOSTS = 3
MAX_HOSTS = 240
DEFAULT_CLUSTER_DIR = Path("/var/lib/distproc-tests/cluster")
DEFAULT_RUN_DIR = Path("/run/dp")
DEFAULT_CACHE_DIR = Path("/var/cache/distproc-tests")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
CGROUP_PARENT = "distproc-tests"
CONTENT_LABEL = "org.distproc.test.content"
KEX = "curve25519-sha256,curve25519-sha256@libssh.org"
OVERLAY_DIR = Path(__file__).resolve().parent.parent / "image" / "overlay"
# Bump when the way a rootfs or an image is made changes, to invalidate caches.
ROOTFS_RECIPE = 1
IMAGE_RECIPE = 1
PY_IMAGE_CHANGES = (
    'ENTRYPOINT ["/usr/local/bin/probe", "from-entrypoint"]',
    'CMD ["from-cmd"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
)
BUSYBOX_IMAGE_CHANGES = ('CMD ["/bin/sh"]',)
# Parts of a rootfs that a test image does not need (about 140 MB of 260 MB).
ROOTFS_STRIP = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "dev",
)
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Programs we start (or that they start); only these are ever killed by a path match.
OUR_PROGRAMS = frozenset({"dockerd", "containerd", "containerd-shim-runc-v2", "containerd-shim", "sshd", "runc"})

REQUIRED_TOOLS = (
    "ip",
    "nsenter",
    "sshd",
    "ssh",
    "ssh-keygen",
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker",
    "debootstrap",
    "busybox",
    "tar",
    "useradd",
    "usermod",
    "mount",
    "umount",
    "sysctl",
)
TOOL_PACKAGES = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "useradd": "passwd",
    "usermod": "passwd",
    "sysctl": "procps",
}

# Written into the cluster and run dirs; a non-empty dir without it is never wiped.
MARKER = ".distproc-test-cluster"

STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


class ClusterError(RuntimeError):
    """The test cluster could not be built, used or torn down; the message says why."""
