#!/usr/bin/env python3
"""Regenerate distproc/spec/schema.json from botocore's SageMaker service model.

The runtime validates job documents against this file and never imports
botocore, so the schema is pinned to one botocore release: SageMaker's model
changes between releases (for example which ClusterConfig members are
required), and a job that validates today must validate tomorrow.

    .venv/bin/python scripts/gen_schema.py             # rewrite the packaged file
    .venv/bin/python scripts/gen_schema.py -o out.json # write elsewhere (tests compare)

To move the pin: install the new botocore, change PINNED_BOTOCORE, rerun,
review the diff of schema.json and run the spec tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

PINNED_BOTOCORE = "1.44.5"
SERVICE = "sagemaker"
API_VERSION = "2017-07-24"
OPERATION = "CreateProcessingJob"

# Only what a validator needs; documentation alone is most of the model's size.
SHAPE_KEYS = ("type", "required", "min", "max", "pattern", "enum")
REFERENCE_KEYS = ("member", "key", "value")

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "distproc" / "spec" / "schema.json"


def _slim(shape: dict[str, Any]) -> dict[str, Any]:
    out = {key: shape[key] for key in SHAPE_KEYS if key in shape}
    for key in REFERENCE_KEYS:
        if key in shape:
            out[key] = {"shape": shape[key]["shape"]}
    if "members" in shape:
        out["members"] = {name: {"shape": member["shape"]} for name, member in shape["members"].items()}
    return out


def _referenced(shape: dict[str, Any]) -> list[str]:
    names = [shape[key]["shape"] for key in REFERENCE_KEYS if key in shape]
    names.extend(member["shape"] for member in shape.get("members", {}).values())
    return names


def extract(model: dict[str, Any], root: str) -> dict[str, dict[str, Any]]:
    """Every shape reachable from ``root``, slimmed to its validation keys."""
    shapes: dict[str, dict[str, Any]] = {}
    todo = deque([root])
    while todo:
        name = todo.popleft()
        if name in shapes:
            continue
        full = model["shapes"][name]
        shapes[name] = _slim(full)
        todo.extend(_referenced(full))
    return shapes


def build() -> str:
    """The text of schema.json, from the installed botocore."""
    import botocore
    from botocore.loaders import Loader

    if botocore.__version__ != PINNED_BOTOCORE:
        raise SystemExit(
            f"botocore {botocore.__version__} is installed but the schema is pinned to "
            f"{PINNED_BOTOCORE}; install that version or move the pin (see this file's docstring)"
        )
    model = Loader().load_service_model(SERVICE, "service-2", api_version=API_VERSION)
    root = model["operations"][OPERATION]["input"]["shape"]
    document = {
        "generated_by": "scripts/gen_schema.py; do not edit by hand",
        "botocore_version": botocore.__version__,
        "service": SERVICE,
        "api_version": API_VERSION,
        "operation": OPERATION,
        "root": root,
        "shapes": extract(model, root),
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.output.write_text(build(), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
