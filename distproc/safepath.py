"""Paths built from names a job gives (job, input and output names): kept in their folder.

Validation (distproc.spec) refuses such a name when it is not a plain file
name. This is the second line, where a name becomes a path: a name that got
past validation (a bug, a caller of a lower layer, a record written by an
older version) still cannot lead a write outside the job store.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import TypeVar

from .errors import UnsafePathError

__all__ = ["inside"]

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
