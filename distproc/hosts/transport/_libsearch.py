"""asyncssh's library searches at import, answered from the loader's cache without a process.

Importing asyncssh asks ctypes.util.find_library for liboqs (post-quantum key
exchange) and libnettle (UMAC). On Linux find_library runs `ldconfig -p`
for each, and when the loader's cache lacks the library, gcc and ld to look
further: on a machine with gcc and no liboqs that was five processes and
about 40 ms of CPU at every `distproc` start, and with nettle installed still
one `ldconfig` process. While asyncssh loads, the lookup here reads the
loader's cache (/etc/ld.so.cache, what `ldconfig -p` prints) itself:

- a library in the cache, built for this interpreter's machine, is answered
  with its file name (what find_library answers, for ctypes to load);
- one neither in the cache nor in a folder of LD_LIBRARY_PATH is answered
  None (what find_library would answer after running gcc and ld);
- anything else (no cache to read, a library only in LD_LIBRARY_PATH) is
  left to find_library itself, so asyncssh finds what it always would.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import glob
import os
import re
import sys
from collections.abc import Iterator

LOADER_CACHE = "/etc/ld.so.cache"
# ELF identification: class (32/64-bit) at byte 4, data (endianness) at 5, e_machine at 18-19.
ELF_MAGIC = b"\x7fELF"


def _elf_kind(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or not head.startswith(ELF_MAGIC):
        return None
    return head[4:6] + head[18:20]


def cached_library(name: str, cache: str = LOADER_CACHE, library_path: str | None = None) -> tuple[bool, str | None]:
    """(certain, answer): find_library(name)'s answer when the loader's cache settles it, else (False, None)."""
    try:
        with open(cache, "rb") as fh:
            data = fh.read()
    except OSError:
        return False, None  # no cache to read: find_library searches as it always did
    ours = _elf_kind(sys.executable)
    pattern = rb"(/[^\x00]*/(lib" + re.escape(name.encode()) + rb"\.[^/\x00]*))\x00"
    found = [
        soname.decode(errors="replace")
        for path, soname in re.findall(pattern, data)
        if ours is not None and _elf_kind(path.decode(errors="replace")) == ours
    ]
    if found:
        # A versioned name (libnettle.so.8) before the development link (libnettle.so), as ldconfig lists them.
        return True, sorted(found, key=lambda soname: (not re.search(r"\.so\.\d", soname), found.index(soname)))[0]
    path_var = os.environ.get("LD_LIBRARY_PATH", "") if library_path is None else library_path
    folders = [folder for folder in path_var.split(os.pathsep) if folder]
    if any(glob.glob(os.path.join(glob.escape(folder), f"lib{glob.escape(name)}.*")) for folder in folders):
        return False, None  # find_library's own search (ld) may find it there
    return True, None


@contextlib.contextmanager
def quick_library_lookup() -> Iterator[None]:
    """While the block runs, find_library answers from the loader's cache when that settles it."""
    original = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        certain, answer = cached_library(name)
        return answer if certain else original(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = original
