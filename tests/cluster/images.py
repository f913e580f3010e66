"""Test images built without a registry (debootstrap or a static busybox tree, then ``docker import``), cached."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.config import ClusterConfig, DaemonLayout
from tests.cluster.constants import (
    BUSYBOX_IMAGE,
    BUSYBOX_IMAGE_CHANGES,
    CONTENT_LABEL,
    DEFAULT_MIRROR,
    IMAGE,
    IMAGE_RECIPE,
    OVERLAY_DIR,
    PY_IMAGE_CHANGES,
    ROOTFS_RECIPE,
    ROOTFS_STRIP,
    SUITE,
    ClusterError,
)
from tests.cluster.daemons import _docker_cli
from tests.cluster.hygiene import _unmount_all
from tests.cluster.process import _daemon_env, _docker_cli_env, _log, _run, _tail, _tool


@dataclass(frozen=True)
class ImageSource:
    name: str
    tarball: Path
    key: str
    changes: tuple[str, ...]


def debian_mirror(cfg: ClusterConfig) -> str:
    """The Debian mirror this machine's apt uses (or DISTPROC_TEST_DEBIAN_MIRROR)."""
    if cfg.mirror:
        return cfg.mirror.rstrip("/")
    candidates: list[str] = []
    files = [Path("/etc/apt/sources.list")]
    with contextlib.suppress(OSError):
        files += sorted(Path("/etc/apt/sources.list.d").iterdir())
    for f in files:
        if not f.is_file():
            continue
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f.suffix == ".sources":
            for block in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in block.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split():
                    candidates += fields.get("uris", "").split()
        elif f.suffix == ".list":
            for line in text.splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    candidates.append(parts[1])
    for uri in candidates:
        if uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _dpkg_arch() -> str:
    if shutil.which("dpkg"):
        cp = _run(["dpkg", "--print-architecture"], check=False)
        if cp.returncode == 0 and cp.stdout.strip():
            return cp.stdout.strip()
    return os.uname().machine


def _debootstrap_argv(root: Path, mirror: str, arch: str) -> list[str]:
    return [
        _tool("debootstrap"),
        "--variant=minbase",
        "--include=python3",
        f"--arch={arch}",
        SUITE,
        str(root),
        mirror,
    ]


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an image build by another session: wait for it
        yield
    finally:
        os.close(fd)


def _clean_build_dirs(cache_dir: Path) -> None:
    for p in cache_dir.glob("build-*"):
        _unmount_all([p])
        shutil.rmtree(p, ignore_errors=True)
    for p in cache_dir.glob("*.tar.tmp*"):
        with contextlib.suppress(OSError):
            p.unlink()


