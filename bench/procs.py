"""What one job starts: every process, program and thread each tool makes, counted by the kernel.

    .venv/bin/python -m bench.procs [--repeats 5]

Builds a 3-host namespace test cluster (the smallest it builds), then runs a one-host no-op job
(`true` in `distproc-test:busybox`) on h1 with each tool in turn, taking
turns at going first: distproc (its warm agent running), distproc cold
(DISTPROC_AGENT_IDLE_SECONDS=0: an agent process per job), distproc through
its fork-server, pdsh, and `ssh h1 docker run`. Meanwhile it listens to the
kernel's process events (the netlink proc connector: every fork, thread and
exec on the machine, as root) and counts each new process or thread on the
side it was born under, by ancestry:

- coordinator: the command this script starts and all it starts (pdsh's ssh),
  and, through the fork-server, the server's child that ran the job and the
  connection keeper;
- sshd: h1's sshd and all it starts (a cold agent, the shell, the docker CLI);
- agent: h1's warm agent and all it forks (each call, each job's runner);
- docker: h1's dockerd and containerd and all they start (shim, runc, the
  container's own process).

Each job is followed for 1.5 s after the command returns, so the container's
exit and removal are counted too. Prints a Markdown table (median counts per
job, and the programs each side executed); writes bench/results/procs.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.launch import Bench, ensure_pdsh  # noqa: E402
from tests.cluster import ClusterConfig, running_cluster  # noqa: E402
from tests.cluster.hygiene import _pids_in_netns  # noqa: E402
from tests.cluster.process import _comm  # noqa: E402

SETTLE_SECONDS = 1.5
SIDES = ("coordinator", "sshd", "agent", "docker")

# linux/connector.h and linux/cn_proc.h
NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
NLMSG_DONE = 3
# nlmsghdr (16 bytes), cn_msg (20), then proc_event: what, cpu, timestamp_ns, event data.
EVENT_AT = 16 + 20
DATA_AT = EVENT_AT + 16


class ProcEvents:
    """The machine's forks and execs, from the kernel's proc connector, on a thread of their own.

    An exec's program name is read from /proc as the event arrives; a process
    already gone by then (a container's `true`) is named "?".
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        self.sock.bind((0, CN_IDX_PROC))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.events: list[tuple[str, int, int, str]] = []  # (kind, parent tgid or pid, pid, tgid or name)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._control(PROC_CN_MCAST_LISTEN)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _control(self, op: int) -> None:
        payload = struct.pack("I", op)
        msg = struct.pack("IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        self.sock.send(struct.pack("IHHII", 16 + len(msg), NLMSG_DONE, 0, 0, 0) + msg)

    def _read(self) -> None:
        while not self.stopping.is_set():
            if not select.select([self.sock], [], [], 0.2)[0]:
                continue
            data = self.sock.recv(65536)
            if len(data) < DATA_AT + 8:
                continue
            what = struct.unpack_from("I", data, EVENT_AT)[0]
            if what == PROC_EVENT_FORK:
                _, ptgid, pid, tgid = struct.unpack_from("4I", data, DATA_AT)
                event = ("fork", ptgid, pid, str(tgid))
            elif what == PROC_EVENT_EXEC:
                pid, _ = struct.unpack_from("2I", data, DATA_AT)
                event = ("exec", 0, pid, _comm(pid) or "?")
            else:
                continue
            with self.lock:
                self.events.append(event)

    def take(self) -> list[tuple[str, int, int, str]]:
        with self.lock:
            out, self.events = self.events, []
        return out

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self._control(PROC_CN_MCAST_IGNORE)
        self.sock.close()


def count(events: list[tuple[str, int, int, str]], roots: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Per side: processes forked, threads made and the programs executed, by ancestry from roots."""
    side_of = dict(roots)
    ours = os.getpid()
    out: dict[str, dict[str, Any]] = {s: {"processes": 0, "threads": 0, "execs": collections.Counter()} for s in SIDES}
    for kind, parent, pid, rest in events:
        if kind == "fork":
            tgid = int(rest)
            if pid != tgid:  # a thread, counted with the process it belongs to
                side = side_of.get(tgid)
                if side is not None and tgid != ours:
                    out[side]["threads"] += 1
                continue
            side = side_of.get(parent)
            if side is not None:
                side_of[pid] = side
                out[side]["processes"] += 1
        else:
            side = side_of.get(pid)
            if side is not None:
                out[side]["execs"][rest] += 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args, _ = parser.parse_known_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.procs listens to the kernel's process events: run it as root")
    base = ClusterConfig.from_env()
    cfg = ClusterConfig(3, base.cluster_dir, base.run_dir, base.cache_dir, base.mirror)
    cfg.validate()
    pdsh = ensure_pdsh()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "distproc")], check=True)
    per_job: dict[str, list[dict[str, dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as tmp, running_cluster(cfg) as cluster:
        bench = Bench(cluster, Path(tmp), pdsh)
        bench.cleanup = lambda n, name: None  # type: ignore[method-assign]  # --rm removes them, counted
        bench.distproc(1)  # the warm-up starts h1's warm agent
        bench.pdsh_run(1)
        bench.start_forkserver(1)
        runners = {
            "distproc": bench.distproc,
            "distproc cold": bench.cold,
            "distproc fork-server": bench.forkserver,
            "pdsh": bench.pdsh_run,
            "ssh + docker run": bench.ssh_run,
        }
        per_job = {name: [] for name in runners}
        netns = cluster.hosts[0].netns
        events = ProcEvents()
        try:
            for rep in range(args.repeats):
                order = list(runners)
                k = rep % len(order)
                for name in order[k:] + order[:k]:
                    roots = {os.getpid(): "coordinator"}
                    for server in (bench.forkserver_pid(), bench.keeper_pid()):
                        if server is not None:
                            roots[server] = "coordinator"
                    for pid in _pids_in_netns([netns]):
                        comm = _comm(pid)
                        if comm.startswith("sshd"):
                            roots[pid] = "sshd"
                        elif comm.startswith("python"):
                            roots[pid] = "agent"
                        elif comm in ("dockerd", "containerd"):
                            roots[pid] = "docker"
                    time.sleep(SETTLE_SECONDS)  # the previous job's tail is not this one's
                    events.take()
                    runners[name](1)
                    time.sleep(SETTLE_SECONDS)  # the container's exit and removal, counted too
                    per_job[name].append(count(events.take(), roots))
                print(f"repeat {rep + 1} done", flush=True)
        finally:
            events.close()
    res: dict[str, Any] = {"args": vars(args), "per_job": {}}
    for name, rows in per_job.items():
        res["per_job"][name] = {
            side: {
                "processes": statistics.median(r[side]["processes"] for r in rows),
                "threads": statistics.median(r[side]["threads"] for r in rows),
                # The programs of the median run by process count (names of one real run, not a blend).
                "execs": dict(
                    sorted(rows, key=lambda r: r[side]["processes"])[len(rows) // 2][side]["execs"].most_common()
                ),
            }
            for side in SIDES
        }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "procs.json").write_text(json.dumps(res, indent=2))
    print("\n| one-host no-op job | side | processes | threads | programs executed |")
    print("| --- | --- | --- | --- | --- |")
    for name, sides in res["per_job"].items():
        for side, row in sides.items():
            programs = ", ".join(f"{p} x{n}" if n > 1 else p for p, n in row["execs"].items()) or "-"
            print(f"| {name} | {side} | {row['processes']:g} | {row['threads']:g} | {programs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
