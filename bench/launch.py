"""Launch latency and overhead: distproc against pdsh and parallel ssh, same hosts, one run.

    .venv/bin/python -m bench.launch [--repeats 5] [--hosts 100] [--sizes 1,8,32,64,100]

Builds the namespace test cluster (tests/cluster/) with --hosts hosts, then,
for each repeat and each size N, starts a container that does `true` on the
first N hosts with each contestant, taking turns at going first:

- distproc: `distproc run --quiet --no-live --metrics-interval 0` of a job of
  InstanceCount N. Launch latency: the latest `container_started` event over
  the hosts (their events.jsonl) minus the wall time just before the command
  started. Overhead: the command's whole wall time.
- pdsh: `pdsh -R ssh -f 64 -w ADDRS 'docker run -d --rm ...'`, until it returns
  (`docker run -d` returns once the container has started). Each host finds its
  own daemon from $SSH_CONNECTION (its own address) in a folder of links
  address -> docker.sock.
- ssh (N in --overhead-sizes only): N `ssh HOST docker run --rm IMAGE true`
  started at once, until all have returned: the floor for a no-op job.
- cold (with --cold): distproc as above without its warm agent
  (DISTPROC_AGENT_IDLE_SECONDS=0): an agent process started on every host for every job.
- forkserver (with --forkserver): distproc as above through its coordinator
  fork-server (DISTPROC_FORKSERVER=1; the warm-up starts the server and its
  connection keeper): the command hands the job to a process that has
  imported the run path already, whose channels to the hosts' warm agents
  ride on SSH connections the keeper keeps open. Its CPU is the command's own
  plus the served child's (the server's reaped children's CPU) plus the
  keeper's, each read from /proc before and after.

distproc's critical path comes from its store's events: when its first
connection began, and when the last host had connected and had its agent ready.

CPU (user+sys) and peak RSS of the distproc and pdsh processes come from
wait4(); the distproc process's own CPU, without children, from /proc before
it is reaped. One warm-up round (not counted) installs distproc's agent on
every host first. Prints Markdown tables; writes bench/results/launch.json and
bench/results/launch-latency.svg (ignored by git, so a run leaves the checkout
clean); --docs-plot also replaces docs/launch-latency.svg, the plot the docs show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster, ClusterConfig, running_cluster  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@contextlib.contextmanager
def inotify_room(hosts: int) -> Iterator[None]:
    """Room for every host's inotify instances while the cluster runs, as separate machines would have.

    Each real host has its own limit on one user's inotify instances (128 by
    default). Here every host's dockerd (a followed container's log) and
    distproc's agent (a followed job's folder) are root's on one kernel, so
    past about 60 hosts the shared limit runs out and the ones that get none
    fall back to polling: a cost no fleet of separate hosts pays. Raised for
    the run (as root), put back after.
    """
    try:
        before = int(INOTIFY_INSTANCES.read_text())
        wanted = 8 * hosts + 128
        if before < wanted:
            INOTIFY_INSTANCES.write_text(str(wanted))
    except (OSError, ValueError):
        yield  # not root, or no such setting: measured as it is
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            INOTIFY_INSTANCES.write_text(str(before))


def ensure_pdsh() -> str:
    if not Path("/usr/bin/pdsh").exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "pdsh"], check=True, stdout=subprocess.DEVNULL)
    return "/usr/bin/pdsh"


#: A cgroup's cgroup.procs that each measured command starts in (bench.hostcpu's whole-machine part
#: counts the coordinator's side there); None: this process's own.
START_IN_CGROUP: Path | None = None


def _into_start_cgroup() -> None:
    """In the forked child, before exec: move this process (the command to be) into START_IN_CGROUP."""
    if START_IN_CGROUP is not None:
        START_IN_CGROUP.write_text("0")  # "0": the writing process itself


def measured(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run argv; wall time, CPU (self and with children), peak RSS; fail on a non-zero exit."""
    with tempfile.TemporaryFile() as out:
        t0 = time.time()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_into_start_cgroup if START_IN_CGROUP is not None else None,  # the bench runs no threads
        )
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie: /proc still readable
        wall = time.time() - t0
        stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{argv[:4]} exited {proc.returncode}:\n{out.read().decode()[-3000:]}")
    return {
        "t0": t0,
        "wall": wall,
        "cpu": ru.ru_utime + ru.ru_stime,
        "cpu_self": (int(stat[11]) + int(stat[12])) / CLK_TCK,
        "maxrss_mib": ru.ru_maxrss / 1024,
    }