def _base_rootfs(cfg: ClusterConfig) -> tuple[Path, str]:
    """The debootstrapped rootfs tarball (cached), and its cache key."""
    mirror = debian_mirror(cfg)
    arch = _dpkg_arch()
    key = _sha(
        {
            "argv": _debootstrap_argv(Path("ROOT"), mirror, arch)[1:],
            "strip": ROOTFS_STRIP,
            "recipe": ROOTFS_RECIPE,
        }
    )
    target = cfg.cache_dir / f"rootfs-{SUITE}-minbase-python3-{key[:16]}.tar"
    if target.exists():
        return target, key
    _clean_build_dirs(cfg.cache_dir)
    build = Path(tempfile.mkdtemp(prefix="build-", dir=cfg.cache_dir))
    try:
        root = build / "rootfs"
        log = cfg.cache_dir / "debootstrap.log"
        _log(f"debootstrap {SUITE} (minbase + python3) from {mirror}: about a minute, once")
        started = time.monotonic()
        with open(log, "wb") as out:
            try:
                proc = subprocess.run(
                    _debootstrap_argv(root, mirror, arch),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=1200,
                    env=_daemon_env(),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ClusterError(f"debootstrap timed out; log {log}:\n{_tail(log)}") from None
        if proc.returncode != 0:
            extra = _tail(root / "debootstrap" / "debootstrap.log")
            raise ClusterError(f"debootstrap failed (exit {proc.returncode}); log {log}:\n{_tail(log)}\n{extra}")
        _log(f"debootstrap done in {time.monotonic() - started:.0f}s")
        _unmount_all([root])
        for rel in ROOTFS_STRIP:
            p = root / rel
            if p.is_dir() and not p.is_symlink():
                for child in p.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        for rel in ("etc/hostname", "etc/resolv.conf"):
            with contextlib.suppress(FileNotFoundError):
                (root / rel).unlink()
        tmp = build / "rootfs.tar"
        _run(
            [
                _tool("tar"),
                "--numeric-owner",
                "--one-file-system",
                "-C",
                str(root),
                "-cf",
                str(tmp),
                ".",
            ],
            timeout=600,
        )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(ClusterError):
            _unmount_all([build])
        shutil.rmtree(build, ignore_errors=True)
    return target, key


def _overlay_entries(overlay: Path) -> list[tuple[str, str, int, bytes]]:
    """(relative path, kind, mode, content or link target) for the overlay, sorted."""
    entries: list[tuple[str, str, int, bytes]] = []
    if not overlay.is_dir():
        return entries
    for dirpath, dirnames, filenames in os.walk(overlay):
        dirnames[:] = sorted(n for n in dirnames if n != "__pycache__")
        base = Path(dirpath)
        for n in dirnames:
            p = base / n
            rel = p.relative_to(overlay).as_posix()
            if p.is_symlink():
                entries.append((rel, "symlink", 0o777, os.readlink(p).encode()))
            else:
                entries.append((rel, "dir", 0o755, b""))
        for n in sorted(filenames):
            p = base / n
            rel = p.relative_to(overlay).as_posix()
            if p.is_symlink():
                entries.append((rel, "symlink", 0o777, os.readlink(p).encode()))
            else:
                mode = 0o755 if os.stat(p).st_mode & 0o111 else 0o644
                entries.append((rel, "file", mode, p.read_bytes()))
    return sorted(entries)


_FIXED_MTIME = 1_700_000_000


def _tarinfo(name: str, kind: str, mode: int, data: bytes) -> tarfile.TarInfo:
    ti = tarfile.TarInfo("./" + name)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mode = mode
    ti.mtime = _FIXED_MTIME
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = data.decode()
    else:
        ti.type = tarfile.REGTYPE
        ti.size = len(data)
    return ti


def _py_image(cfg: ClusterConfig) -> ImageSource:
    base, base_key = _base_rootfs(cfg)
    entries = _overlay_entries(OVERLAY_DIR)
    key = _sha(
        {
            "base": base_key,
            "overlay": [(r, k, m, hashlib.sha256(c).hexdigest()) for r, k, m, c in entries],
            "changes": PY_IMAGE_CHANGES,
            "recipe": IMAGE_RECIPE,
        }
    )
    target = cfg.cache_dir / f"image-py-{key[:16]}.tar"
    if not target.exists():
        for old in cfg.cache_dir.glob("image-py-*.tar"):
            with contextlib.suppress(OSError):
                old.unlink()
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        overlay_names = {r for r, _, _, _ in entries}
        with (
            tarfile.open(base, "r:") as src,
            tarfile.open(tmp, "w:", format=tarfile.GNU_FORMAT) as dst,
        ):
            present = set()
            for member in src:
                rel = member.name.removeprefix("./")
                present.add(rel)
                if rel in overlay_names and not member.isdir():
                    continue  # replaced by the overlay
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
            for rel, kind, mode, data in entries:
                if kind == "dir" and rel in present:
                    continue
                dst.addfile(_tarinfo(rel, kind, mode, data), io.BytesIO(data) if kind == "file" else None)
        os.replace(tmp, target)
    return ImageSource(IMAGE, target, key, PY_IMAGE_CHANGES)


def _busybox_image(cfg: ClusterConfig) -> ImageSource:
    busybox = Path(_tool("busybox")).resolve()
    binary = busybox.read_bytes()
    key = _sha(
        {
            "busybox": hashlib.sha256(binary).hexdigest(),
            "changes": BUSYBOX_IMAGE_CHANGES,
            "recipe": IMAGE_RECIPE,
        }
    )
    target = cfg.cache_dir / f"image-busybox-{key[:16]}.tar"
    if target.exists():
        return ImageSource(BUSYBOX_IMAGE, target, key, BUSYBOX_IMAGE_CHANGES)
    for old in cfg.cache_dir.glob("image-busybox-*.tar"):
        with contextlib.suppress(OSError):
            old.unlink()
    applets = _run([str(busybox), "--list-full"]).stdout.split()
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev"]
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    with tarfile.open(tmp, "w:", format=tarfile.GNU_FORMAT) as t:
        for rel in dirs:
            t.addfile(_tarinfo(rel, "dir", 0o1777 if rel == "tmp" else 0o755, b""))
        t.addfile(_tarinfo("bin/busybox", "file", 0o755, binary), io.BytesIO(binary))
        files = {
            "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
            "etc/group": b"root:x:0:\n",
        }
        for rel, data in files.items():
            t.addfile(_tarinfo(rel, "file", 0o644, data), io.BytesIO(data))
        for applet in sorted(set(applets)):
            applet = applet.strip("/")
            if applet == "bin/busybox" or "/" not in applet:
                continue
            t.addfile(_tarinfo(applet, "symlink", 0o777, b"/bin/busybox"))
    os.replace(tmp, target)
    return ImageSource(BUSYBOX_IMAGE, target, key, BUSYBOX_IMAGE_CHANGES)


def _image_key_in(cfg: ClusterConfig, d: DaemonLayout, image: str) -> str | None:
    argv = [
        _tool("docker"),
        "-H",
        f"unix://{d.docker_sock}",
        "image",
        "inspect",
        "--format",
        f'{{{{ index .Config.Labels "{CONTENT_LABEL}" }}}}',
        image,
    ]
    cp = _run(argv, check=False, timeout=60, env=_docker_cli_env())
    return cp.stdout.strip() if cp.returncode == 0 else None


def _import_image(cfg: ClusterConfig, d: DaemonLayout, src: ImageSource) -> bool:
    """Import ``src`` into ``d``'s daemon unless it is there already; True if imported."""
    if _image_key_in(cfg, d, src.name) == src.key:
        return False
    changes: list[str] = []
    for c in (*src.changes, f"LABEL {CONTENT_LABEL}={src.key}"):
        changes += ["--change", c]
    _docker_cli(cfg, d, "import", *changes, str(src.tarball), src.name, timeout=600)
    if _image_key_in(cfg, d, src.name) != src.key:
        raise ClusterError(f"importing {src.name} into {d.name} did not take")
    # The image the tag pointed at before, if any, is now dangling.
    _docker_cli(cfg, d, "image", "prune", "-f")
    return True
