"""Full validation of a CreateProcessingJob request against the pinned schema.

botocore's own ParamValidator checks required members, unknown keys, types
and minimums only; SageMaker checks the rest server-side. distproc has no
server, so this walker checks everything the model says (lengths, ranges,
enums, anchored patterns, list and map sizes) and then distproc's own rules
(see ``_rules`` and ``_unsupported``). Every violation is reported, each with
a field path such as ``ProcessingInputs[1].S3Input.LocalPath`` or
``Environment["MY KEY"]``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable
from datetime import datetime

from ..errors import Violation
from . import _rules, _schema, _unsupported
from ._pattern import compile_pattern
from ._rules import show
from .instance_types import closest

__all__ = ["ROOT_PATH", "json_type", "validate_request", "validate_value"]

ROOT_PATH = "(document)"
"""Path used for a violation about the document as a whole."""

_Out = list[Violation]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_request(doc: object) -> list[Violation]:
    """Every way ``doc`` breaks the schema or distproc's rules; empty if valid.

    >>> [str(v) for v in validate_request({"ProcessingJobName": "x"})]  # doctest: +ELLIPSIS
    ['ProcessingResources: required field is missing', ...]
    """
    out: _Out = []
    _walk(_schema.root_shape(), doc, "", out)
    if isinstance(doc, dict):
        out.extend(_rules.check(doc))
        out.extend(_unsupported.check(doc))
    return out


def validate_value(shape: str, value: object, path: str) -> list[Violation]:
    """Every way one value breaks the schema's rules for its shape, reported at ``path``.

    For values checked before a request exists (the SDK's ``job_name``).

    >>> [str(v) for v in validate_value("ProcessingJobName", "../x", "job_name")]  # doctest: +ELLIPSIS
    ['job_name: must be letters, digits and hyphens, ... (got "../x")']
    """
    out: _Out = []
    _walk(shape, value, path, out)
    return out


def json_type(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _plural(count: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {noun if count == 1 else plural}"


def _join(path: str, member: str) -> str:
    # An unknown key can be anything ("", "a.b"); quote it so the path stays readable.
    if not _IDENTIFIER.fullmatch(member):
        return f"{path}[{json.dumps(member, ensure_ascii=False)}]"
    return f"{path}.{member}" if path else member


def _walk(name: str, value: object, path: str, out: _Out) -> None:
    shape = _schema.shape(name)
    check = _CHECKS.get(shape["type"])
    if check is not None:
        check(name, shape, value, path or ROOT_PATH, out)


def _structure(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    if not isinstance(value, dict):
        out.append(Violation(path, f"must be an object (got {json_type(value)})"))
        return
    members: dict[str, dict[str, str]] = shape.get("members", {})
    prefix = "" if path == ROOT_PATH else path
    for member in _rules.required_members(name, shape.get("required", [])):
        if member not in value:
            out.append(Violation(_join(prefix, member), "required field is missing"))
    for key, item in value.items():
        if not isinstance(key, str):
            out.append(Violation(path, f"field names must be strings (got {json_type(key)})"))
        elif key in members:
            _walk(members[key]["shape"], item, _join(prefix, key), out)
        else:
            out.append(Violation(_join(prefix, key), _unknown_field(key, list(members))))


def _unknown_field(key: str, members: list[str]) -> str:
    by_lower = {member.lower(): member for member in members}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown field (did you mean {by_lower[close[0]]}?)"
    return "unknown field"


def _list(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    if not isinstance(value, list):
        out.append(Violation(path, f"must be a list (got {json_type(value)})"))
        return
    _check_size(shape, len(value), "item", path, out)
    member = shape["member"]["shape"]
    for index, item in enumerate(value):
        _walk(member, item, f"{path}[{index}]", out)


def _map(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    if not isinstance(value, dict):
        out.append(Violation(path, f"must be an object (got {json_type(value)})"))
        return
    _check_size(shape, len(value), "entry", path, out)
    for key, item in value.items():
        if not isinstance(key, str):
            out.append(Violation(f"{path}[{key!r}]", f"key must be a string (got {json_type(key)})"))
            continue
        entry = f"{path}[{json.dumps(key, ensure_ascii=False)}]"
        key_problems: _Out = []
        _walk(shape["key"]["shape"], key, entry, key_problems)
        out.extend(Violation(v.path, f"key {v.rule}") for v in key_problems)
        _walk(shape["value"]["shape"], item, entry, out)


def _check_size(shape: _schema.Shape, size: int, noun: str, path: str, out: _Out) -> None:
    if "min" in shape and size < shape["min"]:
        out.append(Violation(path, f"must have at least {_plural(shape['min'], noun)} (got {size})"))
    if "max" in shape and size > shape["max"]:
        out.append(Violation(path, f"must have at most {_plural(shape['max'], noun)} (got {size})"))


def _string(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    if not isinstance(value, str):
        out.append(Violation(path, f"must be a string (got {json_type(value)})"))
        return
    length = len(value)
    if "min" in shape and length < shape["min"]:
        least = _plural(shape["min"], "character")
        out.append(Violation(path, f"must be at least {least} (got {length})"))
    if "max" in shape and length > shape["max"]:
        most = _plural(shape["max"], "character")
        out.append(Violation(path, f"must be at most {most} (got {length})"))
    if "enum" in shape and value not in shape["enum"]:
        out.append(Violation(path, _enum_rule(name, shape["enum"], value)))
    if "pattern" in shape and not _rules.skips_pattern(name, value):
        compiled = compile_pattern(shape["pattern"])
        if compiled is not None and compiled.fullmatch(value) is None:
            out.append(Violation(path, f"{_rules.pattern_rule(name, shape['pattern'])} (got {show(value)})"))


def _enum_rule(name: str, allowed: list[str], value: str) -> str:
    if len(allowed) <= 12:
        return f"must be one of {', '.join(sorted(allowed))} (got {show(value)})"
    # Only ProcessingInstanceType is this long; its hint is shared with the inventory's check.
    close = closest(value, allowed)
    hint = f"; did you mean {close}?" if close else ""
    return f"must be a known {name} (got {show(value)}{hint})"


def _integer(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    # bool is an int subclass in Python, but true is not a count in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        out.append(Violation(path, f"must be an integer (got {json_type(value)})"))
        return
    _check_range(shape, value, path, out)


def _number(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        out.append(Violation(path, f"must be a number (got {json_type(value)})"))
    elif not math.isfinite(value):
        out.append(Violation(path, "must be a finite number"))
    else:
        _check_range(shape, value, path, out)


def _check_range(shape: _schema.Shape, value: float, path: str, out: _Out) -> None:
    if "min" in shape and value < shape["min"]:
        out.append(Violation(path, f"must be at least {shape['min']} (got {_number_text(value)})"))
    if "max" in shape and value > shape["max"]:
        out.append(Violation(path, f"must be at most {shape['max']} (got {_number_text(value)})"))


def _number_text(value: float) -> str:
    try:
        return str(value)
    except ValueError:  # an int past Python's digit limit for str()
        return "a number too long to show"


def _boolean(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    if not isinstance(value, bool):
        out.append(Violation(path, f"must be true or false (got {json_type(value)})"))


def _timestamp(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    # JSON has no date type: botocore takes ISO 8601 text or epoch seconds.
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            out.append(Violation(path, f"must be an ISO 8601 timestamp (got {show(value)})"))
    elif isinstance(value, bool) or not isinstance(value, int | float):
        out.append(Violation(path, f"must be a timestamp (got {json_type(value)})"))


def _blob(name: str, shape: _schema.Shape, value: object, path: str, out: _Out) -> None:
    if not isinstance(value, str):
        out.append(Violation(path, f"must be a base64 string (got {json_type(value)})"))


_Check = Callable[[str, _schema.Shape, object, str, _Out], None]

# Types absent from this table (none in the pinned schema) are not checked.
_CHECKS: dict[str, _Check] = {
    "structure": _structure,
    "list": _list,
    "map": _map,
    "string": _string,
    "integer": _integer,
    "long": _integer,
    "float": _number,
    "double": _number,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "blob": _blob,
}
