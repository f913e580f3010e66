"""The pinned CreateProcessingJob schema, read from the package's schema.json.

schema.json is generated from botocore's SageMaker model by
scripts/gen_schema.py; the runtime reads it as data so it never needs botocore.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

Shape = dict[str, Any]


@cache
def _document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def root_shape() -> str:
    """Name of the request shape (``CreateProcessingJobRequest``)."""
    name: str = _document()["root"]
    return name


def shape(name: str) -> Shape:
    """One shape by name: type, members, required, min, max, pattern, enum..."""
    found: Shape = _document()["shapes"][name]
    return found


def botocore_version() -> str:
    """The botocore release the schema was generated from."""
    version: str = _document()["botocore_version"]
    return version


def member_shape(structure: str, member: str) -> str:
    """Shape name of one member of a structure shape."""
    name: str = shape(structure)["members"][member]["shape"]
    return name
