"""Small file primitives the agent relies on: atomic writes, the event log,
the container's message file, and tar streams in and out of a job folder."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import stat
import tempfile
import time
from typing import IO, TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

if TYPE_CHECKING:
    import tarfile

MESSAGE_CHARS = 1024
# Read at most this much of a message file: enough to check it is UTF-8 far
# beyond what is kept, without letting a huge file exhaust memory.
MESSAGE_READ_LIMIT = 16 * 1024 * 1024


def write_atomic(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write a file so readers see the old content or the new, never a part.

    `durable` also has it survive a crash of the host (fsync). Files that serve
    only the run in progress (the task, the container's configuration, the
    pid) pass False: after a crash there is no run for them to serve, and each
    fsync put a disk flush on the path to the container's start.
    """
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, doc: Any, mode: int = 0o644, durable: bool = True) -> None:
    write_atomic(path, (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8"), mode, durable)


def read_json(path: str) -> Optional[Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def now() -> float:
    return time.time()


def remove_paths(paths: Iterable[str]) -> List[str]:
    """Remove each file or folder that exists; what could not be removed, and why."""
    import shutil  # here: only cleanups need it

    problems: List[str] = []
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        except OSError as exc:
            problems.append("{}: {}".format(path, exc))
    return problems


class EventLog:
    """Appends one JSON object per line; readers follow it by byte offset."""

    def __init__(self, path: str) -> None:
        self.path = path

    def emit(self, kind: str, **fields: Any) -> Dict[str, Any]:
        record: Dict[str, Any] = {"time": now(), "kind": kind}
        record.update(fields)
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        # O_APPEND keeps each line whole even with a second writer (`stop`).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return record


def read_message(path: str) -> Tuple[Optional[str], Optional[str]]:
    """The container's ExitMessage: (its first 1024 characters, None) or (None, what is wrong with it).

    What is wrong completes "wrote /opt/ml/output/message that ...". A missing
    file is an empty message. The whole file (up to a generous limit) is
    checked, since a bad byte after the first 1024 characters still makes the
    message invalid. Only a regular file is read: a symbolic link would be
    followed on the host, and a named pipe would block forever.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    if not stat.S_ISREG(st.st_mode):
        return None, "is {}, not a regular file".format(_file_kind(st.st_mode))
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    kept = []
    kept_len = 0
    read = 0
    try:
        with open(path, "rb") as fh:
            while read < MESSAGE_READ_LIMIT:
                chunk = fh.read(65536)
                if not chunk:
                    kept.append(decoder.decode(b"", final=True))
                    break
                read += len(chunk)
                text = decoder.decode(chunk)
                if kept_len < MESSAGE_CHARS:
                    kept.append(text)
                    kept_len += len(text)
    except UnicodeDecodeError:
        return None, "is not valid UTF-8"
    return "".join(kept)[:MESSAGE_CHARS], None


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def _safe_member(member: tarfile.TarInfo) -> bool:
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        return False
    return member.isfile() or member.isdir()


def extract_tar(stream: IO[bytes], dest: str) -> Tuple[int, int]:
    """Unpack a tar stream into dest; only plain files and folders, never outside it.

    Returns (files, bytes). Files land under a temporary name and are renamed
    when complete, so a broken stream never leaves a file that looks whole.
    """
    import tarfile  # here: only the verbs that move files need it

    files = 0
    total = 0
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not _safe_member(member):
                raise ValueError("refusing tar member {!r}".format(member.name))
            target = os.path.join(dest, member.name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target) or dest, exist_ok=True)
            source = archive.extractfile(member)
            if source is None:
                continue
            tmp = target + ".distproc-partial"
            with open(tmp, "wb") as out:
                while True:
                    chunk = source.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            if os.path.getsize(tmp) != member.size:
                os.unlink(tmp)
                raise ValueError("short file in tar stream: {}".format(member.name))
            os.chmod(tmp, member.mode & 0o755 | 0o600)
            os.replace(tmp, target)
            files += 1
            total += member.size
    return files, total


def pack_tree(root: str, out: IO[bytes]) -> Tuple[int, int]:
    """Write every regular file under root to a tar stream; symlinks are skipped.

    Returns (files, bytes). Symbolic links are never followed (contract.md).
    """
    import tarfile

    files = 0
    total = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        if not os.path.isdir(root):
            return 0, 0
        for folder, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(folder, name)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = os.path.relpath(path, root)
                info = tarfile.TarInfo(rel)
                info.size = st.st_size
                info.mtime = int(st.st_mtime)
                info.mode = st.st_mode & 0o777
                with open(path, "rb") as fh:
                    archive.addfile(info, fh)
                files += 1
                total += st.st_size
    return files, total
