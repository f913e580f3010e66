"""Where a host's CPU goes: distproc against pdsh and ssh, counted on the host itself.

    .venv/bin/python -m bench.hostcpu [--repeats 8] [--hosts 64]

Builds the namespace test cluster, then:

1. Per host, exactly: host h1's sshd (with every process it starts: the
   shell, distproc's agent or the docker CLI, and the session of the
   fork-server's kept connection) goes into one cpuacct cgroup,
   distproc's warm agent (started by the warm-up round) with all it forks into
   a second, its dockerd and containerd into a third. A one-host no-op job (`true` in
   `distproc-test:busybox`) runs --repeats times with each tool (distproc
   also through its fork-server, whose jobs ride on a kept connection),
   taking turns; each cgroup's CPU is read before the run and 1.5 s after it (so
   the container's removal, `--rm` for pdsh and ssh, is counted too).
2. Start costs, on this machine: `python3 -c pass`, the imports of the
   agent's modules (the agent as shipped, unpacked and byte-compiled), and
   `docker --version`, 20 times each, CPU from RUSAGE_CHILDREN.
3. The whole machine around one round on every host (--hosts), --machine-rounds
   (default 3) rounds per tool (distproc, distproc through its fork-server,
   pdsh), taking turns: CPU per host by where it went, each in a cgroup of its own: the coordinator
   (the command and all it starts; the fork-server and its connection
   keeper), every host's sshd, every warm agent, every dockerd and
   containerd, the containers themselves (the test daemons' cgroup parent),
   and the rest (the kernel's own threads and interrupts: the whole
   machine's count less all of these and less this script). Each round is
   counted from a quiet machine until the machine is quiet again, so the
   containers' exits and removals, which pdsh leaves running when it
   returns, are counted too. With the machine CPU-bound (N hosts' daemons on
   a few cores), the launch latency follows this total.

Prints Markdown tables; writes bench/results/hostcpu.json. Needs cgroup v1's
cpuacct controller or cgroup v2 (as root).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import launch  # noqa: E402
from bench.launch import Bench, ensure_pdsh, inotify_room  # noqa: E402
from tests.cluster import ClusterConfig, running_cluster  # noqa: E402
from tests.cluster.constants import CGROUP_PARENT  # noqa: E402
from tests.cluster.hygiene import _pids_in_netns  # noqa: E402
from tests.cluster.process import _comm  # noqa: E402

SETTLE_SECONDS = 1.5


def release_groups(root: Path, groups: Iterable[Path]) -> None:
    """Move every process of each cgroup back to the root one, then remove the cgroups."""
    for group in groups:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (root / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            group.rmdir()


class CpuGroups:
    """Three cgroups counting CPU: "ssh" (a host's sshd and its children), "agent" (distproc's
    warm agent and every process it forks: the jobs' conversations and runs) and "docker"."""

    def __init__(self) -> None:
        v1 = Path("/sys/fs/cgroup/cpuacct")
        self.v1 = v1.is_dir()
        root = v1 if self.v1 else Path("/sys/fs/cgroup")
        if not self.v1 and not (root / "cgroup.controllers").exists():
            raise SystemExit("bench.hostcpu needs cgroup v1's cpuacct or cgroup v2")
        self.root = root
        self.groups = {name: root / f"distproc-bench-{name}" for name in ("ssh", "agent", "docker")}
        for group in self.groups.values():
            group.mkdir(exist_ok=True)

    def adopt(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                # A warm agent (python3) counts apart: what sshd starts = ssh + agent.
                which = "ssh" if comm.startswith("sshd") else "agent" if comm.startswith("python") else "docker"
                (self.groups[which] / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass  # gone, or a kernel thread

    def usage_ms(self) -> dict[str, float]:
        out = {}
        for name, group in self.groups.items():
            if self.v1:
                out[name] = int((group / "cpuacct.usage").read_text()) / 1e6
            else:
                stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
                out[name] = int(stat["usage_usec"]) / 1e3
        return out

    def release(self) -> None:
        release_groups(self.root, self.groups.values())


class MachineGroups:
    """Part 3: cgroups (cgroup v1's cpuacct) for the coordinator, sshd, the warm agents and Docker's
    daemons, on every host; with the containers' own cgroups and the whole machine's count."""

    names = ("coordinator", "sshd", "warm agents", "dockerd + containerd")

    def __init__(self) -> None:
        self.root = Path("/sys/fs/cgroup/cpuacct")
        if not (self.root / "cpuacct.usage").exists():
            raise SystemExit("bench.hostcpu's whole-machine part needs cgroup v1's cpuacct (as root)")
        self.groups = {name: self.root / f"distproc-bench-machine-{i}" for i, name in enumerate(self.names)}
        for group in self.groups.values():
            group.mkdir(exist_ok=True)

    def procs(self, name: str) -> Path:
        return self.groups[name] / "cgroup.procs"

    def adopt_hosts(self, pids: list[int]) -> None:
        for pid in pids:
            comm = _comm(pid)
            which = (
                "sshd"
                if comm.startswith("sshd")
                else "warm agents"
                if comm.startswith("python")
                else "dockerd + containerd"
                if comm.startswith(("dockerd", "containerd"))
                else None
            )
            if which is not None:
                with contextlib.suppress(OSError):  # gone meanwhile
                    self.procs(which).write_text(str(pid))

    def usage_ms(self) -> dict[str, float]:
        def read(folder: Path) -> float:
            usage = folder / "cpuacct.usage"
            return int(usage.read_text()) / 1e6 if usage.exists() else 0.0

        out = {name: read(group) for name, group in self.groups.items()}
        out["containers"] = read(self.root / CGROUP_PARENT)
        out["total"] = read(self.root)
        return out

    def release(self) -> None:
        release_groups(self.root, self.groups.values())


def until_quiet(limit: float = 30.0) -> None:
    """Wait until the machine is nearly idle (under a tenth of a core busy over half a second)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = busy_seconds()
        time.sleep(0.5)
        if busy_seconds() - before < 0.05:
            return


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def machine_rounds(bench: Bench, n: int, rounds: int = 3) -> dict[str, list[dict[str, float]]]:
    """Part 3: per host, per tool, the whole machine's CPU (ms) by where it went, and the launch latency (s)."""
    groups = MachineGroups()
    runners: dict[str, Callable[[int], dict[str, float]]] = {
        "distproc": bench.distproc,
        "distproc fork-server": bench.forkserver,
        "pdsh": bench.pdsh_run,
    }
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    try:
        launch.START_IN_CGROUP = groups.procs("coordinator")
        bench.distproc(n)  # every host's warm agent, then the fork-server and its keeper, all connected
        bench.start_forkserver(n)
        for pid in (bench.forkserver_pid(), bench.keeper_pid()):
            if pid is not None:
                groups.procs("coordinator").write_text(str(pid))
        groups.adopt_hosts(_pids_in_netns([h.netns for h in bench.cluster.hosts]))
        for rep in range(rounds):
            order = list(runners)
            k = rep % len(order)
            for name in order[k:] + order[:k]:
                until_quiet()
                before, mine = groups.usage_ms(), self_cpu()
                result = runners[name](n)
                until_quiet()
                after, mine = groups.usage_ms(), self_cpu() - mine
                row = {g: (after[g] - before[g]) / n for g in after}
                row["total"] -= mine * 1000 / n  # this script's own reading of the results
                row["rest"] = row["total"] - sum(row[g] for g in (*groups.names, "containers"))
                row["latency"] = result["latency"]
                rows[name].append(row)
            totals = ", ".join(f"{k} {v[-1]['total']:.0f} ms/host" for k, v in rows.items())
            print(f"machine round {rep + 1}: {totals}", flush=True)
    finally:
        launch.START_IN_CGROUP = None
        groups.release()
    return rows


def busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def start_costs(tmp: Path, runs: int = 20) -> dict[str, float]:
    from distproc.hosts.agentbundle import agent_bundle

    agent = tmp / "agent"
    zipfile.ZipFile(io.BytesIO(agent_bundle().data)).extractall(agent)
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(agent)], check=True, stdout=subprocess.DEVNULL)
    imports = (
        f"import sys; sys.path.insert(0, {str(agent)!r})\n"
        "import distproc_agent.cli, distproc_agent.runner, distproc_agent.follow, distproc_agent.hostcheck\n"
        "import distproc_agent.netif\n"
        "import distproc_agent.engine, distproc_agent.metrics, distproc_agent.dirwatch, ctypes"
    )
    commands = {
        "python3 -c pass": ["/usr/bin/python3", "-c", "pass"],
        "python3 + the agent's imports": ["/usr/bin/python3", "-c", imports],
        "docker --version": ["docker", "--version"],
    }
    costs = {}
    for label, argv in commands.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(runs):
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        costs[label] = used / runs * 1000
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--hosts", type=int, default=64, help="hosts in the cluster, all used in part 3")
    parser.add_argument(
        "--machine-rounds",
        type=int,
        default=3,
        help="part 3's rounds per tool (at 64 hosts one round's total moves by about 10 %%: more rounds resolve smaller differences)",
    )
    args, _ = parser.parse_known_args()
    base = ClusterConfig.from_env()
    cfg = ClusterConfig(args.hosts, base.cluster_dir, base.run_dir, base.cache_dir, base.mirror)
    cfg.validate()
    pdsh = ensure_pdsh()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "distproc")], check=True)
    per_job: dict[str, list[dict[str, float]]] = {"distproc": [], "distproc fork-server": [], "pdsh": [], "ssh": []}
    with (
        inotify_room(cfg.n_hosts),
        tempfile.TemporaryDirectory(prefix="bench-hostcpu-") as tmp,
        running_cluster(cfg) as cluster,
    ):
        bench = Bench(cluster, Path(tmp), pdsh)
        bench.cleanup = lambda n, name: None  # type: ignore[method-assign]  # --rm removes them, counted
        costs = start_costs(Path(tmp))
        groups = CpuGroups()
        try:
            groups.adopt(_pids_in_netns([cluster.hosts[0].netns]))
            bench.distproc(1)  # the warm-up also starts h1's warm agent, under sshd: moved to "agent"
            bench.pdsh_run(1)
            bench.start_forkserver(1)  # and the connection keeper, whose sshd session on h1 counts as "ssh"
            netns = cluster.hosts[0].netns
            groups.adopt([p for p in _pids_in_netns([netns]) if _comm(p).startswith("python")])
            runners: dict[str, Callable[[int], dict[str, float]]] = {
                "distproc": bench.distproc,
                "distproc fork-server": bench.forkserver,
                "pdsh": bench.pdsh_run,
                "ssh": bench.ssh_run,
            }
            for rep in range(args.repeats):
                order = list(runners)
                k = rep % len(order)
                for name in order[k:] + order[:k]:
                    before = groups.usage_ms()
                    runners[name](1)
                    time.sleep(SETTLE_SECONDS)  # the container's exit and removal, counted too
                    after = groups.usage_ms()
                    per_job[name].append({g: after[g] - before[g] for g in after})
                print(f"repeat {rep + 1}: " + ", ".join(f"{n} {per_job[n][-1]}" for n in runners), flush=True)
        finally:
            groups.release()
        n = len(cluster.hosts)
        machine = machine_rounds(bench, n, args.machine_rounds)
    res: dict[str, Any] = {
        "args": vars(args),
        "per_job_ms": {
            k: {g: statistics.median(r[g] for r in rows) for g in ("ssh", "agent", "docker")}
            for k, rows in per_job.items()
        },
        "per_job_runs": per_job,
        "start_cost_ms": costs,
        "machine_ms_per_host": {
            k: {g: statistics.median(r[g] for r in rows) for g in rows[0]} for k, rows in machine.items()
        },
        "machine_runs": machine,
        "hosts": n,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "hostcpu.json").write_text(json.dumps(res, indent=2))
    print(
        "\n| one-host no-op job, CPU on the host (median) | sshd and what it starts ms "
        "| of which distproc's warm agent ms | dockerd + containerd ms |"
    )
    print("| --- | --- | --- | --- |")
    for name, row in res["per_job_ms"].items():
        print(f"| {name} | {row['ssh'] + row['agent']:.0f} | {row['agent']:.0f} | {row['docker']:.0f} |")
    print("\n| start cost | CPU ms |\n| --- | --- |")
    for label, ms in costs.items():
        print(f"| {label} | {ms:.1f} |")
    columns = ("coordinator", "sshd", "warm agents", "dockerd + containerd", "containers", "rest", "total")
    title = f"a {n}-host no-op job, CPU ms per host (median of {args.machine_rounds})"
    print(f"\n| {title} | " + " | ".join(columns) + " | launch s |")
    print("| --- " * (len(columns) + 2) + "|")
    for name, m in res["machine_ms_per_host"].items():
        print(f"| {name} | " + " | ".join(f"{m[c]:.1f}" for c in columns) + f" | {m['latency']:.2f} |")
    pdsh = res["machine_ms_per_host"]["pdsh"]
    for name in ("distproc", "distproc fork-server"):
        m = res["machine_ms_per_host"][name]
        print(f"{name} / pdsh: total CPU {m['total'] / pdsh['total']:.2f}, launch {m['latency'] / pdsh['latency']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