class Bench:
    def __init__(self, cluster: Cluster, home: Path, pdsh: str) -> None:
        self.cluster, self.home, self.pdsh = cluster, home, pdsh
        # As installed from wheels, distproc and its libraries have their bytecode; here
        # (PYTHONDONTWRITEBYTECODE=1, a .venv without .pyc) every start would compile
        # asyncssh and cryptography again (0.4 s of CPU): a private cache, filled by the
        # warm-up round, stands in for the wheels' bytecode.
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env.update(DISTPROC_HOME=str(home / "store"), PYTHONPYCACHEPREFIX=str(home / "pycache"))
        self.socks = home / "sock"  # address -> that host's docker.sock, for pdsh's remote command
        self.socks.mkdir()
        for h in cluster.hosts:
            (self.socks / h.address).symlink_to(h.docker_host.removeprefix("unix://"))
        self.pdsh_env = {
            **os.environ,
            "PDSH_SSH_ARGS_APPEND": f"-F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {cluster.key_file} "
            f"-o UserKnownHostsFile={cluster.known_hosts} -o GlobalKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=yes",
        }

    def forkserver_env(self) -> dict[str, str]:
        return {"DISTPROC_FORKSERVER": "1", "XDG_RUNTIME_DIR": str(self.home / "run")}

    def forkserver_log(self) -> list[str]:
        """The log of the fork-server of these sources (distproc/forkserver/server.py): another
        server (the sources changed since) has another name."""
        from distproc.forkserver.client import fingerprint, socket_path

        log = socket_path(self.home / "run" / "distproc", fingerprint()).with_suffix(".log")
        return log.read_text().splitlines() if log.exists() else []

    def forkserver_pid(self) -> int | None:
        for line in self.forkserver_log():
            if " serving pid=" in line:
                return int(line.split("serving pid=")[1].split()[0])
        return None

    def keeper_pid(self) -> int | None:
        """The connection keeper's (distproc/hosts/transport/keeper.py), started by a served command."""
        from distproc.forkserver.client import fingerprint

        log = self.home / "run" / "distproc" / f"keeper-{fingerprint()}.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            if " serving pid=" in line:
                return int(line.split("serving pid=")[1].split()[0])
        return None

    def start_forkserver(self, n: int) -> None:
        """Warm-up: the first command starts the server in the background; wait until it serves.
        Its first served command starts the connection keeper; the next one has it connect."""
        for started in (self.forkserver_pid, self.keeper_pid):
            self.distproc(n, self.forkserver_env())  # in-process, then served: each starts the next
            deadline = time.monotonic() + 60
            while started() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{started.__name__} found nothing within 60 s")
                time.sleep(0.05)
        self.distproc(n, self.forkserver_env())  # the keeper connects to every host

    def stop_forkserver(self) -> None:
        for log in (self.home / "run" / "distproc").glob("fs-*.log"):
            for line in log.read_text().splitlines():
                if " serving pid=" in line:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(line.split("serving pid=")[1].split()[0]), signal.SIGTERM)

    def forkserver(self, n: int, again: bool = True) -> dict[str, float]:
        """distproc through its fork-server: the command's CPU plus the served child's. A command
        the server did not serve (distproc's sources changed, so its fingerprint did) is not
        counted: the server of the new sources is started and the round taken again."""
        pid = self.forkserver_pid()
        if pid is None:
            self.start_forkserver(n)
            pid = self.forkserver_pid()
            assert pid is not None

        keeper = self.keeper_pid()

        def children_cpu() -> float:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # The connection keeper's own CPU (its handshakes, the bytes it relays) counts too.
            kept = Path(f"/proc/{keeper}/stat").read_text().rsplit(")", 1)[1].split() if keeper else None
            return (int(stat[13]) + int(stat[14]) + (int(kept[11]) + int(kept[12]) if kept else 0)) / CLK_TCK

        served, before = len(self.forkserver_log()), children_cpu()
        r = self.distproc(n, self.forkserver_env())
        cpu = children_cpu() - before
        if len(self.forkserver_log()) < served + 2:  # "child pid= argv=" and "child pid= status="
            if not again:
                raise RuntimeError("distproc ran without its fork-server twice")
            print("the fork-server did not serve (sources changed?): taking the round again")
            return self.forkserver(n, again=False)
        return {**r, "cpu": r["cpu"] + cpu}

    def cold(self, n: int) -> dict[str, float]:
        """distproc without its warm agent (DISTPROC_AGENT_IDLE_SECONDS=0): an agent started per host per job."""
        return self.distproc(n, {"DISTPROC_AGENT_IDLE_SECONDS": "0"})

    def distproc(self, n: int, extra_env: dict[str, str] | None = None) -> dict[str, float]:
        name = f"launch-{n}-{uuid.uuid4().hex[:12]}"
        hosts = self.cluster.hosts[:n]
        inv = self.cluster.write_inventory(self.home / f"inv-{n}.yaml", hosts=hosts)
        job = self.home / f"job-{n}.json"
        job.write_text(
            json.dumps(
                {
                    "ProcessingJobName": name,
                    "ProcessingResources": {"ClusterConfig": {"InstanceCount": n, "InstanceType": "ml.m5.xlarge"}},
                    "AppSpecification": {"ImageUri": self.cluster.busybox_image, "ContainerEntrypoint": ["true"]},
                }
            )
        )
        argv = [sys.executable, "-m", "distproc", "run", "--quiet", "--no-live", "--metrics-interval", "0"]
        r = measured([*argv, "-i", str(inv), str(job)], {**self.env, **(extra_env or {})})
        starts = [
            e["time"]
            for h in hosts
            for f in (h.work_dir / "jobs" / name).glob("*/events.jsonl")
            for e in map(json.loads, f.read_text().splitlines())
            if e["kind"] == "container_started"
        ]
        if len(starts) != n:
            raise RuntimeError(f"{name}: {len(starts)} container_started events for {n} hosts")
        return {**r, "latency": max(starts) - r["t0"], **self.path(name, r["t0"])}

    def path(self, name: str, t0: float) -> dict[str, float]:
        """The critical path from the store's events: when the first connection began, and when the
        last host had connected and had its agent ready (claimed, prepared and launched), each from t0."""
        from distproc.store.db import Store

        store = Store(self.home / "store")
        try:
            events = store.events(name)
        finally:
            store.close()
        out: dict[str, float] = {}
        for kind, key, pick in (
            ("connect_started", "path_first_connect", min),
            ("connected", "path_connected", max),
            ("agent_ready", "path_agent_ready", max),
        ):
            times = [e["time"] for e in events if e["kind"] == kind]
            if times:
                out[key] = pick(times) - t0
        return out

    def pdsh_run(self, n: int) -> dict[str, float]:
        name = f"bench-pdsh-{uuid.uuid4().hex[:12]}"
        remote = (
            f"set -- $SSH_CONNECTION; docker -H unix://{self.socks}/$3 run -d --rm --network host "
            f"--name {name} {self.cluster.busybox_image} true >/dev/null"
        )
        addrs = ",".join(h.address for h in self.cluster.hosts[:n])
        r = measured([self.pdsh, "-R", "ssh", "-f", "64", "-l", self.cluster.user, "-w", addrs, remote], self.pdsh_env)
        self.cleanup(n, name)
        return {**r, "latency": r["wall"]}

    def ssh_run(self, n: int) -> dict[str, float]:
        name = f"bench-ssh-{uuid.uuid4().hex[:12]}"
        hosts = self.cluster.hosts[:n]
        cmd = "docker -H {} run --rm --network host --name {} {} true"
        t0 = time.time()
        procs = [
            subprocess.Popen(
                self.cluster.ssh_argv(h, cmd.format(h.docker_host, name, self.cluster.busybox_image)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            for h in hosts
        ]
        codes = [p.wait() for p in procs]
        wall = time.time() - t0
        if any(codes):
            raise RuntimeError(f"ssh + docker run exited {codes}")
        self.cleanup(n, name)
        return {"t0": t0, "wall": wall}

    def cleanup(self, n: int, name: str) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda h: self.cluster.docker(h, "rm", "-f", name, check=False), self.cluster.hosts[:n]))


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "range": [min(values), max(values)], "values": values}


