"""The command line: ``python -m tests.slurm up|down`` (the Slurm test cluster, by hand)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tests.cluster.constants import ClusterError
from tests.cluster.lock import path_lock
from tests.slurm.layout import SlurmConfig
from tests.slurm.testbed import build, preflight, teardown


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.slurm", description="The Slurm test cluster, by hand.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="(re)build it and leave it running; prints the SLURM_CONF to export")
    sub.add_parser("down", help="stop it and remove its namespaces and bridge (logs stay)")
    args = parser.parse_args(argv)
    try:
        cfg = SlurmConfig.from_env()
        with path_lock(cfg.lock_file, what="the Slurm test cluster"):
            if args.cmd == "up":
                problems = preflight(cfg)
                if problems:
                    print("cannot build the Slurm test cluster:\n  - " + "\n  - ".join(problems), file=sys.stderr)
                    return 1
                c = build(cfg)
                print(f"export SLURM_CONF={c.conf}")
            else:
                teardown(cfg)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
