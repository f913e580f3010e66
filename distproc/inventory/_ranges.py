"""Host patterns: ``name``, ``name:port``, IPv6 addresses, and ranges.

Ranges follow Ansible's rules: ``[BEGIN:END]`` or ``[BEGIN:END:STEP]``, both
ends included; numbers keep their zero padding (``[01:04]`` gives ``01`` ..
``04``, and then both ends must have the same width); letters are single
characters ordered ``a``..``z`` then ``A``..``Z``; an empty BEGIN means 0.
Several ranges in one name multiply out, leftmost slowest.

Stricter than Ansible, on purpose: a range whose end comes before its begin is
an error (Ansible silently yields no hosts for numbers), so is a colon that is
not followed by a port, and a stray bracket.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import string

#: More hosts than this from one pattern is far more likely a typo
#: (``[1:100000]``) than a cluster, and would cost memory before any check.
MAX_HOSTS_PER_PATTERN = 10_000

_LETTERS = string.ascii_lowercase + string.ascii_uppercase
_RANGE = re.compile(r"\[([^\[\]]*)\]")
_BRACKETED_IPV6 = re.compile(r"\[([^\[\]]+)\](?::(\w*))?")


class PatternError(ValueError):
    """A host pattern is malformed; the loader adds file and group to the message."""


def parse_host_pattern(pattern: str) -> tuple[list[str], int | None]:
    """Split ``pattern`` into the host names it stands for and the port it names.

    >>> parse_host_pattern("gpu[01:03].example:2222")
    (['gpu01.example', 'gpu02.example', 'gpu03.example'], 2222)
    >>> parse_host_pattern("[fe80::1]:22")
    (['fe80::1'], 22)
    """
    if not pattern or pattern != pattern.strip() or any(c.isspace() for c in pattern):
        raise PatternError("a host name must be non-empty and contain no whitespace")
    bracketed = _BRACKETED_IPV6.fullmatch(pattern)
    if bracketed and _is_ipv6(bracketed.group(1)):
        port_text = bracketed.group(2)
        return [bracketed.group(1)], None if port_text is None else _port(port_text)
    colons = _colons_outside_brackets(pattern)
    if len(colons) >= 2:
        if _is_ipv6(pattern):
            return [pattern], None
        raise PatternError(
            "has several colons but is not an IPv6 address (write an IPv6 address with a port as [ADDRESS]:PORT)"
        )
    port = None
    if colons:
        pattern, port = pattern[: colons[0]], _port(pattern[colons[0] + 1 :])
    return expand_ranges(pattern), port


def expand_ranges(name: str) -> list[str]:
    """Every host name a name with ``[a:b]`` ranges stands for, in order.

    >>> expand_ranges("node[a:c]")
    ['nodea', 'nodeb', 'nodec']
    """
    literals: list[str] = []
    choices: list[list[str]] = []
    position = 0
    for match in _RANGE.finditer(name):
        literals.append(name[position : match.start()])
        choices.append(_range_values(match.group(1)))
        position = match.end()
    literals.append(name[position:])
    if any("[" in part or "]" in part for part in literals):
        raise PatternError("has a bracket that does not enclose a range like [01:04]")
    total = 1
    for values in choices:
        total *= len(values)
    if total > MAX_HOSTS_PER_PATTERN:
        raise PatternError(f"expands to {total} hosts; at most {MAX_HOSTS_PER_PATTERN} per pattern")
    names = []
    for combination in itertools.product(*choices):
        pieces = [literals[0]]
        for value, literal in zip(combination, literals[1:], strict=True):
            pieces += [value, literal]
        names.append("".join(pieces))
    if "" in names:
        raise PatternError("a host name must not be empty")
    return names


def _range_values(body: str) -> list[str]:
    parts = [part.strip() for part in body.split(":")]
    if len(parts) not in (2, 3):
        raise PatternError(f"range [{body}] must be [begin:end] or [begin:end:step]")
    begin, end = parts[0], parts[1]
    step_text = parts[2] if len(parts) == 3 else "1"
    if not _is_number(step_text) or int(step_text) == 0:
        raise PatternError(f"range [{body}]: step must be a positive whole number")
    step = int(step_text)
    if not end:
        raise PatternError(f"range [{body}] has no end")
    if (begin == "" or _is_number(begin)) and _is_number(end):
        begin = begin or "0"
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        if width and len(end) != width:
            raise PatternError(f"range [{body}]: a zero-padded range needs begin and end of the same width")
        first, last = int(begin), int(end)
        if first > last:
            raise PatternError(f"range [{body}]: begin is after end")
        if (last - first) // step >= MAX_HOSTS_PER_PATTERN:
            raise PatternError(f"range [{body}] expands to more than {MAX_HOSTS_PER_PATTERN} hosts")
        return [str(n).zfill(width) for n in range(first, last + 1, step)]
    if len(begin) == 1 and len(end) == 1 and begin in _LETTERS and end in _LETTERS:
        first, last = _LETTERS.index(begin), _LETTERS.index(end)
        if first > last:
            raise PatternError(f"range [{body}]: begin is after end (order is a..z, then A..Z)")
        return list(_LETTERS[first : last + 1 : step])
    raise PatternError(f"range [{body}]: both ends must be whole numbers, or both single letters")


def _colons_outside_brackets(text: str) -> list[int]:
    depth = 0
    found = []
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
        elif char == ":" and depth == 0:
            found.append(index)
    return found


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_number(text: str) -> bool:
    # ASCII only: str.isdecimal() also accepts other scripts' digits. The length
    # cap keeps int() clear of Python's limit on digits it converts.
    return 0 < len(text) <= 12 and text.isascii() and text.isdecimal()


def _port(text: str) -> int:
    if not _is_number(text) or not 1 <= int(text) <= 65535:
        raise PatternError(f"port {text!r} after the colon must be a number from 1 to 65535")
    return int(text)
