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
3. The whole machine around one round on every host (--hosts): CPU-seconds
   busy (/proc/stat) per host, distproc against pdsh, 3 rounds each.

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.launch import Bench, ensure_pdsh  # noqa: E402
from tests.cluster import ClusterConfig, running_cluster  # noqa: E402
from tests.cluster.hygiene import _pids_in_netns  # noqa: E402
from tests.cluster.process import _comm  # noqa: E402

SETTLE_SECONDS = 1.5


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
        for group in self.groups.values():
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.root / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()


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
    args, _ = parser.parse_known_args()
    base = ClusterConfig.from_env()
    cfg = ClusterConfig(args.hosts, base.cluster_dir, base.run_dir, base.cache_dir, base.mirror)
    cfg.validate()
    pdsh = ensure_pdsh()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "distproc")], check=True)
    per_job: dict[str, list[dict[str, float]]] = {"distproc": [], "distproc fork-server": [], "pdsh": [], "ssh": []}
    machine: dict[str, list[float]] = {"distproc": [], "pdsh": []}
    with tempfile.TemporaryDirectory(prefix="bench-hostcpu-") as tmp, running_cluster(cfg) as cluster:
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
            runners = {
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
        bench.distproc(n)
        for rep in range(3):
            for name, run in (("distproc", bench.distproc), ("pdsh", bench.pdsh_run))[:: 1 if rep % 2 == 0 else -1]:
                time.sleep(SETTLE_SECONDS)
                busy_before = busy_seconds()
                run(n)
                machine[name].append((busy_seconds() - busy_before) / n * 1000)
            print(f"machine round {rep + 1}: " + ", ".join(f"{k} {v[-1]:.0f} ms/host" for k, v in machine.items()))
    res: dict[str, Any] = {
        "args": vars(args),
        "per_job_ms": {
            k: {g: statistics.median(r[g] for r in rows) for g in ("ssh", "agent", "docker")}
            for k, rows in per_job.items()
        },
        "per_job_runs": per_job,
        "start_cost_ms": costs,
        "machine_busy_ms_per_host": {k: {"median": statistics.median(v), "values": v} for k, v in machine.items()},
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
    print(f"\n| whole machine busy around a {n}-host round | ms per host (median of 3) |\n| --- | --- |")
    for name, m in res["machine_busy_ms_per_host"].items():
        print(f"| {name} | {m['median']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
