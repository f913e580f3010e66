"""The test cluster itself: hosts answer SSH with known keys, reach each other, run images."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.cluster import BRIDGE_ADDRESS, Cluster, ClusterHost

pytestmark = pytest.mark.cluster

NETWORK = ipaddress.ip_network("198.18.0.0/24")

# Inside a container: the address used to reach the bridge, and what algo-* resolve to.
WHERE_AM_I = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 9))
print(json.dumps({
    "address": s.getsockname()[0],
    "hostname": socket.gethostname(),
    "peer": socket.gethostbyname(sys.argv[2]),
}))
"""

# Connect to each "ADDRESS:PORT" argument and print {target: first line received}.
CONNECT = """
import json, socket, sys
seen = {}
for target in sys.argv[1:]:
    address, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((address, int(port)), timeout=5) as s:
            s.settimeout(5)
            seen[target] = s.recv(64).decode(errors="replace").strip()
    except OSError as e:
        seen[target] = f"error: {e}"
print(json.dumps(seen))
"""


def _others(cluster: Cluster, h: ClusterHost) -> list[ClusterHost]:
    return [o for o in cluster.hosts if o != h]


def test_layout(cluster: Cluster) -> None:
    """At least 3 hosts, distinct addresses in 198.18.0.0/24, distinct existing work dirs."""
    assert len(cluster.hosts) >= 3
    assert [h.name for h in cluster.hosts] == [f"h{i}" for i in range(1, len(cluster.hosts) + 1)]
    addresses = [h.address for h in cluster.hosts]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a) in NETWORK for a in addresses)
    assert cluster.bridge_address == BRIDGE_ADDRESS
    work = [h.work_dir for h in cluster.hosts] + [cluster.local_work_dir]
    assert len(set(work)) == len(work)
    assert all(w.is_dir() for w in work)
    assert len({h.docker_host for h in cluster.hosts} | {cluster.local_docker_host}) == len(work)
    assert cluster.user == "dproot"
    assert cluster.key_file.is_file() and cluster.known_hosts.is_file()


def test_known_hosts_lists_every_host(cluster: Cluster) -> None:
    lines = [ln.split() for ln in cluster.known_hosts.read_text().splitlines() if ln.strip()]
    assert sorted(ln[0] for ln in lines) == sorted(h.address for h in cluster.hosts)
    assert {ln[1] for ln in lines} == {"ssh-ed25519"}


