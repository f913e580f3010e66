"""Staging rate: distproc against `aws s3 sync`, same endpoint, same host, one run.

    .venv/bin/python -m bench.staging [--repeats 3] [--small 2000] [--large 4] [--large-mib 64]

Builds the namespace test cluster (tests/cluster/) and a real S3 endpoint
(moto's server) on its bridge, uploads two datasets (many small objects, a
few large ones), then, pair by pair, stages each dataset to host h1 with
distproc (a one-host job whose container does nothing) and with `aws s3 sync`
run inside h1's network namespace. The AWS CLI goes into its own virtualenv
(bench/.venv-awscli) so its pins never meet distproc's.

distproc's time is the host's own staging time: from the `prepared` event to
the `inputs_staged` event in the host's event log, i.e. listing excluded and
download, rename and size checks included, as `aws s3 sync`'s time includes
its own listing. Prints a Markdown table; writes bench/results/staging.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster, running_cluster  # noqa: E402
from tests.s3server import start_moto_server  # noqa: E402

AWSCLI_VENV = ROOT / "bench" / ".venv-awscli"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def awscli() -> Path:
    aws = AWSCLI_VENV / "bin" / "aws"
    if not aws.exists():
        subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True)
        subprocess.run([str(AWSCLI_VENV / "bin" / "pip"), "install", "-q", "awscli"], check=True)
    return aws


def upload_datasets(client: Any, small: int, large: int, large_mib: int) -> dict[str, int]:
    client.create_bucket(Bucket="bench")
    sizes = {"small": 0, "large": 0}
    payload = os.urandom(4096)
    for i in range(small):
        client.put_object(Bucket="bench", Key=f"small/{i:06d}.bin", Body=payload)
        sizes["small"] += len(payload)
    big = os.urandom(large_mib << 20)
    for i in range(large):
        client.put_object(Bucket="bench", Key=f"large/{i:03d}.bin", Body=big)
        sizes["large"] += len(big)
    return sizes


def run_distproc(cluster: Cluster, inventory: Path, home: Path, dataset: str, n: int) -> float:
    name = f"bench-{dataset}-{n}-{int(time.time())}"
    job = {
        "ProcessingJobName": name,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}},
        "AppSpecification": {"ImageUri": cluster.busybox_image, "ContainerEntrypoint": ["true"]},
        "ProcessingInputs": [
            {
                "InputName": "d",
                "S3Input": {"S3Uri": f"s3://bench/{dataset}/", "LocalPath": "/opt/ml/processing/input/d"},
            }
        ],
    }
    path = home / f"{name}.json"
    path.write_text(json.dumps(job))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "distproc",
            "run",
            "--quiet",
            "--inventory",
            str(inventory),
            "--aws-credentials",
            "forward",
            str(path),
        ],
        check=True,
        env={**os.environ, **CREDS, "DISTPROC_HOME": str(home)},
        capture_output=True,
    )
    events_file = cluster.hosts[0].work_dir / "jobs" / name / "algo-1" / "events.jsonl"
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    prepared = next(e["time"] for e in events if e["kind"] == "prepared")
    staged = next(e["time"] for e in events if e["kind"] == "inputs_staged")
    return float(staged - prepared)


def run_sync(cluster: Cluster, aws: Path, endpoint: str, dataset: str) -> float:
    dest = Path(tempfile.mkdtemp(prefix="bench-sync-", dir=cluster.hosts[0].work_dir))
    env = {**CREDS, "PATH": os.environ["PATH"], "HOME": str(dest)}
    started = time.monotonic()
    subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{cluster.hosts[0].netns}",
            "--",
            "env",
            *(f"{k}={v}" for k, v in env.items()),
            str(aws),
            "s3",
            "sync",
            "--only-show-errors",
            "--endpoint-url",
            endpoint,
            f"s3://bench/{dataset}/",
            str(dest),
        ],
        check=True,
    )
    took = time.monotonic() - started
    shutil.rmtree(dest)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", type=int, default=2000, help="number of 4 KiB objects")
    parser.add_argument("--large", type=int, default=4, help="number of large objects")
    parser.add_argument("--large-mib", type=int, default=64)
    args = parser.parse_args()
    aws = awscli()
    results: dict[str, Any] = {"args": vars(args), "datasets": {}}
    with running_cluster() as cluster:
        server = start_moto_server(cluster.bridge_address)
        try:
            sizes = upload_datasets(server.client(), args.small, args.large, args.large_mib)
            home = Path(tempfile.mkdtemp(prefix="bench-home-"))
            extra = {
                cluster.hosts[0].name: {
                    "distproc_s3_endpoint_url": server.endpoint_url,
                    "distproc_aws_region": "us-east-1",
                }
            }
            inventory = cluster.write_inventory(home / "inv.yaml", hosts=[cluster.hosts[0]], extra_host_vars=extra)
            for dataset in ("small", "large"):
                pairs = []
                for n in range(args.repeats):
                    # Alternate who goes first, so a warm cache favours neither.
                    if n % 2:
                        s = run_sync(cluster, aws, server.endpoint_url, dataset)
                        d = run_distproc(cluster, inventory, home, dataset, n)
                    else:
                        d = run_distproc(cluster, inventory, home, dataset, n)
                        s = run_sync(cluster, aws, server.endpoint_url, dataset)
                    pairs.append((d, s))
                mib = sizes[dataset] / (1 << 20)
                ratios = [s / d for d, s in pairs]  # >1: distproc faster
                results["datasets"][dataset] = {
                    "bytes": sizes[dataset],
                    "distproc_seconds": [d for d, _ in pairs],
                    "sync_seconds": [s for _, s in pairs],
                    "distproc_mib_s_median": mib / statistics.median(d for d, _ in pairs),
                    "sync_mib_s_median": mib / statistics.median(s for _, s in pairs),
                    "speed_ratio_median": statistics.median(ratios),
                    "speed_ratio_range": [min(ratios), max(ratios)],
                }
        finally:
            server.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "staging.json").write_text(json.dumps(results, indent=2))
    print(
        "| dataset | distproc MiB/s (median) | aws s3 sync MiB/s (median) "
        "| distproc speed / sync speed (median, range) |"
    )
    print("| --- | --- | --- | --- |")
    for dataset, r in results["datasets"].items():
        lo, hi = r["speed_ratio_range"]
        print(
            f"| {dataset} | {r['distproc_mib_s_median']:.1f} | {r['sync_mib_s_median']:.1f} | "
            f"{r['speed_ratio_median']:.2f} ({lo:.2f}-{hi:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
