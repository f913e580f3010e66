"""Docker's side of one container, by how it is driven: the docker CLI's `docker run -d --rm`
against distproc's Engine API calls, CPU counted in the daemon's own processes.

    .venv/bin/python -m bench.dockerside [--repeats 12]

Builds a 3-host namespace test cluster and puts host h1's dockerd and
containerd (and so every shim and runc they start) in a cgroup of their own
(cgroup v1's cpuacct, or v2). Then, taking turns, it starts a container that
runs `true` in `distproc-test:busybox` on h1 each way, --repeats times, and
counts the cgroup's CPU from just before to 1 s after (the container's exit
and removal included):

- `docker run -d --rm --network host` (the CLI, as pdsh's remote command);
- distproc's calls as its runner makes them (agent/engine.py's ApiEngine:
  create with distproc's body, start, the logs stream, wait, delete);
- the same without the logs stream; with AutoRemove instead of the delete;
  and a minimal body (no binds, extra hosts, labels or environment).

The CLI's own CPU (a Go program start, on the host's sshd side in a job) is
not Docker's side and is not counted here. Prints a Markdown table; writes
bench/results/dockerside.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distproc.agent.engine import ApiEngine, ApiError  # noqa: E402
from distproc.agent.task import DockerAccess  # noqa: E402
from tests.cluster import ClusterConfig, running_cluster  # noqa: E402
from tests.cluster.hygiene import _pids_in_netns  # noqa: E402
from tests.cluster.process import _comm  # noqa: E402

SETTLE_SECONDS = 1.0


class DaemonGroup:
    """One cgroup counting the CPU of a host's dockerd and containerd and all they start."""

    def __init__(self, pids: list[int]) -> None:
        v1 = Path("/sys/fs/cgroup/cpuacct")
        self.v1 = v1.is_dir()
        self.root = v1 if self.v1 else Path("/sys/fs/cgroup")
        if not self.v1 and not (self.root / "cgroup.controllers").exists():
            raise SystemExit("bench.dockerside needs cgroup v1's cpuacct or cgroup v2")
        self.group = self.root / "distproc-bench-dockerside"
        self.group.mkdir(exist_ok=True)
        for pid in pids:
            (self.group / "cgroup.procs").write_text(str(pid))

    def usage_ms(self) -> float:
        if self.v1:
            return int((self.group / "cpuacct.usage").read_text()) / 1e6
        stat = dict(line.split() for line in (self.group / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e3

    def release(self) -> None:
        for pid in (self.group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (self.root / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.group.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    args, _ = parser.parse_known_args()
    base = ClusterConfig.from_env()
    cfg = ClusterConfig(3, base.cluster_dir, base.run_dir, base.cache_dir, base.mirror)
    cfg.validate()
    with tempfile.TemporaryDirectory(prefix="bench-dockerside-") as tmp, running_cluster(cfg) as cluster:
        host = cluster.hosts[0]
        sock = host.docker_host.removeprefix("unix://")
        engine = ApiEngine(DockerAccess(("docker",), host.docker_host), sock)
        image = cluster.busybox_image
        ml = Path(tmp) / "ml"
        for folder in ("config", "processing/input/x", "processing/output/o", "output"):
            (ml / folder).mkdir(parents=True)

        def body(ours: bool, autoremove: bool) -> dict[str, Any]:
            host_config: dict[str, Any] = {"NetworkMode": "host", "AutoRemove": autoremove}
            doc: dict[str, Any] = {"Image": image, "Entrypoint": ["true"], "HostConfig": host_config, "Tty": False}
            if ours:  # as agent/engine.py's create_body gives it for a 3-host job
                host_config["Binds"] = [f"{ml}:/opt/ml"]
                host_config["ExtraHosts"] = [f"algo-{k}:{h.address}" for k, h in enumerate(cluster.hosts, 1)]
                doc.update(Hostname="algo-1", Labels={"distproc.job": "bench", "distproc.algo": "algo-1"})
                doc["Env"] = ["SM_CURRENT_HOST=algo-1", "A=1"]
            return doc

        def api(name: str, logs: bool = True, autoremove: bool = False, ours: bool = True) -> None:
            engine.call("POST", f"/containers/create?name={name}", body(ours, autoremove))
            engine.call("POST", f"/containers/{name}/start")
            follower = None
            if logs:
                stream = engine.open("GET", f"/containers/{name}/logs?follow=1&stdout=1&stderr=1", timeout=None)

                def drain() -> None:
                    stream.read_all()
                    stream.close()

                follower = threading.Thread(target=drain)
                follower.start()
            condition = "?condition=removed" if autoremove else ""
            engine.call("POST", f"/containers/{name}/wait{condition}", timeout=None)
            if follower is not None:
                follower.join()
            if not autoremove:
                engine.call("DELETE", f"/containers/{name}?force=1")

        docker_run = [cluster.docker_binary, "-H", host.docker_host, "run", "-d", "--rm", "--network", "host", "--name"]

        def cli(name: str) -> None:
            subprocess.run(
                [*docker_run, name, image, "true"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            while True:  # until --rm has removed it
                try:
                    engine.call("GET", f"/containers/{name}/json")
                except ApiError:
                    return
                time.sleep(0.05)

        ways: dict[str, Any] = {
            "`docker run -d --rm` (the CLI)": cli,
            "distproc's calls: create, start, logs, wait, delete": api,
            "the same without the logs stream": lambda name: api(name, logs=False),
            "the same with AutoRemove instead of the delete": lambda name: api(name, autoremove=True),
            "a minimal body, AutoRemove, no logs": lambda name: api(name, logs=False, autoremove=True, ours=False),
        }
        daemons = [p for p in _pids_in_netns([host.netns]) if _comm(p) in ("dockerd", "containerd")]
        group = DaemonGroup(daemons)
        runs: dict[str, list[float]] = {way: [] for way in ways}
        try:
            for rep in range(args.repeats):
                order = list(ways)
                k = rep % len(order)
                for way in order[k:] + order[:k]:
                    time.sleep(SETTLE_SECONDS)
                    before = group.usage_ms()
                    ways[way](f"bench-ds-{uuid.uuid4().hex[:10]}")
                    time.sleep(SETTLE_SECONDS)
                    runs[way].append(group.usage_ms() - before)
                print(f"repeat {rep + 1} done", flush=True)
        finally:
            group.release()
    res = {
        "args": vars(args),
        "load": os.getloadavg(),
        "ms_per_container": {w: {"median": statistics.median(v), "values": v} for w, v in runs.items()},
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "dockerside.json").write_text(json.dumps(res, indent=2))
    print("\n| one container running `true` on h1, driven by | dockerd + containerd CPU ms (median; range) |")
    print("| --- | --- |")
    for way, values in runs.items():
        print(f"| {way} | {statistics.median(values):.1f} ({min(values):.0f}-{max(values):.0f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
