"""Every benchmark in docs/benchmarks.md, one after the other, with one command:

    .venv/bin/python -m bench            # about 50 minutes on a 2-core machine

Each script builds the namespace test cluster it needs (bench.startup needs
none), installs the tool it is compared with (aws CLI, pdsh) if missing, prints
its Markdown table and writes bench/results/<name>.json.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = ("bench.startup", "bench.staging", "bench.launch", "bench.hostcpu", "bench.procs", "bench.dockerside")
# What docs/benchmarks.md's current tables add to a script's defaults.
EXTRA = {"bench.launch": ["--cold", "--forkserver"]}


def main() -> int:
    failed = []
    for module in SCRIPTS:
        print(f"== {module}", flush=True)
        argv = [sys.executable, "-m", module, *EXTRA.get(module, []), *sys.argv[1:]]
        if subprocess.run(argv, check=False).returncode != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
