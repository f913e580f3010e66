"""Features this version of distproc refuses, in one table.

Each row is a valid SageMaker feature that distproc cannot honour yet. A job
that uses one is refused at validation, naming the field, rather than run
differently from SageMaker. When a feature is implemented, delete its row
(and its test); nothing else here needs to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Violation
from ._rules import channels

_VERSION = "in this version of distproc"

Where = str  # "request", "input" (each ProcessingInputs item) or "output" (each Outputs item)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused feature: the field, when its value is refused, and why."""

    where: Where
    field: tuple[str, ...]
    refused: Callable[[object], bool]
    why: str


def _present(value: object) -> bool:
    return True


def _is(expected: object) -> Callable[[object], bool]:
    # Exact type too: 1 == True in Python, but 1 is not true in JSON.
    return lambda value: type(value) is type(expected) and value == expected


REFUSED: tuple[Refusal, ...] = (
    Refusal(
        "input",
        ("DatasetDefinition",),
        _present,
        f"DatasetDefinition (Athena or Redshift queries) is not supported {_VERSION}; use S3Input with a file:// URI",
    ),
    Refusal(
        "input",
        ("AppManaged",),
        _is(True),
        f"AppManaged inputs are not supported yet {_VERSION}; leave AppManaged out or false",
    ),
    Refusal(
        "output",
        ("FeatureStoreOutput",),
        _present,
        f"FeatureStoreOutput is not supported {_VERSION}; use S3Output with a file:// URI",
    ),
    Refusal(
        "output",
        ("AppManaged",),
        _is(True),
        f"AppManaged outputs are not supported yet {_VERSION}; leave AppManaged out or false",
    ),
    Refusal(
        "request",
        ("NetworkConfig", "EnableNetworkIsolation"),
        _is(True),
        f"network isolation is not supported {_VERSION}: containers use the host network",
    ),
    Refusal(
        "request",
        ("NetworkConfig", "EnableInterContainerTrafficEncryption"),
        _is(True),
        f"inter-container traffic encryption is not supported {_VERSION}",
    ),
    Refusal(
        "request",
        ("ProcessingResources", "ClusterConfig", "InstancePreferences"),
        _present,
        f"InstancePreferences is not supported yet {_VERSION}; use InstanceType",
    ),
)


CONTINUOUS_FILE = "Continuous upload needs an s3:// or https:// S3Uri; use EndOfJob with a file:// URI"


def _is_file_uri(value: object) -> bool:
    return isinstance(value, str) and value[:7].lower() == "file://"


def _lookup(doc: dict[Any, Any], field: tuple[str, ...]) -> tuple[bool, object]:
    value: object = doc
    for key in field:
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def check(doc: dict[Any, Any]) -> list[Violation]:
    """A violation for every refused feature the document uses."""
    scopes: list[tuple[Where, str, dict[Any, Any]]] = [("request", "", doc)]
    scopes.extend(channels(doc))
    out = []
    for where, prefix, scope in scopes:
        found, uri = _lookup(scope, ("S3Output", "S3Uri"))
        found_mode, mode = _lookup(scope, ("S3Output", "S3UploadMode"))
        if where == "output" and found and found_mode and mode == "Continuous" and _is_file_uri(uri):
            # Continuous upload is the host's own work, and a host cannot write
            # into the coordinator's file system while the job runs.
            out.append(Violation(f"{prefix}.S3Output.S3UploadMode", CONTINUOUS_FILE))
        for refusal in REFUSED:
            if refusal.where != where:
                continue
            found, value = _lookup(scope, refusal.field)
            if found and refusal.refused(value):
                path = ".".join((prefix, *refusal.field) if prefix else refusal.field)
                out.append(Violation(path, refusal.why))
    return out
