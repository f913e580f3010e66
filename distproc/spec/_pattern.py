"""Patterns from the service model, made usable by Python's ``re``.

The model's patterns are written for Java's regex engine, where a pattern is
applied to the whole value and ``\\d``, ``\\w``, ``\\s`` are ASCII-only. Three
Java idioms need translating; anything else that ``re`` cannot compile is
skipped (``compile_pattern`` returns None) rather than crashing validation:

- ``\\p{L}``, ``\\P{Lu}``... Unicode categories, expanded to explicit ranges
  from :mod:`unicodedata`;
- ``\\uD800\\uDC00`` surrogate pairs (UTF-16), joined into one code point;
- ``.``, which in Java also stops at ``\\r``, U+0085, U+2028 and U+2029.
"""

from __future__ import annotations

import re
import sys
import unicodedata
import warnings
from functools import cache

_JAVA_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_CATEGORY_NAME = re.compile(r"(?:Is)?([LMNPSZC][a-z]?)")


class _Untranslatable(Exception):
    pass


@cache
def _category_ranges() -> dict[str, tuple[tuple[int, int], ...]]:
    """Code point ranges for every one- and two-letter general category."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        for name in (category, category[0]):
            spans = ranges.setdefault(name, [])
            if spans and spans[-1][1] == code - 1:
                spans[-1] = (spans[-1][0], code)
            else:
                spans.append((code, code))
    return {name: tuple(spans) for name, spans in ranges.items()}


def _complement(spans: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = 0
    for low, high in spans:
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= sys.maxunicode:
        out.append((start, sys.maxunicode))
    return out


def _class_body(name: str, negated: bool) -> str:
    found = _CATEGORY_NAME.fullmatch(name)
    spans = _category_ranges().get(found.group(1)) if found else None
    if spans is None:
        raise _Untranslatable(name)
    chosen = _complement(spans) if negated else list(spans)
    return "".join(f"\\U{low:08x}" if low == high else f"\\U{low:08x}-\\U{high:08x}" for low, high in chosen)


def _unicode_escape(pattern: str, at: int) -> tuple[int, int] | None:
    """Code point of a ``\\uXXXX`` (or surrogate pair) at ``at``, and its end."""
    if not _HEX4.fullmatch(pattern, at + 2, at + 6):
        return None
    code = int(pattern[at + 2 : at + 6], 16)
    end = at + 6
    pair = 0xD800 <= code <= 0xDBFF and pattern.startswith("\\u", end) and _HEX4.fullmatch(pattern, end + 2, end + 6)
    if pair:
        low = int(pattern[end + 2 : end + 6], 16)
        if 0xDC00 <= low <= 0xDFFF:
            return 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00), end + 6
    return code, end


def translate(pattern: str) -> str:
    """Python spelling of a Java pattern; raises _Untranslatable."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            following = pattern[i + 1]
            if following in "pP":
                if pattern.startswith("{", i + 2):
                    close = pattern.find("}", i + 3)
                    if close < 0:
                        raise _Untranslatable(pattern)
                    name, i = pattern[i + 3 : close], close + 1
                else:
                    name, i = pattern[i + 2 : i + 3], i + 3
                body = _class_body(name, negated=following == "P" and in_class)
                if in_class:
                    out.append(body)
                else:
                    out.append(("[^" if following == "P" else "[") + body + "]")
                continue
            if following == "u":
                decoded = _unicode_escape(pattern, i)
                if decoded is not None:
                    out.append(f"\\U{decoded[0]:08x}")
                    i = decoded[1]
                    continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "." and not in_class:
            char = _JAVA_DOT
        out.append(char)
        i += 1
    return "".join(out)


@cache
def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """A compiled pattern to use with ``fullmatch``, or None if it cannot be had."""
    try:
        # A warning (e.g. "possible nested set") means re would read the pattern
        # differently from Java, so it counts as a failure too.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(translate(pattern), re.ASCII)
    except (_Untranslatable, re.error, Warning, RecursionError, OverflowError):
        return None
