"""One containerd + dockerd per host namespace, and one local pair in the root namespace."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from tests.cluster.config import ClusterConfig, DaemonLayout
from tests.cluster.constants import STARTUP_TIMEOUT, ClusterError
from tests.cluster.hygiene import _kill_everything, _stop_daemons, _unmount_all
from tests.cluster.process import (
    _docker_cli_env,
    _docker_ping,
    _log,
    _netns_path,
    _run,
    _spawn,
    _tail,
    _tool,
    _unix_connects,
    _wait_for,
)


def _containerd_config(d: DaemonLayout) -> str:
    return "\n".join(
        [
            "# distproc test cluster: containerd of one emulated host",
            "version = 2",
            f'root = "{d.containerd_root}"',
            f'state = "{d.containerd_state}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "",
            "[grpc]",
            f'  address = "{d.containerd_sock}"',
            "",
            "[debug]",
            '  address = ""',
            "",
            "[metrics]",
            '  address = ""',
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{d.containerd_root}/opt"',
            "",
        ]
    )


def _in_netns(d: DaemonLayout, argv: list[str]) -> list[str]:
    if d.netns is None:
        return argv
    # nsenter, not `ip netns exec`: the latter remounts /sys, and dockerd then
    # cannot find the devices cgroup.
    return [_tool("nsenter"), f"--net={_netns_path(d.netns)}", "--", *argv]


class _DaemonStart:
    """Start containerd and then dockerd for each layout, concurrently."""

    def __init__(self, layouts: Sequence[DaemonLayout]) -> None:
        self.layouts = list(layouts)
        self.containerd: dict[str, subprocess.Popen[bytes]] = {}
        self.dockerd: dict[str, subprocess.Popen[bytes]] = {}

    def _enter(self, d: DaemonLayout, argv: list[str]) -> list[str]:
        """The daemon's command, run in its host's namespaces (a subclass may enter more)."""
        return _in_netns(d, argv)

    def _prepare(self, d: DaemonLayout) -> None:
        d.state_dir.mkdir(parents=True, exist_ok=True)
        d.run_dir.mkdir(parents=True, exist_ok=True)
        d.docker_root.mkdir(parents=True, exist_ok=True)
        d.containerd_root.mkdir(parents=True, exist_ok=True)
        d.containerd_config.write_text(_containerd_config(d))
        # Our own (empty) daemon.json: the machine's /etc/docker/daemon.json must not apply.
        d.dockerd_config.write_text("{}\n")
        for p in (d.dockerd_pid, d.containerd_pid, d.docker_sock, d.containerd_sock):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def start_containerd(self, d: DaemonLayout) -> None:
        self._prepare(d)
        argv = self._enter(d, [_tool("containerd"), "--config", str(d.containerd_config), "--log-level", "warn"])
        proc = _spawn(argv, d.containerd_log)
        d.containerd_pid.write_text(f"{proc.pid}\n")
        self.containerd[d.name] = proc

    def start_dockerd(self, d: DaemonLayout) -> None:
        argv = self._enter(
            d,
            [
                _tool("dockerd"),
                "--config-file",
                str(d.dockerd_config),
                "--data-root",
                str(d.docker_root),
                "--exec-root",
                str(d.exec_root),
                "--pidfile",
                str(d.dockerd_pid),
                "--host",
                f"unix://{d.docker_sock}",
                "--containerd",
                str(d.containerd_sock),
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--cgroup-parent",
                d.cgroup_parent,
                "--log-level",
                "warn",
            ],
        )
        self.dockerd[d.name] = _spawn(argv, d.dockerd_log)

    def _check_alive(self, procs: Mapping[str, subprocess.Popen[bytes]], what: str) -> None:
        for name, proc in procs.items():
            if proc.poll() is not None:
                d = next(x for x in self.layouts if x.name == name)
                log = d.containerd_log if what == "containerd" else d.dockerd_log
                raise ClusterError(f"{what} of {name} exited with status {proc.returncode}; log {log}:\n{_tail(log)}")

    def run(self) -> None:
        for d in self.layouts:
            self.start_containerd(d)
        pending = {d.name: d for d in self.layouts}

        def containerd_ready() -> bool:
            self._check_alive(self.containerd, "containerd")
            for name, d in list(pending.items()):
                if _unix_connects(d.containerd_sock):
                    del pending[name]
                    self.start_dockerd(d)
            return not pending

        _wait_for("containerd to listen", containerd_ready, timeout=STARTUP_TIMEOUT)
        pending = {d.name: d for d in self.layouts}

        def dockerd_ready() -> bool:
            self._check_alive(self.dockerd, "dockerd")
            for name, d in list(pending.items()):
                if _docker_ping(d.docker_sock):
                    del pending[name]
            return not pending

        _wait_for(
            "dockerd to answer /_ping",
            dockerd_ready,
            timeout=STARTUP_TIMEOUT,
            on_timeout=lambda: "\n".join(f"{n}: {_tail(d.dockerd_log, 10)}" for n, d in pending.items()),
        )


def _start_daemons(cfg: ClusterConfig, names: Sequence[str]) -> None:
    layouts = [cfg.daemon(n) for n in names]
    try:
        _DaemonStart(layouts).run()
    except ClusterError as first:
        # A data dir left inconsistent by a crash can stop dockerd starting: drop
        # the (cache-only) data dirs and try once more from scratch.
        _log(f"daemon start failed, retrying with fresh data dirs: {str(first).splitlines()[0]}")
        teardown_daemons(cfg, layouts)
        for d in layouts:
            shutil.rmtree(d.data_dir, ignore_errors=True)
        _DaemonStart(layouts).run()


def teardown_daemons(cfg: ClusterConfig, layouts: Sequence[DaemonLayout]) -> None:
    """Stop and clean up some Docker daemons only (their hosts' sshd keep running)."""
    _stop_daemons(layouts, sshd=False)
    _kill_everything(cfg, [], layouts)
    _unmount_all([d.run_dir for d in layouts] + [d.data_dir for d in layouts])
    for d in layouts:
        shutil.rmtree(d.run_dir, ignore_errors=True)


def _docker_cli(cfg: ClusterConfig, d: DaemonLayout, *args: str, timeout: float = 120.0) -> str:
    argv = [_tool("docker"), "-H", f"unix://{d.docker_sock}", *args]
    return _run(argv, timeout=timeout, env=_docker_cli_env()).stdout


def _clean_daemon(cfg: ClusterConfig, d: DaemonLayout) -> None:
    """Remove containers, networks and volumes a previous run left in a kept data dir."""
    ids = _docker_cli(cfg, d, "ps", "-aq").split()
    if ids:
        _docker_cli(cfg, d, "rm", "-f", "-v", *ids)
    _docker_cli(cfg, d, "network", "prune", "-f")
    _docker_cli(cfg, d, "volume", "prune", "-f")
