"""The Slurm test cluster's names, addresses, paths and its slurm.conf (pure: nothing is started here).

Its own names and network, apart from the SSH test cluster (dp-hN, dpbr0,
198.18.0.0/24) and from /work/shared/slurm's by-hand recipe (sl*, slbr0,
198.19.88.0/24, ports 6817/6818), so any of them can run beside the others:
nodes sl1..slN in namespaces dp-slN, bridge dpslbr0, 198.19.90.0/24, ports
16817 (slurmctld) and 16818 (slurmd).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.constants import ClusterError

BRIDGE = "dpslbr0"
NETWORK_PREFIX = "198.19.90."
CONTROLLER_ADDRESS = NETWORK_PREFIX + "1"
PREFIX_LEN = 24
NODE_ADDRESS_OFFSET = 10  # slN gets 198.19.90.(10+N)
NODE_PREFIX = "sl"
NETNS_PREFIX = "dp-"
NETNS_RE = re.compile(r"^dp-sl[0-9]+$")
VETH_RE = re.compile(r"^dpslv[0-9]+$")
CTLD_PORT = 16817
SLURMD_PORT = 16818
PARTITION = "debug"
CLUSTER_NAME = "distproc-test"
DEFAULT_NODES = 3
MIN_NODES = 3
MAX_NODES = 32
DEFAULT_STATE_DIR = Path("/var/lib/distproc-tests/slurm")
# The Debian packages (see .ci/run) that provide what the test cluster runs.
TOOL_PACKAGES = {
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "srun": "slurm-client",
    "squeue": "slurm-client",
    "scontrol": "slurm-client",
    "scancel": "slurm-client",
    "sinfo": "slurm-client",
    "munged": "munge",
    "munge": "munge",
    "unmunge": "munge",
    "setpriv": "util-linux",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
}
MUNGE_USER = "munge"


def node_address(index: int) -> str:
    return f"{NETWORK_PREFIX}{NODE_ADDRESS_OFFSET + index}"


@dataclass(frozen=True)
class SlurmConfig:
    """How many nodes and where the state lives (DISTPROC_TEST_SLURM_NODES, DISTPROC_TEST_SLURM_DIR)."""

    n_nodes: int = DEFAULT_NODES
    state_dir: Path = DEFAULT_STATE_DIR

    @classmethod
    def from_env(cls) -> SlurmConfig:
        raw = os.environ.get("DISTPROC_TEST_SLURM_NODES", "").strip() or str(DEFAULT_NODES)
        if not raw.isdigit():
            raise ClusterError(f"DISTPROC_TEST_SLURM_NODES must be a whole number, not {raw!r}")
        d = Path(os.environ.get("DISTPROC_TEST_SLURM_DIR", "").strip() or DEFAULT_STATE_DIR)
        cfg = cls(int(raw), d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not MIN_NODES <= self.n_nodes <= MAX_NODES:
            raise ClusterError(
                f"the Slurm test cluster needs {MIN_NODES}..{MAX_NODES} nodes "
                f"(DISTPROC_TEST_SLURM_NODES), not {self.n_nodes}"
            )
        p = self.state_dir
        if not p.is_absolute() or len(p.parts) < 3 or ".." in p.parts:
            raise ClusterError(f"the Slurm state dir must be an absolute path at least two levels deep: {p}")
        # munged's socket lives under it; sun_path is 108 bytes.
        if len(str(self.munge_socket)) > 100:
            raise ClusterError(f"the Slurm state dir {p} is too long for munged's unix socket")

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(f"{NODE_PREFIX}{i}" for i in range(1, self.n_nodes + 1))

    @property
    def lock_file(self) -> Path:
        return self.state_dir.with_name(self.state_dir.name + ".lock")

    @property
    def conf(self) -> Path:
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def munge_dir(self) -> Path:
        return self.state_dir / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def munged_pid(self) -> Path:
        return self.state_dir / "munged.pid"  # ours (the Popen's pid), not munged's own --pid-file

    @property
    def slurmctld_pid(self) -> Path:
        return self.state_dir / "slurmctld.pid"

    def node_dir(self, name: str) -> Path:
        return self.state_dir / name

    def slurmd_pid(self, name: str) -> Path:
        return self.state_dir / f"{name}.slurmd.pid"

    @property
    def local_dir(self) -> Path:
        """The path that is each node's own directory inside that node (a bind mount in its mount namespace)."""
        return self.state_dir / "local"


