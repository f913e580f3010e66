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

PACKAGE_IN_ZIP = "distproc_agent"
_MAIN = f"import sys\nfrom {PACKAGE_IN_ZIP}.cli import main\nsys.exit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)

# Unpacks the zipapp from stdin into a folder and compiles it there with the
# host's own python: run from a zip, every module would be compiled again at
# every call (zipimport keeps no bytecode), which was most of each agent
# call's time. Unpacked under a temporary name and renamed into place, so a
# host whose work folder several hosts share never runs a half-written agent;
# a lost race keeps the winner's copy.
INSTALL_SCRIPT = """
import compileall, io, os, shutil, sys, tempfile, zipfile
path = sys.argv[1]
folder = os.path.dirname(path)
os.makedirs(folder, mode=0o755, exist_ok=True)
tmp = tempfile.mkdtemp(prefix=".agent-", dir=folder)
try:
    with zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read())) as archive:
        for name in archive.namelist():
            if name.startswith("/") or ".." in name.split("/"):
                raise SystemExit("refusing agent member %r" % name)
        archive.extractall(tmp)
    compileall.compile_dir(tmp, quiet=1)
    for root, dirs, files in os.walk(tmp):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    try:
        os.rename(tmp, path)
    except OSError:
        if not os.path.isdir(path):
            raise
        shutil.rmtree(tmp)
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
print('{"installed": true}')
"""

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