def fit(xs: list[int], ys: list[float]) -> dict[str, float]:
    if len(set(xs)) < 2:
        return {"per_host": 0.0, "intercept": ys[0]}
    slope, intercept = statistics.linear_regression(xs, ys)
    return {"per_host": slope, "intercept": intercept}


def analyse(runs: dict[int, list[dict[str, dict[str, float]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": {}}
    for n, rounds in runs.items():
        d = [r["distproc"] for r in rounds]
        p = [r["pdsh"] for r in rounds]
        s = {
            "distproc_latency": summary([x["latency"] for x in d]),
            "pdsh_latency": summary([x["latency"] for x in p]),
            "latency_ratio": summary([a["latency"] / b["latency"] for a, b in zip(d, p, strict=True)]),
            "distproc_wall": summary([x["wall"] for x in d]),
            "distproc_cpu_per_host": summary([x["cpu"] / n for x in d]),
            "distproc_cpu_self_per_host": summary([x["cpu_self"] / n for x in d]),
            "pdsh_cpu_per_host": summary([x["cpu"] / n for x in p]),
            "pdsh_cpu_self_per_host": summary([x["cpu_self"] / n for x in p]),
            "cpu_ratio": summary([a["cpu"] / b["cpu"] for a, b in zip(d, p, strict=True)]),
            "distproc_maxrss_mib": summary([x["maxrss_mib"] for x in d]),
            "distproc_maxrss_per_host_mib": summary([x["maxrss_mib"] / n for x in d]),
            "pdsh_maxrss_mib": summary([x["maxrss_mib"] for x in p]),
        }
        for key in ("path_first_connect", "path_connected", "path_agent_ready"):
            if all(key in x for x in d):
                s[key] = summary([x[key] for x in d])
        if all("ssh" in r for r in rounds):
            sw = [r["ssh"]["wall"] for r in rounds]
            s["ssh_wall"] = summary(sw)
            s["overhead_ratio"] = summary([a["wall"] / b for a, b in zip(d, sw, strict=True)])
        if all("cold" in r for r in rounds):
            c = [r["cold"] for r in rounds]
            s["cold_latency"] = summary([x["latency"] for x in c])
            s["cold_latency_ratio"] = summary([a["latency"] / b["latency"] for a, b in zip(c, p, strict=True)])
            s["cold_cpu_per_host"] = summary([x["cpu"] / n for x in c])
            s["cold_cpu_ratio"] = summary([a["cpu"] / b["cpu"] for a, b in zip(c, p, strict=True)])
        if all("forkserver" in r for r in rounds):
            f = [r["forkserver"] for r in rounds]
            s["forkserver_latency"] = summary([x["latency"] for x in f])
            s["forkserver_latency_ratio"] = summary([a["latency"] / b["latency"] for a, b in zip(f, p, strict=True)])
            s["forkserver_wall"] = summary([x["wall"] for x in f])
            s["forkserver_cpu_per_host"] = summary([x["cpu"] / n for x in f])
            s["forkserver_cpu_ratio"] = summary([a["cpu"] / b["cpu"] for a, b in zip(f, p, strict=True)])
            if "ssh_wall" in s:
                sw = [r["ssh"]["wall"] for r in rounds]
                s["forkserver_overhead_ratio"] = summary([a["wall"] / b for a, b in zip(f, sw, strict=True)])
        out["sizes"][n] = s
    ns = sorted(runs)
    out["fits"] = {
        key: fit(ns, [out["sizes"][n][key]["median"] for n in ns])
        for key in ("distproc_latency", "pdsh_latency", "distproc_maxrss_mib")
    }
    for who in ("distproc", "pdsh"):
        out["fits"][f"{who}_cpu"] = fit(ns, [out["sizes"][n][f"{who}_cpu_per_host"]["median"] * n for n in ns])
    return out


def svg(res: dict[str, Any], path: Path) -> None:
    """Launch latency against N, median with range bars, as a self-contained SVG."""
    w, h, left, right, top, bottom = 560, 340, 60, 20, 30, 50
    sizes = {int(n): s for n, s in res["sizes"].items()}  # int keys, or str ones read back from JSON
    ns = sorted(sizes)
    ymax = max(sizes[n][k]["range"][1] for n in ns for k in ("distproc_latency", "pdsh_latency")) * 1.1
    xmax = max(ns) * 1.05

    def x(v: float) -> float:
        return round(left + (w - left - right) * v / xmax, 1)

    def y(v: float) -> float:
        return round(float(h - bottom - (h - top - bottom) * v / ymax), 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="18" text-anchor="middle">Launch latency: start until every container runs</text>',
        f'<line x1="{left}" y1="{y(0)}" x2="{w - right}" y2="{y(0)}" stroke="black"/>',
        f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{top}" stroke="black"/>',
        f'<text x="{(w + left) / 2}" y="{h - 12}" text-anchor="middle">hosts (N)</text>',
        f'<text x="16" y="{h / 2}" text-anchor="middle" transform="rotate(-90 16 {h / 2})">seconds</text>',
    ]
    for n in ns:
        parts.append(f'<text x="{x(n)}" y="{y(0) + 16}" text-anchor="middle">{n}</text>')
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 50, 100) if s >= ymax / 6)
    for i in range(int(ymax / step) + 1):
        v = i * step
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{v:g}</text>')
        parts.append(f'<line x1="{left}" y1="{y(v)}" x2="{w - right}" y2="{y(v)}" stroke="#ddd"/>')
    for k, (who, colour) in enumerate((("distproc", "#1f77b4"), ("pdsh", "#d62728"))):
        key = f"{who}_latency"
        pts = " ".join(f"{x(n)},{y(sizes[n][key]['median'])}" for n in ns)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n in ns:
            lo, hi = sizes[n][key]["range"]
            parts.append(f'<line x1="{x(n)}" y1="{y(lo)}" x2="{x(n)}" y2="{y(hi)}" stroke="{colour}"/>')
            parts.append(f'<circle cx="{x(n)}" cy="{y(sizes[n][key]["median"])}" r="3.5" fill="{colour}"/>')
        ly = top + 10 + 18 * k
        parts.append(f'<line x1="{left + 14}" y1="{ly}" x2="{left + 34}" y2="{ly}" stroke="{colour}"/>')
        label = "distproc run" if who == "distproc" else "pdsh -R ssh + docker run -d"
        parts.append(f'<text x="{left + 40}" y="{ly + 4}">{label} (median, range)</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def fmt(s: dict[str, Any], spec: str = ".2f") -> str:
    lo, hi = s["range"]
    return f"{s['median']:{spec}} ({lo:{spec}}-{hi:{spec}})"


def table(res: dict[str, Any]) -> str:
    rows = ["| N | distproc launch s | pdsh launch s | ratio distproc/pdsh |", "| --- | --- | --- | --- |"]
    for n, s in res["sizes"].items():
        rows.append(f"| {n} | {fmt(s['distproc_latency'])} | {fmt(s['pdsh_latency'])} | {fmt(s['latency_ratio'])} |")
    rows += ["", "| N | distproc run s | parallel ssh + docker run s | ratio distproc/ssh |"]
    rows += ["| --- | --- | --- | --- |"]
    for n, s in res["sizes"].items():
        if "ssh_wall" in s:
            rows.append(f"| {n} | {fmt(s['distproc_wall'])} | {fmt(s['ssh_wall'])} | {fmt(s['overhead_ratio'])} |")
    rows += [
        "",
        "| N | distproc CPU ms/host | pdsh (+ssh) CPU ms/host | CPU ratio | distproc peak RSS MiB (per host) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, s in res["sizes"].items():
        ms = {k: {**s[k], "median": s[k]["median"] * 1e3, "range": [v * 1e3 for v in s[k]["range"]]} for k in s}
        rows.append(
            f"| {n} | {fmt(ms['distproc_cpu_per_host'], '.0f')} | {fmt(ms['pdsh_cpu_per_host'], '.0f')} | "
            f"{fmt(s['cpu_ratio'])} | {s['distproc_maxrss_mib']['median']:.1f} "
            f"({s['distproc_maxrss_per_host_mib']['median']:.2f}) |"
        )
    if all("cold_latency" in s for s in res["sizes"].values()):
        rows += [
            "",
            "| N | distproc without warm agent: launch s | its ratio to pdsh | its CPU ms/host | its CPU ratio |",
            "| --- | --- | --- | --- | --- |",
        ]
        for n, s in res["sizes"].items():
            cpu = {**s["cold_cpu_per_host"], "median": s["cold_cpu_per_host"]["median"] * 1e3}
            cpu["range"] = [v * 1e3 for v in s["cold_cpu_per_host"]["range"]]
            rows.append(
                f"| {n} | {fmt(s['cold_latency'])} | {fmt(s['cold_latency_ratio'])} | {fmt(cpu, '.0f')} | "
                f"{fmt(s['cold_cpu_ratio'])} |"
            )
    if all("forkserver_latency" in s for s in res["sizes"].values()):
        rows += [
            "",
            "| N | distproc through its fork-server: launch s | its ratio to pdsh | its no-op job / parallel ssh "
            "| its CPU ms/host | its CPU ratio |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for n, s in res["sizes"].items():
            cpu = {**s["forkserver_cpu_per_host"], "median": s["forkserver_cpu_per_host"]["median"] * 1e3}
            cpu["range"] = [v * 1e3 for v in s["forkserver_cpu_per_host"]["range"]]
            over = fmt(s["forkserver_overhead_ratio"]) if "forkserver_overhead_ratio" in s else ""
            rows.append(
                f"| {n} | {fmt(s['forkserver_latency'])} | {fmt(s['forkserver_latency_ratio'])} | {over} | "
                f"{fmt(cpu, '.0f')} | {fmt(s['forkserver_cpu_ratio'])} |"
            )
    rows += [
        "",
        "| N | distproc: first connection begun s | all connected s | all prepared (agent ready) s | all started s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, s in res["sizes"].items():
        if "path_agent_ready" in s:
            rows.append(
                f"| {n} | {fmt(s['path_first_connect'])} | {fmt(s['path_connected'])} | "
                f"{fmt(s['path_agent_ready'])} | {fmt(s['distproc_latency'])} |"
            )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    # 100: the most a job may ask for (ProcessingClusterConfig.InstanceCount is 1-100 in AWS's API).
    parser.add_argument("--hosts", type=int, default=100, help="hosts in the cluster (at most 100 used by a job)")
    parser.add_argument("--sizes", default="1,8,32,64,100", help="N values, comma-separated")
    parser.add_argument("--overhead-sizes", default="1,8", help="N values also run with parallel ssh")
    parser.add_argument(
        "--cold", action="store_true", help="also run distproc without its warm agent (an agent start per job)"
    )
    parser.add_argument(
        "--forkserver",
        action="store_true",
        help="also run distproc through its coordinator fork-server (DISTPROC_FORKSERVER=1, started in the warm-up)",
    )
    parser.add_argument(
        "--docs-plot", action="store_true", help="also write the plot to docs/launch-latency.svg (tracked)"
    )
    args = parser.parse_args()
    sizes = [n for n in map(int, args.sizes.split(",")) if n <= args.hosts]
    if max(sizes, default=0) > 100:
        parser.error("a job's InstanceCount is at most 100 (AWS's ProcessingClusterConfig): --sizes above 100")
    overhead = {int(n) for n in args.overhead_sizes.split(",")}
    pdsh = ensure_pdsh()
    # As installed from a wheel, distproc has its bytecode; a source checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module at every start instead.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "distproc")], check=True)
    base = ClusterConfig.from_env()
    cfg = ClusterConfig(args.hosts, base.cluster_dir, base.run_dir, base.cache_dir, base.mirror)
    cfg.validate()
    runs: dict[int, list[dict[str, dict[str, float]]]] = {n: [] for n in sizes}
    with (
        inotify_room(cfg.n_hosts),
        tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp,
        running_cluster(cfg) as cluster,
    ):
        bench = Bench(cluster, Path(tmp), pdsh)
        bench.distproc(max(sizes))  # warm-up: installs the agent on every host
        bench.pdsh_run(max(sizes))
        if args.forkserver:
            bench.start_forkserver(max(sizes))
        for rep in range(args.repeats):
            for i, n in enumerate(sizes):
                who = {"distproc": bench.distproc, "pdsh": bench.pdsh_run}
                if args.cold:
                    who["cold"] = bench.cold
                if args.forkserver:
                    who["forkserver"] = bench.forkserver
                if n in overhead:
                    who["ssh"] = bench.ssh_run
                order = list(who)
                k = (rep + i) % len(order)  # take turns at going first
                rnd = {name: who[name](n) for name in order[k:] + order[:k]}
                runs[n].append(rnd)
                print(f"repeat {rep + 1} N={n}: " + ", ".join(f"{a} {b['wall']:.2f}s" for a, b in rnd.items()))
        bench.stop_forkserver()
    res = {"args": vars(args), "cpus": os.cpu_count(), "runs": runs, **analyse(runs)}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "launch.json").write_text(json.dumps(res, indent=2))
    svg(res, out / "launch-latency.svg")
    if args.docs_plot:
        svg(res, ROOT / "docs" / "launch-latency.svg")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
