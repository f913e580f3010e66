"""Start-up cost of the `distproc` command against other command-line tools, one run.

    .venv/bin/python -m bench.startup [--repeats 21]

Runs each command --repeats times, taking turns (each round in a rotated
order, so that no contestant always goes first), and reports the median wall
time and the median CPU time (user+sys of the child and anything it started,
from wait4()) of each, and each one's ratio to `python3 -c pass`:

- python3 -c pass: the floor for any Python command; .venv/bin/python -c pass:
  the same with the virtualenv's site-packages (distproc's floor here).
- ansible --version (.venv/bin/ansible), a Python CLI of about distproc's size.
- aws --version, from bench/.venv-awscli if bench.staging made it (else left out).
- distproc --help, validate (the job alone, and with inventory/local.yaml),
  list, and describe of a Completed job in a temporary DISTPROC_HOME.

Bytecode: this machine sets PYTHONDONTWRITEBYTECODE=1 and the .venv holds no
.pyc files, so every start would compile every module it imports; an installed
wheel has its bytecode. The children run with PYTHONPYCACHEPREFIX pointing at a
private folder and bytecode writing on; one warm-up round (not counted) fills
it. Nothing under .venv or the working tree is written.

Prints a Markdown table; writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
AWSCLI = ROOT / "bench" / ".venv-awscli" / "bin" / "aws"
JOB = ROOT / "examples" / "hello" / "job.json"
INVENTORY = ROOT / "inventory" / "local.yaml"
FLOOR = "python3 -c pass"


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user+sys, with children) seconds of one run of argv; fail on a non-zero exit."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{argv} exited {proc.returncode}:\n{out.read().decode()[-3000:]}")
    return wall, ru.ru_utime + ru.ru_stime


def contestants() -> tuple[dict[str, list[str]], list[str]]:
    distproc = str(VENV_BIN / "distproc")
    commands = {
        FLOOR: ["/usr/bin/python3", "-c", "pass"],
        ".venv/bin/python -c pass": [sys.executable, "-c", "pass"],
        "ansible --version": [str(VENV_BIN / "ansible"), "--version"],
    }
    notes = []
    if AWSCLI.exists():
        commands["aws --version"] = [str(AWSCLI), "--version"]
    else:
        notes.append(f"aws --version left out: no {AWSCLI.relative_to(ROOT)} (made by `python -m bench.staging`)")
    commands.update(
        {
            "distproc --help": [distproc, "--help"],
            "distproc validate JOB": [distproc, "validate", str(JOB)],
            "distproc validate JOB -i local.yaml": [distproc, "validate", str(JOB), "-i", str(INVENTORY)],
            "distproc list": [distproc, "list"],
            "distproc describe NAME": [distproc, "describe", "bench-startup"],
        }
    )
    return commands, notes


def make_home(home: Path) -> None:
    """A store holding one Completed job with one host, for list and describe."""
    sys.path.insert(0, str(ROOT))
    from distproc.store.db import Store

    store = Store(home)
    request = json.loads(JOB.read_text())
    store.create_job("bench-startup", "arn:distproc:bench-startup", request, str(INVENTORY))
    store.add_host("bench-startup", "algo-1", "localhost", {"address": "localhost"}, "/var/tmp/distproc")
    store.update_host("bench-startup", "algo-1", status="Completed", exit_code=0)
    store.update_job("bench-startup", status="Completed", start_time=1.0, end_time=2.0)
    store.close()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def table(summary: dict[str, dict[str, float]]) -> str:
    floor = summary[FLOOR]
    rows = [
        "| command | wall, median (s) | CPU user+sys, median (s) | wall / python3 -c pass | CPU / python3 -c pass |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        rows.append(
            f"| `{name}` | {s['wall']:.3f} | {s['cpu']:.3f} | "
            f"{s['wall'] / floor['wall']:.1f} | {s['cpu'] / max(floor['cpu'], 1e-3):.1f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="runs of each command (default 21)")
    args = parser.parse_args()
    commands, notes = contestants()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        make_home(Path(tmp) / "home")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"), DISTPROC_HOME=str(Path(tmp) / "home"))
        for argv in commands.values():  # warm-up: writes the bytecode
            measured(argv, env)
        load_before = load_average()
        names = list(commands)
        for rep in range(args.repeats):
            turn = rep % len(names)
            for name in names[turn:] + names[:turn]:
                runs[name].append(measured(commands[name], env))
        load_after = load_average()
    summary = {
        name: {
            "wall": statistics.median(w for w, _ in samples),
            "cpu": statistics.median(c for _, c in samples),
        }
        for name, samples in runs.items()
    }
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit.stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "repeats": args.repeats,
        "notes": notes,
        "summary": summary,
        "runs": runs,
    }
    out = ROOT / "bench" / "results" / "startup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['date']}, commit {result['commit']} (with the working tree's changes), {result['machine']}")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}; {args.repeats} runs each\n")
    print(table(summary))
    for note in notes:
        print(f"\n{note}")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
