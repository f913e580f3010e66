"""asyncssh's search for liboqs, without a compiler run when the library is absent.

Importing asyncssh asks ctypes.util.find_library for "oqs" and "liboqs" (for
post-quantum key exchange). On Linux, when the loader's cache lacks a
library, find_library runs gcc and ld to look further: five processes and
about 40 ms of CPU at every `distproc` start, on any machine with gcc. Here
the lookup is answered None at once when neither the loader's cache
(/etc/ld.so.cache) nor a folder of LD_LIBRARY_PATH holds a liboqs; when
either might, find_library itself runs, so asyncssh finds what it would have.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import glob
import os
from collections.abc import Iterator

OQS_NAMES = ("oqs", "liboqs")
LOADER_CACHE = "/etc/ld.so.cache"


def liboqs_may_be_present(cache: str = LOADER_CACHE, library_path: str | None = None) -> bool:
    """False only when liboqs is certainly not where the dynamic loader would find it."""
    try:
        with open(cache, "rb") as fh:
            if b"liboqs.so" in fh.read():
                return True
    except OSError:
        return True  # no cache to read: let find_library search as it always did
    path = os.environ.get("LD_LIBRARY_PATH", "") if library_path is None else library_path
    return any(glob.glob(os.path.join(folder, "liboqs.so*")) for folder in path.split(os.pathsep) if folder)


@contextlib.contextmanager
def quick_liboqs_lookup() -> Iterator[None]:
    """While the block runs, find_library of liboqs answers None at once when it is absent."""
    original = ctypes.util.find_library
    absent = not liboqs_may_be_present()

    def find_library(name: str) -> str | None:
        if absent and name in OQS_NAMES:
            return None
        return original(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = original
