"""Count words over many files on every host, each host its own shard, with distproc's Python API.

    python3 generate_data.py                      # 60 text files in data/
    python3 run.py                                # inventory/local.yaml: every host it lists
    python3 run.py --inventory inventory/three-hosts.yaml --image python:3.12-slim
    python3 run.py --print-request                # the job.json `distproc run` would take; runs nothing

The combined counts land in ./output/combined/word_counts.json, each host's
own in ./output/partials/algo-K.json (--output to change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from distproc import (
    DistprocError,
    ProcessingInput,
    ProcessingOutput,
    Processor,
    UnexpectedStatusError,
    load_inventory,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
IMAGE = "python:3.12-slim"  # any image with python3 >= 3.10: the job needs only the standard library
CODE = "/opt/ml/processing/input/code"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", "-i", type=Path, default=REPO / "inventory" / "local.yaml")
    parser.add_argument("--image", default=IMAGE, help=f"an image with python3 (default {IMAGE})")
    parser.add_argument("--instance-type", default="ml.m5.xlarge")
    parser.add_argument(
        "--instance-count", type=int, help="hosts to use (default: every inventory host of --instance-type)"
    )
    parser.add_argument("--data", type=Path, default=HERE / "data", help="folder of input text files (./data)")
    parser.add_argument("--output", type=Path, default=HERE / "output", help="combined/ and partials/ go here")
    parser.add_argument("--port", type=int, default=7077, help="TCP port algo-1 gathers the partials on (7077)")
    parser.add_argument("--job-name", help="default: distributed-shards-<timestamp>")
    parser.add_argument("--home", type=Path, help="distproc's job store (default: $DISTPROC_HOME)")
    parser.add_argument("--print-request", action="store_true", help="print the job.json and run nothing")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[Processor, dict[str, Any]]:
    """The processor and the arguments of its ``run`` (and ``request``)."""
    count = args.instance_count
    if count is None:
        count = sum(host.serves(args.instance_type) for host in load_inventory(os.fspath(args.inventory)).hosts)
    processor = Processor(
        image_uri=args.image,
        entrypoint=["python3", f"{CODE}/wordcount.py"],
        instance_count=count,
        instance_type=args.instance_type,
        base_job_name="distributed-shards",
        max_runtime_in_seconds=600,
        inventory=args.inventory,
        home=args.home,
    )
    run_args: dict[str, Any] = {
        "inputs": [
            ProcessingInput(source=str(HERE / "code"), destination=CODE, input_name="code"),
            ProcessingInput(
                source=str(args.data),
                destination="/opt/ml/processing/input/text",
                input_name="text",
                s3_data_distribution_type="ShardedByS3Key",  # each host gets its own share of the files
            ),
        ],
        "outputs": [
            ProcessingOutput(
                source="/opt/ml/processing/output/combined",
                destination=str(args.output / "combined"),
                output_name="combined",
            ),
            ProcessingOutput(
                source="/opt/ml/processing/output/partials",
                destination=str(args.output / "partials"),
                output_name="partials",
            ),
        ],
        "arguments": ["--port", str(args.port), "--timeout", "300"],
        "job_name": args.job_name,
    }
    return processor, run_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        processor, run_args = build(args)
        if args.print_request:
            print(json.dumps(processor.request(**run_args), indent=2))
            return 0
        processor.run(**run_args)  # waits, printing each host's lines as [algo-K] ...
    except UnexpectedStatusError as exc:
        print(f"job {exc.actual_status}: {exc.failure_reason}", file=sys.stderr)
        return 1
    except DistprocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = processor.latest_job
    described = job.describe() if job else {}
    print(f"\n{described['ProcessingJobName']}: {described['ProcessingJobStatus']}")
    combined = json.loads((args.output / "combined" / "word_counts.json").read_text())
    for host, part in combined["hosts"].items():
        print(f"  {host}: {part['files']} files, {part['words']} words")
    top = ", ".join(f"{word} {n}" for word, n in list(combined["counts"].items())[:10])
    print(f"  all: {combined['files']} files, {combined['words']} words; top: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
