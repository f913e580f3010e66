"""Load: one distproc job across many hosts, and every host's outcome accounted for.

    .venv/bin/python -m bench.load [--hosts 32] [--timeout 600] [--json FILE]

Builds the namespace test cluster (tests/cluster/) with --hosts hosts (3..240),
then runs ONE job of InstanceCount = hosts, image `distproc-test:py`, through
`distproc run --quiet --no-live` (metrics sampling on, as by default). Each
container reads its `current_host` from /opt/ml/config/resourceconfig.json,
writes a small JSON report to a `file://` output, prints one line and writes
`/opt/ml/output/message`. Then it checks, and prints, each of:

- the run exits 0 and `describe` says Completed;
- every host's outcome is recorded in the job store: one record per algo-K,
  each on its own inventory host, Completed, exit code 0, an end time;
- ExitMessage is every host's message in algo order, cut to 1024 characters;
- every host's output came back, written by that host (current_host, hostname,
  the number of hosts it saw);
- every host's log holds its line, and `distproc logs` gives exactly one line per host;
- every host's agent kept its result record (result.json) in its job folder;
- no container is left on any host, and no lease.json.

Exits 1 if any check fails (a run still going after --timeout seconds is
killed, and fails). Prints the cluster build time, the run's wall time, CPU
and peak RSS, and per-phase figures from the job's timeline (median and max
over the hosts); --json also writes them, with the checks, to FILE. The same
job and checks run in CI on the session cluster (tests/test_load_e2e.py).
About 1 minute for 32 hosts on a 2-core machine, build and teardown included.
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
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster, ClusterConfig, build, cluster_lock, teardown  # noqa: E402

OUTPUT = "/opt/ml/processing/output/o"
# python3 -c CODE CONFIG OUTPUT MESSAGE (an entrypoint item holds at most 256 characters, and no newline).
CODE = (
    "import json,sys,socket;c,o,g=sys.argv[1:];r=json.load(open(c));m=r['current_host'];"
    "open(o+'/'+m+'.json','w').write(json.dumps("
    "{'current_host':m,'hostname':socket.gethostname(),'hosts':len(r['hosts'])}));"
    "open(g,'w').write(m+';');print('hello from',m)"
)
ENTRYPOINT = ["python3", "-c", CODE, "/opt/ml/config/resourceconfig.json", OUTPUT, "/opt/ml/output/message"]


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.what}" + (f": {self.detail}" if self.detail else "")


def load_job(name: str, count: int, image: str, out_dir: Path) -> dict[str, Any]:
    """The CreateProcessingJob request of the load job."""
    return {
        "ProcessingJobName": name,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.xlarge"}},
        "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": ENTRYPOINT},
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "o",
                    "S3Output": {"S3Uri": f"file://{out_dir}/", "LocalPath": OUTPUT, "S3UploadMode": "EndOfJob"},
                }
            ]
        },
    }


def expected_message(count: int) -> str:
    return "".join(f"algo-{k};" for k in range(1, count + 1))[:1024]


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distproc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DISTPROC_HOME": str(home)},
        check=False,
    )


def _short(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def check_load(cluster: Cluster, hosts: list[str], home: Path, name: str, out_dir: Path) -> list[Check]:
    """Every check of the load job, after its run, over the hosts (names) it ran on, in algo order."""
    n = len(hosts)
    algos = [f"algo-{k}" for k in range(1, n + 1)]
    checks: list[Check] = []

    out = cli(home, "describe", name, "--json")
    if out.returncode != 0:
        return [Check("describe --json", False, out.stderr.strip()[-500:])]
    doc = json.loads(out.stdout)
    checks.append(
        Check(
            "job status Completed",
            doc["ProcessingJobStatus"] == "Completed",
            f"{doc['ProcessingJobStatus']} {doc.get('FailureReason') or ''}".strip(),
        )
    )

    records = doc["Distproc"]["Hosts"]
    bad = [
        f"{r['Host']}: {r['Status']} exit {r['ExitCode']} {r.get('Error') or ''}".strip()
        for r in records
        if r["Status"] != "Completed" or r["ExitCode"] != 0 or not r["EndTime"]
    ]
    placed = [(r["Host"], r["InventoryHost"]) for r in records]
    checks.append(
        Check(
            f"every host's outcome recorded ({n} records, Completed, exit 0, each on its own host)",
            placed == list(zip(algos, hosts, strict=True)) and not bad,
            _short(bad) if bad else f"{len(records)} records",
        )
    )
    checks.append(
        Check(
            "ExitMessage is every host's message in algo order",
            doc.get("ExitMessage") == expected_message(n),
            repr((doc.get("ExitMessage") or "")[:80]),
        )
    )

    wrong: list[str] = []
    for algo in algos:
        path = out_dir / f"{algo}.json"
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            wrong.append(f"{algo}: {e}")
            continue
        if report != {"current_host": algo, "hostname": algo, "hosts": n}:
            wrong.append(f"{algo}: {report}")
    extra = sorted({p.name for p in out_dir.iterdir()} - {f"{a}.json" for a in algos}) if out_dir.is_dir() else []
    checks.append(
        Check(
            "every host's output present, written by that host",
            not wrong and not extra,
            _short(wrong + [f"unexpected {e}" for e in extra]) or f"{n} files",
        )
    )

    missing_logs = []
    for algo in algos:
        files = list((home / "logs" / name).glob(f"{algo}-*.log"))
        text = files[0].read_text() if len(files) == 1 else ""
        if f"hello from {algo}\n" not in text:
            missing_logs.append(f"{algo} ({len(files)} files)")
    logs = cli(home, "logs", name)
    lines = sorted(line for line in logs.stdout.splitlines() if "hello from" in line)
    want = sorted(f"[{a}] hello from {a}" for a in algos)
    checks.append(
        Check(
            "every host's log present (files, and `distproc logs`: one line per host)",
            not missing_logs and logs.returncode == 0 and lines == want,
            _short(missing_logs) or f"{len(lines)} lines",
        )
    )

    no_record = [
        h.name
        for k, h in enumerate(cluster.hosts[:n], 1)
        if not (h.work_dir / "jobs" / name / f"algo-{k}" / "result.json").is_file()
    ]
    checks.append(Check("every host's agent kept result.json", not no_record, _short(no_record)))

    left = {h.name: cluster.containers(h) for h in cluster.hosts}
    left = {h: c for h, c in left.items() if c}
    checks.append(Check("no container left on any host", not left, _short([f"{h}: {c}" for h, c in left.items()])))
    leases = [h.name for h in cluster.hosts if (h.work_dir / "lease.json").exists()]
    checks.append(Check("no lease.json left on any host", not leases, _short(leases)))
    return checks


def phase_figures(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per phase: median and max seconds over the hosts, and how many hosts had it."""
    seconds: dict[str, list[float]] = {}
    for h in doc["Distproc"]["Hosts"]:
        for p in h["Timeline"]:
            if p["Seconds"] is not None:
                seconds.setdefault(p["Phase"], []).append(p["Seconds"])
    return {k: {"hosts": len(v), "median": statistics.median(v), "max": max(v)} for k, v in seconds.items()}


