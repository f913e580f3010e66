"""The command line: ``python -m tests.cluster up|status|down``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.cluster.build import build, status
from tests.cluster.config import ClusterConfig
from tests.cluster.constants import ClusterError
from tests.cluster.hygiene import teardown
from tests.cluster.lock import cluster_lock


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster", description="Manage the distproc test cluster by hand."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="(re)build the cluster and leave it running")
    up.add_argument("--hosts", type=int, help="number of hosts (default: DISTPROC_TEST_HOSTS or 3)")
    up.add_argument(
        "--inventory",
        type=Path,
        help="write an Ansible inventory here (default: CLUSTERDIR/inventory.yml)",
    )
    down = sub.add_parser("down", help="stop and remove the cluster")
    down.add_argument("--purge", action="store_true", help="also delete the cluster dir (Docker image stores)")
    sub.add_parser("status", help="show what is running")
    args = parser.parse_args(argv)
    try:
        cfg = ClusterConfig.from_env()
        if args.cmd == "up":
            if args.hosts is not None:
                cfg = ClusterConfig(
                    n_hosts=args.hosts,
                    cluster_dir=cfg.cluster_dir,
                    run_dir=cfg.run_dir,
                    cache_dir=cfg.cache_dir,
                    mirror=cfg.mirror,
                )
                cfg.validate()
            with cluster_lock(cfg):
                c = build(cfg)
            inv = c.write_inventory(args.inventory or cfg.cluster_dir / "inventory.yml")
            local_inv = c.write_inventory(cfg.cluster_dir / "inventory-local.yml", local=True)
            print(f"inventory:        {inv}")
            print(f"local inventory:  {local_inv}")
            print(f"ssh:              {' '.join(c.ssh_argv(c.hosts[0]))}")
            for h in c.hosts:
                print(f"{h.name}: {h.address}  DOCKER_HOST={h.docker_host}  work={h.work_dir}")
            print(f"local: DOCKER_HOST={c.local_docker_host}")
        elif args.cmd == "down":
            with cluster_lock(cfg):
                teardown(cfg, purge=args.purge)
            print("cluster down")
        else:
            print(json.dumps(status(cfg), indent=2))
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
