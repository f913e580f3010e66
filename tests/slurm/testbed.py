"""Build and tear down the Slurm test cluster: munged, slurmctld, one slurmd per network namespace.

Installs nothing (the Debian packages come from .ci/run). Every build starts
with the teardown that ends a session, so a crashed run is cleaned up. Only
what is ours is stopped: pid files checked against the command line (which
names our slurm.conf or munge socket), and processes inside our own network
namespaces (slurmstepd and job tasks: Slurm's proctrack/linuxproc misses
daemonised children, so the namespace is the identity that catches them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.constants import STOP_TIMEOUT, ClusterError
from tests.cluster.hygiene import (
    _check_ours,
    _mark_ours,
    _pid_from_file,
    _pids_in_netns,
    _stop_pids,
    _unmount_all,
    delete_network,
)
from tests.cluster.lock import path_lock
from tests.cluster.process import (
    _alive,
    _env_path,
    _log,
    _netns_path,
    _protected_pids,
    _reap,
    _run,
    _signal,
    _spawn,
    _tail,
    _unix_connects,
    _wait_for,
)
from tests.slurm.docker import stop_node_dockerds
from tests.slurm.layout import (
    BRIDGE,
    CONTROLLER_ADDRESS,
    MUNGE_USER,
    NETNS_PREFIX,
    NETNS_RE,
    PARTITION,
    PREFIX_LEN,
    TOOL_PACKAGES,
    VETH_RE,
    SlurmConfig,
    fake_gpu_dir,
    gres_conf,
    node_address,
    slurm_conf,
)

STARTUP_TIMEOUT = 60.0
_NO_IPV6 = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")


@dataclass(frozen=True)
class SlurmNode:
    name: str  # Slurm's node name, also the hostname its tasks see
    netns: str
    address: str
    local_dir: Path  # this node's own dir, seen inside the node at SlurmCluster.local_dir


@dataclass(frozen=True)
class SlurmCluster:
    """A running Slurm test cluster; clients (sbatch, srun, ...) run in the root namespace."""

    config: SlurmConfig
    nodes: tuple[SlurmNode, ...]
    controller_address: str = CONTROLLER_ADDRESS
    partition: str = PARTITION

    @property
    def conf(self) -> Path:
        return self.config.conf

    @property
    def local_dir(self) -> Path:
        return self.config.local_dir

    def node(self, name: str) -> SlurmNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def env(self) -> dict[str, str]:
        """The environment a Slurm client needs: without SLURM_CONF it falls back to a DNS SRV lookup."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = _env_path()
        return env

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A Slurm client command (``sbatch``, ``srun``, ``scontrol`` ...) against this cluster."""
        return _run(list(argv), check=check, timeout=timeout, input=input, env=self.env())

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Reason, NodeList ...); {} once the job is gone."""
        cp = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if cp.returncode != 0:
            return {}
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", cp.stdout))

    def wait_job(
        self, job_id: str, states: set[str], *, reason: str | None = None, timeout: float = 60.0
    ) -> dict[str, str]:
        """Wait until the job is in one of ``states`` (and, if given, has that Reason); its fields."""
        seen: dict[str, str] = {}

        def reached() -> bool:
            seen.clear()
            seen.update(self.job(job_id))
            return seen.get("JobState") in states and (reason is None or seen.get("Reason") == reason)

        _wait_for(
            f"job {job_id} to be {'/'.join(sorted(states))}" + (f" with Reason={reason}" if reason else ""),
            reached,
            timeout=timeout,
            interval=0.2,
            on_timeout=lambda: f"last: JobState={seen.get('JobState')} Reason={seen.get('Reason')}",
        )
        return dict(seen)


def missing_tools() -> list[str]:
    out = []
    for tool, pkg in TOOL_PACKAGES.items():
        if not shutil.which(tool, path=_env_path()):
            out.append(f"required program {tool!r} not found (Debian package {pkg})")
    return out


