"""The image of examples/sklearn-preprocessing for the test cluster: built once, cached, imported into every host.

No registry is reachable from the test cluster, so the image is built the way
a user builds it, by the example's own ``build_image.sh`` (debootstrap of
Debian's python3, python3-sklearn and python3-pandas from the machine's apt
mirror, then stripped), asked for the rootfs tarball only (``--tar``). The
tarball is cached in the cluster's cache dir (``DISTPROC_TEST_CACHE_DIR``,
default /var/cache/distproc-tests) as ``example-sklearn-<key>.tar``, the key
being a hash of the package list, suite, mirror, architecture and the
script's content, so CI pays for the build once. It is then ``docker
import``ed into every host's daemon with a content label; a daemon whose image
already carries the label (data roots are kept between sessions) is skipped.

By hand (no cluster needed; prints the time and size)::

    sudo .venv/bin/python -m tests.example_image build
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import CONTENT_LABEL, SUITE, Cluster, ClusterConfig, ClusterError, ClusterHost, debian_mirror
from tests.cluster.hygiene import _unmount_all
from tests.cluster.images import _cache_lock, _dpkg_arch, _sha
from tests.cluster.process import _tail

SKLEARN_IMAGE = "distproc-example:sklearn"
PACKAGES = ("python3", "python3-sklearn", "python3-pandas")
BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "sklearn-preprocessing" / "build_image.sh"
# What build_image.sh gives the image when it imports it itself.
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
# Bump when the way the tarball is made here changes, to invalidate the cache.
RECIPE = 1
BUILD_TIMEOUT_S = 2400
IMPORT_TIMEOUT_S = 900


@dataclass(frozen=True)
class ExampleImage:
    name: str
    tarball: Path
    key: str
    #: Seconds the tarball took to build in this process (None: it came from the cache).
    build_seconds: float | None
    #: Hosts it was imported into in this process (the others had it already).
    imported: tuple[str, ...] = ()

    @property
    def size_bytes(self) -> int:
        return self.tarball.stat().st_size


def _log(msg: str) -> None:
    print(f"[example-image] {msg}", file=sys.stderr, flush=True)


def sklearn_tarball(cfg: ClusterConfig) -> tuple[Path, str, float | None]:
    """The rootfs tarball of the sklearn image (built by build_image.sh unless cached), its key, build time."""
    mirror = debian_mirror(cfg)
    key = _sha(
        {
            "packages": PACKAGES,
            "suite": SUITE,
            "mirror": mirror,
            "arch": _dpkg_arch(),
            "script": hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest(),
            "recipe": RECIPE,
        }
    )
    target = cfg.cache_dir / f"example-sklearn-{key[:16]}.tar"
    with _cache_lock(cfg.cache_dir):  # another session building it: wait, then use its tarball
        if target.exists():
            return target, key, None
        for old in [*cfg.cache_dir.glob("example-sklearn-*.tar*"), *cfg.cache_dir.glob("sklearn-image.*")]:
            # An older tarball, or what a killed build left (the script's EXIT trap cleans up otherwise).
            if old.is_dir():
                _unmount_all([old])
                shutil.rmtree(old, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    old.unlink()
        log = cfg.cache_dir / "example-sklearn-build.log"
        _log(f"building {SKLEARN_IMAGE} ({', '.join(PACKAGES)} from {mirror}) with {BUILD_SCRIPT.name}: once")
        env = {
            **os.environ,
            "DEBIAN_MIRROR": mirror,
            "SUITE": SUITE,
            "PACKAGES": ",".join(PACKAGES),
            "TMPDIR": str(cfg.cache_dir),  # the build dir, on the tarball's filesystem
        }
        started = time.monotonic()
        with open(log, "wb") as out:
            try:
                proc = subprocess.run(
                    ["bash", str(BUILD_SCRIPT), "--tar", str(target)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=BUILD_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ClusterError(f"{BUILD_SCRIPT.name} timed out; log {log}:\n{_tail(log)}") from None
        if proc.returncode != 0 or not target.exists():
            raise ClusterError(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}); log {log}:\n{_tail(log)}")
        seconds = time.monotonic() - started
        _log(f"built {target.name}: {target.stat().st_size / 1e6:.0f} MB in {seconds:.0f}s")
        return target, key, seconds


def _label(cluster: Cluster, host: ClusterHost) -> str | None:
    fmt = f'{{{{ index .Config.Labels "{CONTENT_LABEL}" }}}}'
    cp = cluster.docker(host, "image", "inspect", "--format", fmt, SKLEARN_IMAGE, check=False)
    return cp.stdout.strip() if cp.returncode == 0 else None


def ensure_sklearn_image(cluster: Cluster, cfg: ClusterConfig | None = None) -> ExampleImage:
    """Build (or take from the cache) the sklearn image and import it into every host that lacks it."""
    cfg = cfg or ClusterConfig.from_env()
    tarball, key, seconds = sklearn_tarball(cfg)

    def provision(host: ClusterHost) -> bool:
        if _label(cluster, host) == key:
            return False
        changes: list[str] = []
        for change in (*IMAGE_CHANGES, f"LABEL {CONTENT_LABEL}={key}"):
            changes += ["--change", change]
        cluster.docker(host, "import", *changes, str(tarball), SKLEARN_IMAGE, timeout=IMPORT_TIMEOUT_S)
        if _label(cluster, host) != key:
            raise ClusterError(f"importing {SKLEARN_IMAGE} into {host.name} did not take")
        cluster.docker(host, "image", "prune", "-f")  # the image the tag named before, if any
        return True

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(cluster.hosts)) as pool:
        done = list(pool.map(provision, cluster.hosts))
    imported = tuple(h.name for h, d in zip(cluster.hosts, done, strict=True) if d)
    if imported:
        _log(f"imported {SKLEARN_IMAGE} into {', '.join(imported)} in {time.monotonic() - started:.0f}s")
    return ExampleImage(SKLEARN_IMAGE, tarball, key, seconds, imported)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.example_image", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build"], help="build the cached tarball (no cluster needed)")
    parser.parse_args(argv)
    try:
        tarball, key, seconds = sklearn_tarball(ClusterConfig.from_env())
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    took = "cached" if seconds is None else f"built in {seconds:.0f}s"
    print(f"{tarball}: {tarball.stat().st_size / 1e6:.0f} MB, {took} (key {key[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
