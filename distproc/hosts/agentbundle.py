"""The agent as shipped: a zipapp of distproc/agent, named by its content hash,
unpacked and compiled on each host into a folder that python runs as it would the zip.

Built in memory with fixed timestamps so the same source always gives the
same bytes and the same hash, which is what lets hosts cache it.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .install import install_script

PACKAGE_IN_ZIP = "distproc_agent"
_MAIN = f"import sys\nfrom {PACKAGE_IN_ZIP}.cli import main\nsys.exit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)

# Unpacked and compiled on the host: run from a zip, every module would be
# compiled again at every call (zipimport keeps no bytecode), which was most of
# each agent call's time.
INSTALL_SCRIPT = install_script("zip", prefix=".agent-", compile_now=True)

# Answers whether the bundle is present and which python runs, in one round trip.
PROBE_SCRIPT = """
import json, os, sys
print(json.dumps({"python": list(sys.version_info[:3]), "present": os.path.isdir(sys.argv[1])}))
"""


@dataclass(frozen=True, slots=True)
class AgentBundle:
    data: bytes
    digest: str

    def remote_path(self, work_dir: str) -> str:
        """The unpacked agent on the host: `python3 <this folder> VERB ...` runs it."""
        return f"{work_dir.rstrip('/')}/agent/distproc-agent-{self.digest}"


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


@cache
def agent_bundle() -> AgentBundle:
    """The zipapp for this version of distproc (computed once per process)."""
    source = resources.files("distproc") / "agent"
    modules = sorted((entry.name, entry.read_bytes()) for entry in source.iterdir() if entry.name.endswith(".py"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _add(archive, "__main__.py", _MAIN.encode())
        for name, data in modules:
            _add(archive, f"{PACKAGE_IN_ZIP}/{name}", data)
    data = buffer.getvalue()
    return AgentBundle(data=data, digest=hashlib.sha256(data).hexdigest()[:16])
