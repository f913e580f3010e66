"""Run preprocessing.py on your hosts with distproc's Python API (as sagemaker.processing.ScriptProcessor).

    python3 generate_data.py                      # data/census-0.csv
    python3 run.py                                # inventory/local.yaml, image distproc-example:sklearn
    python3 run.py --inventory inventory/three-hosts.yaml --image registry:5000/sklearn:1.2
    python3 run.py --print-request                # the job.json `distproc run` would take; runs nothing

Outputs land in ./output/train and ./output/test (--output to change).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from distproc import (
    DistprocError,
    ProcessingInput,
    ProcessingOutput,
    ScriptProcessor,
    UnexpectedStatusError,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
IMAGE = "distproc-example:sklearn"  # what build_image.sh imports


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", "-i", type=Path, default=REPO / "inventory" / "local.yaml")
    parser.add_argument("--image", default=IMAGE, help=f"an image with python3, scikit-learn and pandas ({IMAGE})")
    parser.add_argument("--instance-type", default="ml.m5.xlarge")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="folder of input CSV files (./data)")
    parser.add_argument("--output", type=Path, default=HERE / "output", help="train/ and test/ go here (./output)")
    parser.add_argument("--split-ratio", type=float, default=0.3, help="share of rows for test (0.3)")
    parser.add_argument("--job-name", help="default: sklearn-preprocessing-<timestamp>")
    parser.add_argument("--home", type=Path, help="distproc's job store (default: $DISTPROC_HOME)")
    parser.add_argument("--print-request", action="store_true", help="print the job.json and run nothing")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[ScriptProcessor, dict[str, Any]]:
    """The processor and the arguments of its ``run`` (and ``request``)."""
    processor = ScriptProcessor(
        image_uri=args.image,
        command=["python3"],
        instance_count=1,
        instance_type=args.instance_type,
        base_job_name="sklearn-preprocessing",
        max_runtime_in_seconds=1800,
        inventory=args.inventory,
        home=args.home,
    )
    run_args: dict[str, Any] = {
        "code": str(HERE / "preprocessing.py"),
        "inputs": [ProcessingInput(source=str(args.data), destination="/opt/ml/processing/input", input_name="data")],
        "outputs": [
            ProcessingOutput(
                source="/opt/ml/processing/train", destination=str(args.output / "train"), output_name="train"
            ),
            ProcessingOutput(
                source="/opt/ml/processing/test", destination=str(args.output / "test"), output_name="test"
            ),
        ],
        "arguments": ["--train-test-split-ratio", str(args.split_ratio)],
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
        processor.run(**run_args)  # waits, printing each line as [algo-1] ...
    except UnexpectedStatusError as exc:
        print(f"job {exc.actual_status}: {exc.failure_reason}", file=sys.stderr)
        return 1
    except DistprocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = processor.latest_job
    described = job.describe() if job else {}
    print(f"\n{described['ProcessingJobName']}: {described['ProcessingJobStatus']}: {described.get('ExitMessage')}")
    for split in ("train", "test"):
        for path in sorted((args.output / split).glob("*.csv")):
            rows = sum(1 for _ in path.open()) - 1
            print(f"  {path}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
