"""The one script that puts a bundle on a host: the agent (a zip) and its libraries (a tar.gz).

Run by the host's own python3 (3.9 or newer) with the bundle on stdin and its
target folder as the argument. It unpacks into a temporary folder beside the
target and renames that into place, so a host whose work folder several hosts
share never sees a half-unpacked bundle, and a lost race keeps the winner's
copy. Members that would land outside the folder, or that are neither files
nor folders, are refused. Modes are set (folders 0755, files 0644) whatever the
host's umask, so a bundle is the same on every host, as its hash-named folder
promises. A target that is already there is left as it is: the bundle is named
by its content, so it is the same one.
"""

from __future__ import annotations

from typing import Literal

_TEMPLATE = """
import compileall, io, json, os, shutil, sys, tarfile, tempfile, zipfile
KIND, COMPILE = %(kind)r, %(compile)r
target = sys.argv[1]
if os.path.isdir(target):
    sys.stdin.buffer.read()
    print(json.dumps({"installed": False}))
    sys.exit(0)

def members():
    if KIND == "zip":
        with zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read())) as archive:
            for info in archive.infolist():
                name = info.filename.rstrip("/")
                yield name, info.is_dir(), not info.is_dir(), lambda info=info: archive.open(info)
    else:
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz") as archive:
            for member in archive:
                yield member.name, member.isdir(), member.isfile(), lambda member=member: archive.extractfile(member)

parent = os.path.dirname(target)
os.makedirs(parent, mode=0o755, exist_ok=True)
tmp = tempfile.mkdtemp(prefix=%(prefix)r, dir=parent)
try:
    for name, is_dir, is_file, data in members():
        if name.startswith("/") or ".." in name.split("/") or not (is_dir or is_file):
            raise SystemExit("refusing bundle member %%r" %% name)
        path = os.path.join(tmp, name)
        if is_dir:
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with data() as src, open(path, "wb") as out:
            shutil.copyfileobj(src, out)
    if COMPILE:
        compileall.compile_dir(tmp, quiet=1)
    for root, dirs, files in os.walk(tmp):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    try:
        os.rename(tmp, target)
    except OSError:
        if not os.path.isdir(target):
            raise
        shutil.rmtree(tmp)
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
print(json.dumps({"installed": True}))
"""


def install_script(kind: Literal["zip", "tar.gz"], prefix: str, compile_now: bool) -> str:
    """`python3 -c <this> TARGET` unpacks the bundle on stdin into TARGET.

    ``compile_now`` writes the bytecode at install: the agent's modules are
    imported at every agent call, so they are compiled once here; the
    libraries' (most of botocore, of which a job imports a little) are compiled
    by python as they are first imported.
    """
    return _TEMPLATE % {"kind": kind, "compile": compile_now, "prefix": prefix}