def preflight(cfg: SlurmConfig) -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, slurmd as root)")
    problems += missing_tools()
    try:
        pwd.getpwnam(MUNGE_USER)
    except KeyError:
        problems.append(f"no {MUNGE_USER!r} user (Debian package munge makes it)")
    if not Path("/run/netns").exists() and not os.access("/run", os.W_OK):
        problems.append("cannot create /run/netns")
    return problems


def _tool(name: str) -> str:
    found = shutil.which(name, path=_env_path())
    if not found:
        raise ClusterError(f"required program {name!r} not found (Debian package {TOOL_PACKAGES.get(name, '?')})")
    return found


def _our_netns() -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if NETNS_RE.match(n))


def _our_pids(cfg: SlurmConfig) -> list[int]:
    """Live pids of our daemons, from pid files whose process still names our conf or socket."""
    files = [(cfg.slurmctld_pid, str(cfg.conf)), (cfg.munged_pid, str(cfg.munge_socket))]
    files += [(cfg.slurmd_pid(n), str(cfg.conf)) for n in _node_names_on_disk(cfg)]
    return [p for f, needle in files if (p := _pid_from_file(f, needle)) is not None]


def _node_names_on_disk(cfg: SlurmConfig) -> list[str]:
    """Nodes of an earlier build (maybe of another size): from their pid files."""
    try:
        names = {f.name.split(".", 1)[0] for f in cfg.state_dir.glob("*.slurmd.pid")}
    except OSError:
        names = set()
    return sorted(names | set(cfg.node_names))


def teardown(cfg: SlurmConfig) -> None:
    """Stop and remove everything the Slurm test cluster made; logs stay in the state dir."""
    _check_ours(cfg.state_dir)
    stop_node_dockerds(cfg)  # a crashed session's node dockerds: before their namespaces go
    netns = _our_netns()
    slurm = [p for p in _our_pids(cfg) if p != _pid_from_file(cfg.munged_pid, str(cfg.munge_socket))]
    _stop_pids(slurm, timeout=STOP_TIMEOUT, what="slurmctld and slurmd to stop")
    # Whatever still runs in our namespaces (slurmstepd, job tasks, their escaped children) is ours.
    protected = _protected_pids()
    for _ in range(10):
        left = [p for p in _pids_in_netns(netns) if p not in protected and _alive(p)]
        if not left:
            break
        _signal(left, signal.SIGKILL)
        with contextlib.suppress(ClusterError):
            _wait_for("job processes to die", lambda left=left: not any(_alive(p) for p in left), timeout=10)
    munged = _pid_from_file(cfg.munged_pid, str(cfg.munge_socket))
    if munged is not None:
        _stop_pids([munged], timeout=STOP_TIMEOUT, what="munged to stop")
    for f in [cfg.slurmctld_pid, cfg.munged_pid, *(cfg.slurmd_pid(n) for n in _node_names_on_disk(cfg))]:
        f.unlink(missing_ok=True)
    # The node-local bind mounts live in each slurmd's own mount namespace, gone with it;
    # this only catches one made by hand in the root namespace.
    if cfg.state_dir.exists():
        _unmount_all([cfg.state_dir])

    delete_network(VETH_RE, BRIDGE, netns, _our_netns)
    _reap()


