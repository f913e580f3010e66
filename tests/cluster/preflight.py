"""What the machine must have before a cluster can be built."""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

from tests.cluster.config import ClusterConfig
from tests.cluster.constants import REQUIRED_TOOLS, ClusterError
from tests.cluster.process import _env_path, _tool


def preflight(cfg: ClusterConfig) -> list[str]:
    """Reasons the cluster cannot be built here (empty when it can)."""
    problems: list[str] = []
    if not sys.platform.startswith("linux"):
        problems.append("the test cluster needs Linux (network namespaces)")
        return problems
    if os.geteuid() != 0:
        problems.append(
            "the test cluster needs root (network namespaces, sshd, dockerd): "
            "run `sudo .venv/bin/pytest` or use .ci/run"
        )
    for name in REQUIRED_TOOLS:
        try:
            _tool(name)
        except ClusterError as e:
            problems.append(str(e))
    if shutil.which("busybox", path=_env_path()):
        try:
            if not _is_static_elf(Path(_tool("busybox"))):
                problems.append("busybox is dynamically linked; install the busybox-static package")
        except OSError as e:
            problems.append(f"cannot read busybox: {e}")
    try:
        cfg.validate()
    except ClusterError as e:
        problems.append(str(e))
    return problems


def _is_static_elf(path: Path) -> bool:
    """True if the ELF file has no program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        endian = "<" if head[5] == 1 else ">"
        phoff = struct.unpack_from(endian + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))
