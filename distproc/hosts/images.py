"""`run --ship-image`: the job's image, for hosts without a registry.

The coordinator's own `docker` CLI (and its DOCKER_HOST) is used. Each host
is asked first for the ID its daemon gives the image's name; only when one
lacks this machine's image ID is the image saved (`docker save`), and only
once per image: the tar is kept in the job store's `images/` folder (0700,
the image may hold secrets), named by image ID and name, and later runs
reuse it. The newest KEEP_SAVED tars are kept; older ones are removed when a
new one is saved. The hosts load the tar through their agents (`load-image`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError

#: Saved images kept for later runs (each as large as its image).
KEEP_SAVED = 2
#: An unfinished save older than this was left by a process that died.
_STALE_PARTIAL_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class SavedImage:
    image: str
    image_id: str
    path: Path
    size: int


def _docker(args: list[str], timeout: float | None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"--ship-image needs the docker command on this machine: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"docker {args[0]} took longer than {timeout} s") from exc


def local_image_id(image: str) -> str:
    found = _docker(["image", "inspect", "--format", "{{.Id}}", image], timeout=60)
    if found.returncode != 0:
        raise ImageError(
            f"AppSpecification.ImageUri: --ship-image needs {image} in this machine's Docker "
            f"(docker pull or docker build it first): {found.stderr.strip()[-300:]}"
        )
    return found.stdout.strip()


def saved_name(image: str, image_id: str) -> str:
    """The tar's file name: the image ID, and the name it was saved under (the tar tags it so).

    Only hex digits, whatever the ID and name hold, so it stays in its folder.
    """
    digest = re.fullmatch(r"sha256:([0-9a-f]{64})", image_id)
    key = digest.group(1) if digest else hashlib.sha256(image_id.encode()).hexdigest()
    return f"{key}-{hashlib.sha256(image.encode()).hexdigest()[:16]}.tar"


def saved_image(image: str, image_id: str, folder: Path, keep: int = KEEP_SAVED) -> SavedImage:
    """The `docker save` tar of `image`, whose ID here is `image_id`: kept from an earlier run, or saved now."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / saved_name(image, image_id)
    if path.is_file():
        os.utime(path)  # recently used: kept longest
        return SavedImage(image, image_id, path, path.stat().st_size)
    partial = folder / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
    try:
        saved = _docker(["save", "--output", str(partial), image], timeout=None)
        if saved.returncode != 0:
            raise ImageError(f"docker save {image} failed: {saved.stderr.strip()[-300:]}")
        # The name may have moved to another image since the hosts were asked: this tar would not be image_id.
        if local_image_id(image) != image_id:
            raise ImageError(f"{image} changed on this machine while it was being shipped; run the job again")
        partial.chmod(0o600)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    prune_saved(folder, keep, path)
    return SavedImage(image, image_id, path, path.stat().st_size)


def prune_saved(folder: Path, keep: int, current: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove all but the `keep` most recently used tars (never `current`), and stale unfinished saves."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    tars = sorted(folder.glob("*.tar"), key=_mtime, reverse=True)
    old = [p for p in tars if p != current][max(0, keep - (current is not None)) :]
    stale = [p for p in folder.glob(".*.partial") if now - _mtime(p) > _STALE_PARTIAL_SECONDS]
    for path in (*old, *stale):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another run's pruning
        return 0.0


def forget_saved(saved: SavedImage) -> None:
    """Drop a tar the hosts could not load as the image, so the next run saves it afresh."""
    saved.path.unlink(missing_ok=True)
