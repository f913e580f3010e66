"""A user's files: read with a size cap, and named only inside their folder.

Two rules for anything a user supplies as a file or a name:

- A job or inventory file is small; what is named as one may not be
  (/dev/zero, a log, a FIFO that never ends). Reading it whole first would
  spend memory and time on it before saying it is wrong, so callers read at
  most one byte past their cap (``read_bounded``) and refuse the file if that
  byte is there.
- Names a job gives (job, input and output names) become paths. Validation
  (distproc.spec) refuses a name that is not a plain file name; ``inside`` is
  the second line, where a name becomes a path: a name that got past
  validation (a bug, a caller of a lower layer, a record written by an older
  version) still cannot lead a write outside the job store.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import IO, TypeVar

from .errors import UnsafePathError

__all__ = ["inside", "read_bounded"]

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


P = TypeVar("P", bound=PurePath)


def inside(folder: P, *names: str, what: str = "name") -> P:
    """``folder / name / ...``, refused unless each name is one plain path component.

    On this machine (a concrete :class:`~pathlib.Path`) the result, with links
    resolved, must also stay under ``folder``: a link inside the store must
    not lead out of it. A :class:`~pathlib.PurePosixPath` (a folder on a
    host) gets the name checks only, as its links cannot be seen from here.
    ``what`` names the kind of name for the message ("output name").

    >>> inside(PurePath("/store/data"), "job-1", "output")
    PurePosixPath('/store/data/job-1/output')
    >>> inside(PurePath("/store/data"), "../x", what="output name")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    distproc.errors.UnsafePathError: output name '../x' cannot be used in a path under /store/data: ...
    """
    for name in names:
        problem = _problem(name)
        if problem:
            raise UnsafePathError(f"{what} {name!r} cannot be used in a path under {folder}: {problem}")
    path = folder.joinpath(*names)
    if isinstance(path, Path):
        base = os.path.realpath(folder)
        target = os.path.realpath(path)
        if os.path.commonpath([base, target]) != base:
            raise UnsafePathError(f"{what} in {path} leads outside {folder} (to {target}) through a link")
    return path


def _problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if name in ("", ".", ".."):
        return "it is empty" if not name else f'it is "{name}"'
    if "/" in name:
        return 'it contains "/"'
    if "\x00" in name:
        return "it contains a NUL character"
    return None
