"""The bridge, the network namespaces and their veth pairs."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tests.cluster.config import ClusterConfig, host_address
from tests.cluster.constants import BRIDGE, BRIDGE_ADDRESS, NETNS_PREFIX, PREFIX_LEN
from tests.cluster.process import _netns_path, _run, _tool


def _write_sysctl(path: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).write_text(value)


def _setup_network(cfg: ClusterConfig) -> None:
    ip = _tool("ip")
    nsenter = _tool("nsenter")

    def run(*args: str) -> None:
        _run([ip, *args])

    run("link", "add", BRIDGE, "type", "bridge")
    _write_sysctl(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6", "1")
    run("addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LEN}", "dev", BRIDGE)
    run("link", "set", BRIDGE, "up")
    # With br_netfilter loaded, bridged frames go through iptables FORWARD, whose
    # policy docker.io's own daemon sets to DROP: let bridged frames bypass iptables.
    for fam in ("iptables", "ip6tables", "arptables"):
        p = Path(f"/proc/sys/net/bridge/bridge-nf-call-{fam}")
        if p.exists() and p.read_text().strip() != "0":
            p.write_text("0")

    # The kernel's ARP table is one table for all namespaces, capped by the root
    # namespace's gc_thresh3 (1024 by default). A full mesh of N hosts needs about
    # N*N entries (each side of each pair); 64 hosts overflow it ("neighbor table
    # overflow!"), and new connections time out. Raise the limits, never lower them.
    need = 2 * (cfg.n_hosts + 2) ** 2
    for knob, value in (("gc_thresh1", need // 4), ("gc_thresh2", need // 2), ("gc_thresh3", need)):
        p = Path("/proc/sys/net/ipv4/neigh/default") / knob
        with contextlib.suppress(OSError, ValueError):
            if int(p.read_text()) < value:
                p.write_text(str(value))

    for i, name in enumerate(cfg.host_names, start=1):
        ns = NETNS_PREFIX + name
        veth = f"dpv{i}"
        run("netns", "add", ns)
        _run(
            [
                nsenter,
                f"--net={_netns_path(ns)}",
                "--",
                _tool("sysctl"),
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            check=False,
        )
        run("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6", "1")
        run("link", "set", veth, "master", BRIDGE)
        run("link", "set", veth, "up")
        run("-n", ns, "link", "set", "lo", "up")
        run("-n", ns, "addr", "add", f"{host_address(i)}/{PREFIX_LEN}", "dev", "eth0")
        run("-n", ns, "link", "set", "eth0", "up")