def test_ssh_with_strict_host_key_checking(cluster: Cluster) -> None:
    """Each sshd answers, with the key known_hosts lists for its address, in its own netns."""
    for h in cluster.hosts:
        argv = [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={cluster.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-i",
            str(cluster.key_file),
            f"{cluster.user}@{h.address}",
            "true",
        ]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert cp.returncode == 0, cp.stderr
        # Logged in as uid 0 with the plain /bin/sh login; the session runs in h's netns.
        out = cluster.ssh(h, 'id -u; echo "$SSH_CONNECTION"; ls /sys/class/net').stdout.split()
        assert out[0] == "0"
        assert out[1:5] == [cluster.bridge_address, out[2], h.address, str(h.ssh_port)]
        assert sorted(out[5:]) == ["eth0", "lo"]


def test_wrong_host_key_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    """Host-key checking is real: h1's address listed with h2's key fails to connect."""
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    keys = {ln.split()[0]: ln for ln in cluster.known_hosts.read_text().splitlines() if ln}
    wrong = tmp_path / "known_hosts"
    wrong.write_text(keys[h2.address].replace(h2.address, h1.address, 1) + "\n")
    wrong_cluster = dataclasses.replace(cluster, known_hosts=wrong)
    cp = wrong_cluster.ssh(h1, "true", check=False)
    assert cp.returncode != 0
    assert "host key" in cp.stderr.lower() or "identification has changed" in cp.stderr.lower()


def test_hosts_reach_each_other_and_the_bridge(cluster: Cluster) -> None:
    """From inside every netns, every other host's sshd and the root namespace answer."""
    for h in cluster.hosts:
        targets = [f"{o.address}:{o.ssh_port}" for o in _others(cluster, h)]
        seen = json.loads(cluster.run_in(h, sys.executable, "-c", CONNECT, *targets).stdout)
        assert sorted(seen) == sorted(targets)
        failed = {t: v for t, v in seen.items() if not v.startswith("SSH-2.0-")}
        assert not failed, (h.name, failed)

    # A listener on the bridge address in the root namespace (where e.g. an S3 server runs).
    with socket.create_server((cluster.bridge_address, 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(30)
        peers: list[str] = []

        def serve() -> None:
            for _ in cluster.hosts:
                conn, peer = server.accept()
                with conn:
                    peers.append(peer[0])
                    conn.sendall(b"SSH-2.0-bridge\r\n")

        t = threading.Thread(target=serve)
        t.start()
        try:
            for h in cluster.hosts:
                target = f"{cluster.bridge_address}:{port}"
                cp = cluster.run_in(h, sys.executable, "-c", CONNECT, target)
                assert json.loads(cp.stdout) == {target: "SSH-2.0-bridge"}
        finally:
            t.join(timeout=30)
        assert sorted(peers) == sorted(h.address for h in cluster.hosts)


def test_no_routes_out(cluster: Cluster) -> None:
    """A host's only IPv4 route is the bridge subnet: no default route, no NAT."""
    for h in cluster.hosts:
        routes = [r for r in cluster.run_in(h, "ip", "-4", "route", "show").stdout.splitlines() if r]
        assert routes and all(r.startswith("198.18.0.0/24 ") for r in routes), routes


def test_docker_host_network_sees_own_address(cluster: Cluster) -> None:
    """Each daemon runs the image with host networking in its own netns, --add-host works."""
    for h in cluster.hosts:
        peer = _others(cluster, h)[0]
        cp = cluster.docker(
            h,
            "run",
            "--rm",
            "--network",
            "host",
            "--hostname",
            "algo-1",
            "--add-host",
            f"algo-2:{peer.address}",
            "--entrypoint",
            "python3",
            cluster.image,
            "-c",
            WHERE_AM_I,
            cluster.bridge_address,
            "algo-2",
        )
        seen = json.loads(cp.stdout)
        assert seen == {"address": h.address, "hostname": "algo-1", "peer": peer.address}


def test_image_entrypoint_probe(cluster: Cluster) -> None:
    """distproc-test:py runs the probe as ENTRYPOINT with CMD defaults, and logs to /opt/ml/output."""
    h = cluster.hosts[0]
    default = json.loads(cluster.docker(h, "run", "--rm", cluster.image).stdout)
    assert default == {"argv": ["/usr/local/bin/probe", "from-entrypoint", "from-cmd"]}
    out = h.work_dir / "probe-test-output"
    out.mkdir()
    cp = cluster.docker(h, "run", "--rm", "-v", f"{out}:/opt/ml/output", cluster.image, "a", "b c")
    expected = {"argv": ["/usr/local/bin/probe", "from-entrypoint", "a", "b c"]}
    assert json.loads(cp.stdout) == expected
    assert [json.loads(ln) for ln in (out / "probe.jsonl").read_text().splitlines()] == [expected]


def test_busybox_image_everywhere(cluster: Cluster) -> None:
    for h in cluster.hosts:
        cp = cluster.docker(h, "run", "--rm", "--network", "host", cluster.busybox_image, "ip", "-4", "addr")
        assert f"inet {h.address}/24" in cp.stdout
    cp = cluster.docker("local", "run", "--rm", cluster.busybox_image, "echo", "local ok")
    assert cp.stdout.strip() == "local ok"


def test_local_daemon_is_in_the_root_namespace(cluster: Cluster) -> None:
    cp = cluster.docker("local", "run", "--rm", "--network", "host", cluster.busybox_image, "ip", "-4", "addr")
    assert f"inet {cluster.bridge_address}/24" in cp.stdout
    assert cluster.docker("local", "image", "inspect", cluster.image).returncode == 0


def test_daemons_are_separate(cluster: Cluster) -> None:
    """A container made on one host's daemon is invisible to the others; containers() sees it."""
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    name = "dp-fixture-separate"
    cluster.docker(h1, "create", "--name", name, "--label", "distproc.test=1", cluster.busybox_image)
    try:
        assert name in cluster.containers(h1)
        assert name not in cluster.containers(h1, all=False)
        assert name not in cluster.containers(h2)
        assert name not in cluster.containers("local")
    finally:
        cluster.docker(h1, "rm", "-f", name)
    assert name not in cluster.containers(h1)


def test_write_inventory(cluster: Cluster, tmp_path: Path) -> None:
    path = cluster.write_inventory(
        tmp_path / "inv.yml",
        instance_type="ml.c5.xlarge",
        hosts=[cluster.hosts[0], cluster.hosts[2].name],
        extra_host_vars={cluster.hosts[2].name: {"distproc_gpus": 0}},
    )
    doc = yaml.safe_load(path.read_text())
    hosts = doc["all"]["hosts"]
    assert list(hosts) == [cluster.hosts[0].name, cluster.hosts[2].name]
    h = cluster.hosts[2]
    assert hosts[h.name]["ansible_host"] == h.address
    assert hosts[h.name]["ansible_user"] == cluster.user
    assert hosts[h.name]["ansible_ssh_private_key_file"] == str(cluster.key_file)
    assert hosts[h.name]["distproc_known_hosts"] == str(cluster.known_hosts)
    assert hosts[h.name]["distproc_instance_type"] == "ml.c5.xlarge"
    assert hosts[h.name]["distproc_docker_host"] == h.docker_host
    assert hosts[h.name]["distproc_work_dir"] == str(h.work_dir)
    assert hosts[h.name]["distproc_private_address"] == h.address
    assert hosts[h.name]["ansible_python_interpreter"] == "/usr/bin/python3"
    assert hosts[h.name]["distproc_gpus"] == 0
    assert "distproc_gpus" not in hosts[cluster.hosts[0].name]

    local = yaml.safe_load(cluster.write_inventory(tmp_path / "local.yml", local=True).read_text())
    assert list(local["all"]["hosts"]) == ["local"]
    lh = local["all"]["hosts"]["local"]
    assert lh["ansible_connection"] == "local"
    assert lh["distproc_docker_host"] == cluster.local_docker_host
    assert lh["distproc_work_dir"] == str(cluster.local_work_dir)

    with pytest.raises(ValueError, match="not in this inventory"):
        cluster.write_inventory(tmp_path / "bad.yml", extra_host_vars={"nope": {}})


def test_ansible_reaches_every_host(cluster: Cluster, tmp_path: Path) -> None:
    """The written inventory drives Ansible over SSH, with host keys checked."""
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent))
    assert ansible, "ansible-core is a dev dependency; its `ansible` command is missing"
    inv = cluster.write_inventory(tmp_path / "inv.yml")
    cp = subprocess.run(
        [ansible, "all", "-i", str(inv), "-m", "ansible.builtin.ping", "-o"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
            "ANSIBLE_NOCOLOR": "1",
            "LANG": "C.UTF-8",
        },
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for h in cluster.hosts:
        assert f"{h.name} | SUCCESS" in cp.stdout
