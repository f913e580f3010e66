"""`run --ship-image`: the job's image, saved once on this machine, for hosts without a registry.

The coordinator's own `docker` CLI (and its DOCKER_HOST) is used; the hosts
load the tar through their agents (`load-image`), only when their daemon
lacks an image of the same ID.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError


@dataclass(frozen=True, slots=True)
class SavedImage:
    image: str
    image_id: str
    path: Path
    size: int

    def remove(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


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


def save_image(image: str) -> SavedImage:
    """`docker save` into a private temporary folder; the caller removes it."""
    image_id = local_image_id(image)
    folder = Path(tempfile.mkdtemp(prefix="distproc-image-"))  # 0700: the image may hold secrets
    path = folder / "image.tar"
    saved = _docker(["save", "--output", str(path), image], timeout=None)
    if saved.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise ImageError(f"docker save {image} failed: {saved.stderr.strip()[-300:]}")
    return SavedImage(image=image, image_id=image_id, path=path, size=path.stat().st_size)