#: Each node's stand-in GPUs (gres.conf): types a and b, two devices each.
GRES = "gpu:a:2,gpu:b:2"


def fake_gpu_dir(cfg: SlurmConfig) -> Path:
    """Where the stand-in GPU devices are: nvidia0..3, /dev/null's (Slurm numbers a GPU by its file's digits)."""
    return cfg.state_dir / "fake-gpus"


def gres_conf(cfg: SlurmConfig) -> str:
    """gres.conf beside slurm.conf: the stand-in GPUs, by file, so that Slurm names the devices it gives a job.

    No GPU exists here. Slurm's gres/gpu plugin takes a GPU's index from its
    device file's name and sets SLURM_JOB_GPUS/SLURM_STEP_GPUS/CUDA_VISIBLE_DEVICES
    from it; it wants character devices (a regular file is refused with an
    error and then names no devices), so they are /dev/null's numbers; without
    cgroups (task/none) nothing opens them.
    """
    d = fake_gpu_dir(cfg)
    return f"Name=gpu Type=a File={d}/nvidia[0-1]\nName=gpu Type=b File={d}/nvidia[2-3]\n"


def slurm_conf(cfg: SlurmConfig, controller_name: str | None = None) -> str:
    """slurm.conf for the test cluster.

    Why these settings (measured on the 2-core CI machine, see /work/shared/slurm):
    no systemd and no cgroup plugins (proctrack/linuxproc, task/none,
    jobacct_gather/none); every node sees the machine's CPUs, so the node lines
    override the hardware (config_overrides); no slurmdbd, so no accounting
    (final states come from `scontrol show job`, kept MinJobAge s). slurmctld
    refuses to start unless SlurmctldHost's name is this machine's short
    hostname; the address in parentheses is the one the slurmds use.
    """
    host = controller_name or socket.gethostname().split(".", 1)[0]
    s = cfg.state_dir
    lines = [
        "# generated by tests/slurm/ for the test session; rewritten at every build",
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={host}({CONTROLLER_ADDRESS})",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={cfg.munge_socket}",
        f"SlurmctldPort={CTLD_PORT}",
        f"SlurmdPort={SLURMD_PORT}",
        f"StateSaveLocation={s}/state",
        f"SlurmctldPidFile={s}/slurmctld.self.pid",
        f"SlurmctldLogFile={s}/slurmctld.log",
        f"SlurmdSpoolDir={s}/%n/spool",
        f"SlurmdPidFile={s}/%n/slurmd.self.pid",
        f"SlurmdLogFile={s}/%n/slurmd.log",
        "SlurmdParameters=config_overrides",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={s}/jobcomp.txt",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "MpiDefault=none",
        "MailProg=/bin/true",
        # As most sites: a node an admin (or a test) sets DOWN stays DOWN until resumed,
        # so that a job's node failure can be named; one that stopped responding comes back.
        "ReturnToService=1",
        "SlurmdTimeout=30",
        "KillWait=5",
        "MinJobAge=600",
        "InactiveLimit=0",
        "NodeName=DEFAULT CPUs=1 RealMemory=1000 State=UNKNOWN",
        # Four stand-in GPUs per node, two of each type (gres_conf): a job asking for type b
        # gets devices 2 and 3, never the node's first two. No job asks for them unless it says so.
        "GresTypes=gpu",
        f"NodeName=DEFAULT Gres={GRES}",
    ]
    lines += [f"NodeName={n} NodeAddr={node_address(i)}" for i, n in enumerate(cfg.node_names, start=1)]
    lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"
