"""The `distproc` command's first step, kept light.

With DISTPROC_FORKSERVER=1 the user's fork-server runs the command
(forkserver/client.py), and this process then imports nothing of the command
line's own (the CLI module, argparse, dataclasses: about 20 ms of CPU, a
tenth of a served one-host job's launch). Otherwise, or when the server
cannot serve, the command runs here (cli.main).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


def main() -> NoReturn:
    """The `distproc` console script and `python -m distproc`."""
    if os.environ.get("DISTPROC_FORKSERVER") == "1":
        from .forkserver.client import serve

        served = serve()
        if served is not None:
            exit_now(served)
    from .cli import main as run_here

    exit_now(run_here())


def exit_now(code: int) -> NoReturn:
    """Flush the output, then exit at once, skipping the interpreter's teardown.

    When a command is done, its job is recorded, connections are closed and
    files written; what is left is freeing every imported module object by
    object (asyncssh, cryptography, ...: about 50 ms), which each command, and
    so every short job, would otherwise wait for.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
