"""SageMaker's processing instance types, and the hint for a near miss.

The job document (ProcessingResources.ClusterConfig.InstanceType) and the
inventory (``distproc_instance_type``) are checked against the same list, the
pinned schema's ProcessingInstanceType enum, and share one hint, so a type
written wrong gets the same "did you mean" wherever it is written.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache

from . import _schema

__all__ = ["closest", "processing_instance_types"]

_PREFIX = "ml."


@cache
def processing_instance_types() -> frozenset[str]:
    """Every instance type a processing job may ask for (``ml.m5.xlarge``, ...)."""
    return frozenset(_schema.shape("ProcessingInstanceType")["enum"])


def closest(value: str, choices: Iterable[str]) -> str | None:
    """The choice ``value`` was most likely meant to be, or None if none is close.

    Case is ignored and a missing ``ml.`` is supplied first, because the usual
    slips are an EC2 name (``m5.xlarge``) and capitals; only then is the nearest
    spelling looked for, among types of the same family (``m5`` in
    ``ml.m5.xlarge``) when there are any: ``ml.p4d.24xlarge`` is one letter from
    ``ml.r5d.24xlarge``, but a GPU host is not a memory-optimised one, so a
    family no choice has (a misspelt family too) gets no hint.

    >>> types = processing_instance_types()
    >>> closest("m5.xlarge", types), closest("ML.M5.XLARGE", types), closest("ml.m5.xlarg", types)
    ('ml.m5.xlarge', 'ml.m5.xlarge', 'ml.m5.xlarge')
    >>> closest("p4d.24xlarge", types) is None  # SageMaker Processing has no p4d types
    True
    """
    by_lower: dict[str, str] = {}
    for choice in sorted(choices):
        by_lower.setdefault(choice.lower(), choice)
    text = value.strip().lower()
    tries = [text] if text.startswith(_PREFIX) else [_PREFIX + text, text]
    for attempt in tries:
        if attempt in by_lower:
            return by_lower[attempt]
    for attempt in tries:
        family = [c for c in by_lower if _family(c) == _family(attempt)]
        close = difflib.get_close_matches(attempt, family, n=1)
        if close:
            return by_lower[close[0]]
    return None


def _family(instance_type: str) -> str:
    """``m5`` for ``ml.m5.xlarge``; empty for a name not shaped ``ml.FAMILY.SIZE`` (they form one pool)."""
    parts = instance_type.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "ml" else ""
