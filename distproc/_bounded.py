"""Reading a user's file (or standard input) with a size cap.

A job or inventory file is small; what is named as one may not be (/dev/zero,
a log, a FIFO that never ends). Reading it whole first would spend memory and
time on it before saying it is wrong, so callers read at most one byte past
their cap and refuse the file if that byte is there.
"""

from __future__ import annotations

import os
from typing import IO

__all__ = ["read_bounded"]

_CHUNK = 1 << 16


def read_bounded(source: str | os.PathLike[str] | IO[bytes], limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a file, or of an open binary stream (``sys.stdin.buffer``).

    More than ``limit`` bytes back means the source is larger than ``limit``:
    the caller refuses it, naming the file and the cap. OSError (missing,
    unreadable, a folder) is the caller's to report too.

    >>> len(read_bounded("/dev/zero", 10))
    11
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            return _read(stream, limit + 1)
    return _read(source, limit + 1)


def _read(stream: IO[bytes], wanted: int) -> bytes:
    # A loop, as a pipe or an unbuffered stream may give less than asked at a time.
    chunks = []
    while wanted > 0:
        chunk = stream.read(min(wanted, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)