def _setup_network(cfg: SlurmConfig) -> None:
    ip = _tool("ip")
    nsenter = _tool("nsenter")
    _run([ip, "link", "add", BRIDGE, "type", "bridge"])
    with contextlib.suppress(FileNotFoundError):
        Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6").write_text("1")
    _run([ip, "addr", "add", f"{CONTROLLER_ADDRESS}/{PREFIX_LEN}", "dev", BRIDGE])
    _run([ip, "link", "set", BRIDGE, "up"])
    # As for the SSH cluster (tests/cluster/network.py): with br_netfilter loaded,
    # bridged node-to-node frames would pass iptables FORWARD (DROP under docker.io).
    for fam in ("iptables", "ip6tables", "arptables"):
        p = Path(f"/proc/sys/net/bridge/bridge-nf-call-{fam}")
        if p.exists() and p.read_text().strip() != "0":
            p.write_text("0")
    for i, name in enumerate(cfg.node_names, start=1):
        ns = NETNS_PREFIX + name
        veth = f"dpslv{i}"
        _run([ip, "netns", "add", ns])
        _run(
            [nsenter, f"--net={_netns_path(ns)}", "--", _tool("sysctl"), "-q", "-w", *_NO_IPV6],
            check=False,
        )
        _run([ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        with contextlib.suppress(FileNotFoundError):
            Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1")
        _run([ip, "link", "set", veth, "master", BRIDGE])
        _run([ip, "link", "set", veth, "up"])
        _run([ip, "-n", ns, "link", "set", "lo", "up"])
        _run([ip, "-n", ns, "addr", "add", f"{node_address(i)}/{PREFIX_LEN}", "dev", "eth0"])
        _run([ip, "-n", ns, "link", "set", "eth0", "up"])


def _start_munged(cfg: SlurmConfig) -> None:
    """A private munged (its own key and socket); nothing of the system's munge is used."""
    d = cfg.munge_dir
    d.mkdir(parents=True, exist_ok=True)
    key = d / "munge.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    try:
        os.write(fd, os.urandom(1024))
    finally:
        os.close(fd)
    pw = pwd.getpwnam(MUNGE_USER)
    for p in (d, key):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    # munged dies unless every directory up to its socket is world-executable.
    d.chmod(0o755)
    argv = [
        _tool("setpriv"),
        f"--reuid={MUNGE_USER}",
        f"--regid={MUNGE_USER}",
        "--init-groups",
        _tool("munged"),
        "-F",
        f"--socket={cfg.munge_socket}",
        f"--key-file={key}",
        f"--pid-file={d / 'munged.self.pid'}",
        f"--log-file={d / 'munged.log'}",
        f"--seed-file={d / 'munged.seed'}",
    ]
    proc = _spawn(argv, cfg.state_dir / "munged.out")  # setpriv execs: this pid is munged's
    cfg.munged_pid.write_text(f"{proc.pid}\n")
    _wait_for(
        "munged's socket",
        lambda: proc.poll() is None and _unix_connects(cfg.munge_socket),
        timeout=STARTUP_TIMEOUT,
        on_timeout=lambda: _tail(d / "munged.log") + "\n" + _tail(cfg.state_dir / "munged.out"),
    )
    if proc.poll() is not None:
        raise ClusterError(f"munged exited ({proc.returncode}):\n{_tail(cfg.state_dir / 'munged.out')}")
    cred = _run([_tool("munge"), "-S", str(cfg.munge_socket), "-n"]).stdout
    _run([_tool("unmunge"), "-S", str(cfg.munge_socket)], input=cred)


def _start_slurmctld(cfg: SlurmConfig, env: Mapping[str, str]) -> None:
    proc = _spawn([_tool("slurmctld"), "-D", "-c", "-f", str(cfg.conf)], cfg.state_dir / "slurmctld.out")
    cfg.slurmctld_pid.write_text(f"{proc.pid}\n")
    scontrol = _tool("scontrol")

    def up() -> bool:
        if proc.poll() is not None:
            raise ClusterError(
                f"slurmctld exited ({proc.returncode}):\n{_tail(cfg.state_dir / 'slurmctld.out')}\n"
                + _tail(cfg.state_dir / "slurmctld.log")
            )
        return " is UP" in _run([scontrol, "ping"], check=False, timeout=10, env=env).stdout

    _wait_for("slurmctld to answer", up, timeout=STARTUP_TIMEOUT, interval=0.2)


def _start_slurmd(cfg: SlurmConfig, name: str) -> subprocess.Popen[bytes]:
    """slurmd in the node's network namespace, with its own UTS (hostname = node name)
    and mount namespace, where SlurmConfig.local_dir is the node's own directory.
    nsenter, unshare and sh each exec the next, so the pid we record is slurmd's."""
    nd = cfg.node_dir(name)
    for sub in ("spool", "local"):
        (nd / sub).mkdir(parents=True, exist_ok=True)
    script = (
        f"hostname {shlex.quote(name)} && mount --bind {shlex.quote(str(nd / 'local'))} "
        f"{shlex.quote(str(cfg.local_dir))} && exec {shlex.quote(_tool('slurmd'))} -D -N {shlex.quote(name)} "
        f"-f {shlex.quote(str(cfg.conf))}"
    )
    argv = [
        _tool("nsenter"),
        f"--net={_netns_path(NETNS_PREFIX + name)}",
        _tool("unshare"),
        "--uts",
        "--mount",
        "--propagation",
        "slave",
        "/bin/sh",
        "-c",
        script,
    ]
    proc = _spawn(argv, nd / "slurmd.out")
    cfg.slurmd_pid(name).write_text(f"{proc.pid}\n")
    return proc


def _wait_idle(cfg: SlurmConfig, env: Mapping[str, str], slurmds: Mapping[str, subprocess.Popen[bytes]]) -> None:
    sinfo = _tool("sinfo")
    want = set(cfg.node_names)

    def idle() -> bool:
        # Our own child's exit status, not /proc: a process in the middle of
        # nsenter -> unshare -> sh -> slurmd execs can show an empty command line.
        for n, proc in slurmds.items():
            if proc.poll() is not None:
                raise ClusterError(
                    f"slurmd of {n} exited ({proc.returncode}):\n{_tail(cfg.node_dir(n) / 'slurmd.out')}"
                )
        out = _run([sinfo, "-h", "-N", "-t", "idle", "-o", "%N"], check=False, timeout=10, env=env).stdout
        return want <= set(out.split())

    _wait_for(
        f"{len(want)} Slurm nodes to be idle",
        idle,
        timeout=STARTUP_TIMEOUT,
        interval=0.2,
        on_timeout=lambda: _run([sinfo, "-N"], check=False, env=env).stdout,
    )


def build(cfg: SlurmConfig) -> SlurmCluster:
    """Tear down any leftover, then start munged, slurmctld and the slurmds; wait until every node is idle."""
    cfg.validate()
    teardown(cfg)
    _mark_ours(cfg.state_dir)
    for sub in ("state", "etc", "local"):
        shutil.rmtree(cfg.state_dir / sub, ignore_errors=True)
        (cfg.state_dir / sub).mkdir(parents=True)
    # Each build's logs are its own (a post-mortem reads the last session's).
    for f in ("munged.out", "slurmctld.out", "slurmctld.log", "jobcomp.txt", "munge/munged.log"):
        (cfg.state_dir / f).unlink(missing_ok=True)
    for n in cfg.node_names:
        shutil.rmtree(cfg.node_dir(n), ignore_errors=True)
    cfg.conf.write_text(slurm_conf(cfg))
    fake_gpus = fake_gpu_dir(cfg)
    fake_gpus.mkdir(exist_ok=True)
    for i in range(4):
        device = fake_gpus / f"nvidia{i}"
        device.unlink(missing_ok=True)
        # slurmd wants character devices; /dev/null's numbers: harmless if anything opened one.
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    (cfg.conf.parent / "gres.conf").write_text(gres_conf(cfg))
    nodes = tuple(
        SlurmNode(n, NETNS_PREFIX + n, node_address(i), cfg.node_dir(n) / "local")
        for i, n in enumerate(cfg.node_names, start=1)
    )
    c = SlurmCluster(cfg, nodes)
    _start_munged(cfg)
    _setup_network(cfg)
    env = c.env()
    _start_slurmctld(cfg, env)
    slurmds = {n: _start_slurmd(cfg, n) for n in cfg.node_names}
    _wait_idle(cfg, env, slurmds)
    _log(f"Slurm test cluster up: {', '.join(n.name for n in nodes)} (SLURM_CONF={cfg.conf})")
    return c


@contextlib.contextmanager
def running_slurm(cfg: SlurmConfig) -> Iterator[SlurmCluster]:
    """Hold the Slurm cluster's machine-wide lock, build it, yield it, tear it down."""
    with path_lock(cfg.lock_file, what="the Slurm test cluster"):
        try:
            yield build(cfg)
        finally:
            teardown(cfg)
