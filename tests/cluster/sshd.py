"""The test login, its keys, and one sshd per host namespace."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
from pathlib import Path

from tests.cluster.config import ClusterConfig, host_address
from tests.cluster.constants import KEX, NETNS_PREFIX, SSH_PORT, USER
from tests.cluster.process import _run, _tail, _tool, _wait_for


def _ensure_user(cfg: ClusterConfig) -> None:
    """The test login: uid 0, /bin/sh, home in the cluster dir, no password (but not locked)."""
    home = str(cfg.home)
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        _run(
            [
                _tool("useradd"),
                "-o",
                "-u",
                "0",
                "-g",
                "0",
                "-M",
                "-d",
                home,
                "-s",
                "/bin/sh",
                "-p",
                "*",
                "-c",
                "distproc test login",
                USER,
            ]
        )
        return
    if entry.pw_uid != 0 or entry.pw_gid != 0 or entry.pw_dir != home or entry.pw_shell != "/bin/sh":
        _run(
            [
                _tool("usermod"),
                "-o",
                "-u",
                "0",
                "-g",
                "0",
                "-d",
                home,
                "-s",
                "/bin/sh",
                USER,
            ]
        )
    # A "!" (locked) password makes sshd refuse even key logins when UsePAM is off.
    _run([_tool("usermod"), "-p", "*", USER])


def _keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair at ``path`` (replacing any) and return the public key."""
    pub = Path(str(path) + ".pub")
    for p in (path, pub):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return pub.read_text().strip()


def _sshd_config(cfg: ClusterConfig, name: str, address: str) -> str:
    d = cfg.cluster_dir / name
    return "\n".join(
        [
            "# distproc test cluster: sshd of one emulated host",
            f"ListenAddress {address}:{SSH_PORT}",
            f"HostKey {d / 'ssh_host_ed25519_key'}",
            f"PidFile {d / 'sshd.pid'}",
            f"KexAlgorithms {KEX}",
            "HostKeyAlgorithms ssh-ed25519",
            f"AllowUsers {USER}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            f"AuthorizedKeysFile {cfg.home / '.ssh' / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "PermitUserEnvironment no",
            "MaxStartups 256:30:512",
            "MaxSessions 256",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _setup_ssh(cfg: ClusterConfig) -> None:
    _ensure_user(cfg)
    ssh_dir = cfg.home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.home, 0o700)
    os.chmod(ssh_dir, 0o700)
    client_pub = _keygen(cfg.key_file, "distproc-tests-client")
    (ssh_dir / "authorized_keys").write_text(client_pub + "\n")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # sshd's privilege-separation directory (normally made by the systemd unit).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    known: list[str] = []
    for i, name in enumerate(cfg.host_names, start=1):
        d = cfg.cluster_dir / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "work").mkdir(exist_ok=True)
        pub = _keygen(d / "ssh_host_ed25519_key", f"distproc-tests-{name}")
        keytype, key = pub.split()[:2]
        known.append(f"{host_address(i)} {keytype} {key}")
        (d / "sshd_config").write_text(_sshd_config(cfg, name, host_address(i)))
    cfg.known_hosts.write_text("\n".join(known) + "\n")

    ip = _tool("ip")
    sshd = _tool("sshd")
    for name in cfg.host_names:
        d = cfg.cluster_dir / name
        # `ip netns exec` also remounts /sys for the namespace, so SSH sessions see
        # their own interfaces under /sys/class/net, as on a real host.
        _run(
            [
                ip,
                "netns",
                "exec",
                NETNS_PREFIX + name,
                sshd,
                "-f",
                str(d / "sshd_config"),
                "-E",
                str(d / "sshd.log"),
            ],
            timeout=30,
        )


def _ssh_banner(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _wait_ssh(cfg: ClusterConfig) -> None:
    pending = {name: host_address(i) for i, name in enumerate(cfg.host_names, start=1)}

    def ready() -> bool:
        for name, addr in list(pending.items()):
            if _ssh_banner(addr, SSH_PORT):
                del pending[name]
        return not pending

    _wait_for(
        "sshd of every host to answer",
        ready,
        timeout=30,
        on_timeout=lambda: "\n".join(f"{n}: {_tail(cfg.cluster_dir / n / 'sshd.log', 10)}" for n in pending),
    )