# Runs argv and writes its peak RSS (KiB) to a file. A child's ru_maxrss counts the memory of the process it
# was forked from (a vfork/exec child even inherits the forking process's high-water mark), so the command is
# started from this small interpreter rather than from a big one (pytest, this script).
_PEAK_RSS = (
    "import resource, subprocess, sys; r = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(r)"
)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_timed(
    argv: list[str], env: dict[str, str], timeout: float
) -> tuple[subprocess.CompletedProcess[str], dict[str, float]]:
    """Run argv (killed after timeout s): its output, wall time, CPU (user + sys) and peak RSS in MiB."""
    with tempfile.TemporaryDirectory(prefix="run-timed-") as tmp:
        rss, out, err = Path(tmp) / "maxrss", Path(tmp) / "out", Path(tmp) / "err"
        with open(out, "w") as out_fh, open(err, "w") as err_fh:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-c", _PEAK_RSS, str(rss), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out_fh,
                stderr=err_fh,
                env=env,
                start_new_session=True,
            )
            killer = threading.Timer(timeout, _kill_group, (proc.pid,))
            killer.start()
            try:
                _, status, ru = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        done = subprocess.CompletedProcess(argv, proc.returncode, out.read_text(), err.read_text())
        maxrss_kib = float(rss.read_text()) if rss.exists() else float("nan")
    if wall >= timeout:
        done.stderr += f"\nkilled after {timeout:g}s"
    return done, {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_mib": maxrss_kib / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=32, help="hosts in the cluster, all in the one job (default 32)")
    parser.add_argument("--timeout", type=float, default=600, help="kill `distproc run` after this many s (600)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures and checks here")
    args = parser.parse_args()
    base = ClusterConfig.from_env()
    cfg = ClusterConfig(args.hosts, base.cluster_dir, base.run_dir, base.cache_dir, base.mirror)
    cfg.validate()
    name = f"load-{args.hosts}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, cluster_lock(cfg):
        t0 = time.monotonic()
        try:
            cluster = build(cfg)
        except BaseException:
            teardown(cfg)
            raise
        build_s = time.monotonic() - t0
        try:
            work = Path(tmp)
            home, out_dir = work / "home", work / "out"
            inv = cluster.write_inventory(work / "inventory.yaml")
            job = work / "job.json"
            job.write_text(json.dumps(load_job(name, args.hosts, cluster.image, out_dir)))
            print(f"cluster of {args.hosts} hosts built in {build_s:.1f}s; running {name}", flush=True)
            argv = [sys.executable, "-m", "distproc", "run", "--quiet", "--no-live", "-i", str(inv), str(job)]
            run, usage = run_timed(argv, {**os.environ, "DISTPROC_HOME": str(home)}, args.timeout)
            print(f"distproc run exited {run.returncode} after {usage['wall']:.1f}s", flush=True)
            last = " | ".join(run.stderr.strip().splitlines()[-3:]) if run.returncode else ""
            checks = [Check("distproc run exits 0", run.returncode == 0, f"exit {run.returncode} {last}".strip())]
            t1 = time.monotonic()
            checks += check_load(cluster, [h.name for h in cluster.hosts], home, name, out_dir)
            check_s = time.monotonic() - t1
            described = cli(home, "describe", name, "--json")
            phases = phase_figures(json.loads(described.stdout)) if described.returncode == 0 else {}
        finally:
            t2 = time.monotonic()
            teardown(cfg)
    teardown_s = time.monotonic() - t2
    for c in checks:
        print(c.line())
    print()
    print("| hosts | cluster build s | distproc run wall s | run CPU s | run peak RSS MiB | checks s | teardown s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.hosts} | {build_s:.1f} | {usage['wall']:.1f} | {usage['cpu']:.1f} | {usage['maxrss_mib']:.0f} "
        f"| {check_s:.1f} | {teardown_s:.1f} |"
    )
    print()
    print("| phase | hosts | median s | max s |")
    print("| --- | --- | --- | --- |")
    for phase, f in phases.items():
        print(f"| {phase} | {f['hosts']} | {f['median']:.2f} | {f['max']:.2f} |")
    failed = [c for c in checks if not c.ok]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "hosts": args.hosts,
                    "cpus": os.cpu_count(),
                    "build_s": build_s,
                    "run": usage,
                    "checks_s": check_s,
                    "teardown_s": teardown_s,
                    "phases": phases,
                    "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in checks],
                },
                indent=2,
            )
        )
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
