"""Wake-ups when files in a job folder change: Linux inotify, through ctypes.

The follower waits on this instead of polling, so a line the run writes (an
event, container output, result.json) reaches the coordinator at once rather
than at the next look, and a quiet job costs no looks at all. Where inotify
is not to be had (another kernel, a libc without it, the instance limit
reached) `open` gives None and the follower polls as before.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
# Appends (events.jsonl, container.log) and atomic renames (result.json); not
# IN_ATTRIB or IN_CLOSE_WRITE, which the pings' touches of `watched` cause.
CHANGES = IN_MODIFY | IN_MOVED_TO | IN_CREATE


class DirWatch:
    """A file descriptor that turns readable when a file in one folder changes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, folder: str) -> Optional["DirWatch"]:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
            if fd < 0:
                return None
            if libc.inotify_add_watch(fd, os.fsencode(folder), CHANGES) < 0:
                os.close(fd)
                return None
        except (OSError, AttributeError, ImportError):
            return None
        return cls(fd)

    def drain(self) -> None:
        """Forget the changes seen so far (the caller is about to read the files)."""
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return
            except OSError:  # BlockingIOError: nothing more to read
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
