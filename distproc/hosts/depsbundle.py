"""The agent's libraries as shipped: boto3 (S3 staging) and pynvml (GPU metrics), pure Python.

Hosts need nothing but python3 and Docker, so the coordinator sends the
libraries it has itself, once per host, unpacked into a folder named by the
bundle's hash. botocore's data is pruned to the S3 and STS models, which is
most of its size. Built deterministically, so the hash is stable.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .install import install_script

# Top-level packages (or modules) the agent's s3 module needs at run time.
PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six", "pynvml")
KEEP_SERVICES = ("s3", "sts")

INSTALL_DEPS_SCRIPT = install_script("tar.gz", prefix=".deps-", compile_now=False)


@dataclass(frozen=True, slots=True)
class DepsBundle:
    data: bytes
    digest: str

    def remote_dir(self, work_dir: str) -> str:
        return f"{work_dir.rstrip('/')}/agent/deps-{self.digest}"


def _sources() -> list[tuple[str, Path]]:
    """(name in the archive, path on this machine) of every file to ship."""
    files: list[tuple[str, Path]] = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise RuntimeError(f"{package} is not installed on the coordinator (pip install distproc's dependencies)")
        if spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations)))
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root.parent)
                if not path.is_file() or "__pycache__" in rel.parts or _pruned(rel):
                    continue
                files.append((rel.as_posix(), path))
        elif spec.origin:
            files.append((Path(spec.origin).name, Path(spec.origin)))
    return files


def _pruned(rel: Path) -> bool:
    # botocore/data/<service>/... for services staging never calls.
    parts = rel.parts
    return len(parts) > 3 and parts[0] == "botocore" and parts[1] == "data" and parts[2] not in KEEP_SERVICES


@functools.cache
def deps_bundle() -> DepsBundle:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, path in _sources():
            info = tarfile.TarInfo(name)
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    # mtime=0 in the gzip header and fixed tar metadata keep the bytes stable.
    data = gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)
    return DepsBundle(data=data, digest=hashlib.sha256(data).hexdigest()[:16])
