"""file:// inputs and outputs: paths on the coordinator's machine.

A file:// URI follows S3Prefix rules, so a job moves to S3 by changing URIs
only: the URI's path is a string prefix, not a folder (`/data/a` matches
`/data/a/x` and `/data/ab/x`), and the rest of each matching path becomes its
path under LocalPath. Only regular files count; symbolic links are skipped.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

from ..errors import StagingError
from ..plan import SourceFile


def file_uri_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise StagingError(f"{uri}: not a file:// URI on this machine")
    return unquote(parsed.path)


def list_prefix(uri: str) -> list[SourceFile]:
    """Every regular file whose path starts with the URI's path, with S3Prefix naming."""
    prefix = file_uri_path(uri)
    root = prefix if prefix.endswith("/") else os.path.dirname(prefix) or "/"
    found: list[SourceFile] = []
    if not os.path.isdir(root):
        return found
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        # Prune folders that cannot hold a match, so `/data/a` does not walk all of /data.
        dirnames[:] = sorted(
            d
            for d in dirnames
            if os.path.join(folder, d).startswith(prefix) or prefix.startswith(os.path.join(folder, d) + "/")
        )
        for name in sorted(filenames):
            path = os.path.join(folder, name)
            if not path.startswith(prefix):
                continue
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = path[len(prefix) :].lstrip("/") or os.path.basename(path)
            found.append(SourceFile(source=path, relative_path=rel, size=st.st_size))
    return found


async def tar_stream(files: Iterable[SourceFile], chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
    """A tar stream of the files under their relative paths, produced in chunks."""
    buffer = io.BytesIO()
    archive = tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed in finally
    try:
        for item in files:
            info = tarfile.TarInfo(item.relative_path)
            try:
                fh = open(item.source, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise StagingError(f"cannot read input {item.source}: {exc}") from exc
            with fh:
                st = os.fstat(fh.fileno())
                if st.st_size != item.size:
                    raise StagingError(f"input {item.source} changed size while staging")
                info.size = st.st_size
                info.mtime = int(st.st_mtime)
                info.mode = 0o644
                archive.addfile(info, fh)
            if buffer.tell() >= chunk_size:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        archive.close()
        yield buffer.getvalue()
    finally:
        archive.close()


def extract_output(stream: IO[bytes], dest: Path) -> tuple[int, int]:
    """Unpack an output tar from a host into dest; files appear whole or not at all."""
    files = 0
    total = 0
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name
            if name.startswith("/") or ".." in name.split("/") or not member.isfile():
                raise StagingError(f"refusing output entry {name!r} from host")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is None:
                continue
            tmp = target.with_name(target.name + ".distproc-partial")
            with open(tmp, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            if tmp.stat().st_size != member.size:
                tmp.unlink()
                raise StagingError(f"output {name} arrived short")
            os.replace(tmp, target)
            files += 1
            total += member.size
    return files, total
