"""Teardown (also the first step of every build): find and stop only what is ours, unmount, clean."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.cluster.config import ClusterConfig, DaemonLayout
from tests.cluster.constants import (
    BRIDGE,
    CGROUP_PARENT,
    LOCAL,
    MARKER,
    NETNS_RE,
    OUR_PROGRAMS,
    STOP_TIMEOUT,
    VETH_RE,
    ClusterError,
)
from tests.cluster.process import (
    _alive,
    _all_pids,
    _cmdline,
    _comm,
    _docker_cli_env,
    _docker_ping,
    _env_path,
    _netns_path,
    _none_alive,
    _protected_pids,
    _read_pid,
    _reap,
    _run,
    _signal,
    _tool,
    _wait_for,
)


def _our_netns() -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if NETNS_RE.match(n))


def _netns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(_netns_path(name))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pids_in_netns(names: Iterable[str]) -> list[int]:
    """Processes whose network namespace is one of ours (like `ip netns pids`)."""
    wanted = {ino for n in names if (ino := _netns_inode(n)) is not None}
    if not wanted:
        return []
    found = []
    for pid in _all_pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in wanted:
            found.append(pid)
    return found


def _pids_in_our_cgroups(names: Iterable[str] | None = None) -> list[int]:
    """Container processes our daemons (all, or those named) placed under the cgroup parent."""
    markers = [f":/{CGROUP_PARENT}/"] if names is None else [f":/{CGROUP_PARENT}/{n}/" for n in names]
    found = []
    for pid in _all_pids():
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if any(m in text for m in markers):
            found.append(pid)
    return found


def _pids_of_our_programs(prefixes: Sequence[str], programs: frozenset[str] = OUR_PROGRAMS) -> list[int]:
    """Daemons we start, recognised by program name and one of our paths in argv."""
    found = []
    for pid in _all_pids():
        argv = _cmdline(pid)
        if not argv:
            continue
        prog = os.path.basename(argv[0].split(":")[0].split()[0]) if argv[0] else ""
        comm = _comm(pid)
        if prog not in programs and comm not in programs:
            continue
        joined = " ".join(argv)
        if any(p in joined for p in prefixes):
            found.append(pid)
    return found


def _pid_from_file(path: Path, must_contain: str) -> int | None:
    """A live pid from a pid file, only if its command line names ``must_contain``."""
    pid = _read_pid(path)
    if pid is None or not _alive(pid):
        return None
    if must_contain not in " ".join(_cmdline(pid)):
        return None  # the pid was reused by something else
    return pid


def _known_daemons(cfg: ClusterConfig) -> list[DaemonLayout]:
    names: set[str] = set()
    for base in (cfg.cluster_dir, cfg.run_dir):
        with contextlib.suppress(OSError):
            for p in base.iterdir():
                if p.is_dir() and (re.fullmatch(r"h[0-9]+", p.name) or p.name == LOCAL):
                    names.add(p.name)
    return [cfg.daemon(n) for n in sorted(names)]


def _mounts_under(prefixes: Sequence[Path]) -> list[str]:
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        for pref in prefixes:
            p = str(pref)
            if mp == p or mp.startswith(p + "/"):
                found.append(mp)
                break
    # Deepest first, each once.
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


def _unmount_all(prefixes: Sequence[Path]) -> None:
    umount = _tool("umount")
    for _ in range(5):
        mounts = _mounts_under(prefixes)
        if not mounts:
            return
        for mp in mounts:
            cp = _run([umount, mp], check=False, timeout=30)
            if cp.returncode != 0:
                _run([umount, "-l", mp], check=False, timeout=30)
    left = _mounts_under(prefixes)
    if left:
        raise ClusterError("could not unmount: " + ", ".join(left[:10]))


def _stop_pids(pids: Sequence[int], *, timeout: float, what: str) -> None:
    """SIGTERM, wait for exit, then SIGKILL whatever is left."""
    pids = [p for p in pids if p not in _protected_pids()]
    if not pids:
        return
    _signal(pids, signal.SIGTERM)
    try:
        _wait_for(what, lambda: not any(_alive(p) for p in pids), timeout=timeout)
    except ClusterError:
        _signal([p for p in pids if _alive(p)], signal.SIGKILL)
        _wait_for(
            f"{what} after SIGKILL",
            lambda: not any(_alive(p) for p in pids),
            timeout=15,
        )
    _reap()


def _kill_everything(cfg: ClusterConfig, netns: Sequence[str], daemons: Sequence[DaemonLayout] | None = None) -> None:
    """SIGKILL every process left in our namespaces, cgroups, or running our daemons.

    With ``daemons``, only the Docker side (containerd, dockerd, shims, containers)
    of those daemons.
    """
    protected = _protected_pids()
    if daemons is None:
        prefixes = [f"{cfg.run_dir}/", f"{cfg.cluster_dir}/"]
        programs = OUR_PROGRAMS
        cgroup_names: list[str] | None = None
    else:
        prefixes = [p for d in daemons for p in (f"{d.run_dir}/", f"{d.state_dir}/")]
        programs = OUR_PROGRAMS - {"sshd"}
        cgroup_names = [d.name for d in daemons]

    def leftovers() -> list[int]:
        pids = set(_pids_in_netns(netns)) | set(_pids_in_our_cgroups(cgroup_names))
        pids |= set(_pids_of_our_programs(prefixes, programs))
        return sorted(p for p in pids if p not in protected and _alive(p))

    for _ in range(10):
        pids = leftovers()
        if not pids:
            break
        _signal(pids, signal.SIGKILL)
        with contextlib.suppress(ClusterError):
            _wait_for("processes to die", functools.partial(_none_alive, pids), timeout=10)
    _reap()
    pids = leftovers()
    if pids:
        desc = ", ".join(f"{p} ({_comm(p)})" for p in pids[:10])
        raise ClusterError(f"processes of the test cluster survive SIGKILL: {desc}")


def _remove_cgroups() -> None:
    roots = [Path("/sys/fs/cgroup") / CGROUP_PARENT]
    with contextlib.suppress(OSError):
        roots += [c / CGROUP_PARENT for c in Path("/sys/fs/cgroup").iterdir() if c.is_dir()]
    for root in roots:
        if not root.is_dir() or root.is_symlink():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _daemon_pids(d: DaemonLayout) -> tuple[int | None, int | None]:
    """Live (dockerd, containerd) pids of one daemon, from its pid files."""
    return (
        _pid_from_file(d.dockerd_pid, str(d.dockerd_pid)),
        _pid_from_file(d.containerd_pid, str(d.containerd_config)),
    )


def _remove_containers(layouts: Sequence[DaemonLayout]) -> None:
    """Ask each healthy dockerd to remove its containers (fast, and lets dockerd clean up)."""
    docker = shutil.which("docker", path=_env_path())
    if not docker:
        return

    def one(d: DaemonLayout) -> None:
        host = f"unix://{d.docker_sock}"
        cp = _run([docker, "-H", host, "ps", "-aq"], check=False, timeout=20, env=_docker_cli_env())
        ids = cp.stdout.split()
        if ids and cp.returncode == 0:
            _run(
                [docker, "-H", host, "rm", "-f", "-v", *ids],
                check=False,
                timeout=20,
                env=_docker_cli_env(),
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, layouts))


def delete_network(
    veth_re: re.Pattern[str], bridge: str, netns: Iterable[str], ours_left: Callable[[], list[str]]
) -> None:
    """Delete our veths (by name pattern), the namespaces and the bridge; fail if a namespace stays.

    Shared by the SSH test cluster and the Slurm test cluster, each with its own names.
    """
    ip = _tool("ip")
    links = _run([ip, "-o", "link", "show"], check=False).stdout
    for m in re.finditer(r"^\d+:\s+([^:@\s]+)", links, re.M):
        if veth_re.match(m.group(1)):
            _run([ip, "link", "del", m.group(1)], check=False)
    for n in netns:
        _run([ip, "netns", "del", n], check=False)
    if re.search(rf"^\d+:\s+{re.escape(bridge)}[:@]", links, re.M):
        _run([ip, "link", "del", bridge], check=False)
    left = ours_left()
    if left:
        raise ClusterError(f"could not delete network namespaces: {', '.join(left)}")


def _stop_daemons(layouts: Sequence[DaemonLayout], *, sshd: bool) -> None:
    """Stop the daemons known by pid file: politely where they are healthy, else SIGKILL.

    Healthy daemons (dockerd and its containerd both up and answering) first
    remove their containers; dockerd (and sshd) get SIGTERM, then containerd.
    A dockerd whose containerd is gone would hang on shutdown: it is killed.
    """
    healthy: list[DaemonLayout] = []
    doomed: list[int] = []
    first: list[int] = []
    second: list[int] = []
    for d in layouts:
        dockerd, containerd = _daemon_pids(d)
        if dockerd is not None and containerd is not None and _docker_ping(d.docker_sock, 2.0):
            healthy.append(d)
            first.append(dockerd)
        elif dockerd is not None:
            doomed.append(dockerd)
        if containerd is not None:
            second.append(containerd)
        if sshd:
            pid = _pid_from_file(d.state_dir / "sshd.pid", str(d.state_dir / "sshd_config"))
            if pid is not None:
                first.append(pid)
    _signal(doomed, signal.SIGKILL)
    _remove_containers(healthy)
    _stop_pids(first, timeout=STOP_TIMEOUT, what="dockerd and sshd to stop")
    _stop_pids(second, timeout=STOP_TIMEOUT, what="containerd to stop")


def _check_ours(d: Path) -> None:
    """Refuse to work in (and later wipe) a non-empty directory we did not make."""
    try:
        entries = [p.name for p in d.iterdir()]
    except FileNotFoundError:
        return
    if entries and MARKER not in entries:
        raise ClusterError(
            f"{d} is not empty and has no {MARKER} file: not a test-cluster directory, "
            "refusing to use (and wipe) it; pick another DISTPROC_TEST_* directory"
        )


def _mark_ours(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text("made by tests/cluster/; wiped and rebuilt by every test session\n")


def teardown(cfg: ClusterConfig, *, purge: bool = False) -> None:
    """Stop and remove everything the test cluster made on this machine.

    Copes with any leftover of an earlier, crashed run. Keeps the Docker data
    dirs (image store) and per-host logs unless ``purge``.
    """
    _check_ours(cfg.cluster_dir)
    _check_ours(cfg.run_dir)
    layouts = _known_daemons(cfg)
    netns = _our_netns()
    _stop_daemons(layouts, sshd=True)

    # Whatever is left (shims, containers, SSH sessions, detached agents): SIGKILL.
    _kill_everything(cfg, netns)
    _unmount_all([cfg.run_dir, cfg.cluster_dir])

    delete_network(VETH_RE, BRIDGE, netns, _our_netns)

    _remove_cgroups()
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    if purge:
        shutil.rmtree(cfg.cluster_dir, ignore_errors=True)
    _reap()
