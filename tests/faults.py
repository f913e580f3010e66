"""Faults injected into one host of the namespace cluster, and their repair.

Each fault acts on the host's own processes or network namespace, as the
real thing would on a real machine: the link goes down inside the namespace,
sshd and dockerd are killed with SIGKILL. Every `break_*` has its `repair_*`,
which a test calls in a `finally` so the session's cluster is whole again for
the tests after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

from tests.cluster import NETNS_PREFIX, Cluster, ClusterConfig
from tests.cluster.daemons import _DaemonStart
from tests.cluster.hygiene import _pid_from_file, _pids_in_netns
from tests.cluster.process import _comm, _docker_ping, _netns_path, _proc_state, _reap, _tool
from tests.cluster.sshd import _ssh_banner

SSHD_NAMES = frozenset({"sshd", "sshd-session", "sshd-auth"})


def _config() -> ClusterConfig:
    return ClusterConfig.from_env()


def _in_netns(host: str, *argv: str) -> None:
    subprocess.run(
        [_tool("nsenter"), f"--net={_netns_path(NETNS_PREFIX + host)}", "--", *argv],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _wait(what: str, condition: object, timeout: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- the network ---------------------------------------------------------------


def cut_network(host: str) -> None:
    """Take the host's only interface down: packets to and from it vanish, nothing is refused."""
    _in_netns(host, _tool("ip"), "link", "set", "eth0", "down")


def restore_network(cluster: Cluster, host: str) -> None:
    _in_netns(host, _tool("ip"), "link", "set", "eth0", "up")
    h = cluster.host(host)
    _wait(f"{host}'s sshd to answer again", lambda: _ssh_banner(h.address, h.ssh_port))


@contextlib.contextmanager
def network_cut(cluster: Cluster, host: str) -> Iterator[None]:
    cut_network(host)
    try:
        yield
    finally:
        restore_network(cluster, host)


# -- sshd ----------------------------------------------------------------------


def sshd_pids(host: str) -> list[int]:
    """Every sshd process of the host: the listener and each session's."""
    return [pid for pid in _pids_in_netns([NETNS_PREFIX + host]) if _comm(pid) in SSHD_NAMES]


def kill_sshd(host: str) -> None:
    """SIGKILL every sshd of the host: open connections drop, new ones are refused."""
    pids = sshd_pids(host)
    assert pids, f"no sshd found in {host}'s namespace"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait(f"{host}'s sshd to die", lambda: not sshd_pids(host))


def start_sshd(cluster: Cluster, host: str) -> None:
    """Start the host's sshd again, as the cluster build does."""
    d = _config().cluster_dir / host
    subprocess.run(
        [
            _tool("ip"),
            "netns",
            "exec",
            NETNS_PREFIX + host,
            _tool("sshd"),
            "-f",
            str(d / "sshd_config"),
            "-E",
            str(d / "sshd.log"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    h = cluster.host(host)
    _wait(f"{host}'s sshd to answer", lambda: _ssh_banner(h.address, h.ssh_port))


# -- dockerd -------------------------------------------------------------------


def dockerd_pid(host: str) -> int:
    d = _config().daemon(host)
    pid = _pid_from_file(d.dockerd_pid, str(d.dockerd_pid))
    assert pid is not None, f"no live dockerd for {host}"
    return pid


def kill_dockerd(host: str) -> None:
    """SIGKILL the host's dockerd; containerd and the containers' shims live on."""
    d = _config().daemon(host)
    pid = dockerd_pid(host)
    os.kill(pid, signal.SIGKILL)
    _wait(f"{host}'s dockerd to stop answering", lambda: not _docker_ping(d.docker_sock, 0.5))
    # Dead or a zombie (its parent may be slow to reap it): either way it is gone as
    # a daemon, but dockerd refuses to start while its pid file names a live pid.
    _wait(f"{host}'s dockerd to exit", lambda: _proc_state(pid) in (None, "Z"))
    _reap()
    with contextlib.suppress(FileNotFoundError):
        d.dockerd_pid.unlink()


def start_dockerd(host: str) -> None:
    """Start the host's dockerd again on its containerd, as the cluster build does."""
    d = _config().daemon(host)
    with contextlib.suppress(FileNotFoundError):
        d.docker_sock.unlink()
    _DaemonStart([d]).start_dockerd(d)
    _wait(f"{host}'s dockerd to answer", lambda: _docker_ping(d.docker_sock, 1.0), timeout=90)
