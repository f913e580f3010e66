"""One cluster per machine: the lock a session holds while it builds and uses the cluster."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tests.cluster.config import ClusterConfig
from tests.cluster.constants import ClusterError
from tests.cluster.process import _log, _wait_for


@contextlib.contextmanager
def cluster_lock(cfg: ClusterConfig, wait: float | None = None) -> Iterator[None]:
    """Hold the machine-wide lock of the cluster dir for as long as the cluster is in use.

    One test session per machine: if another holds the lock, wait for it up to
    ``wait`` seconds (default DISTPROC_TEST_LOCK_WAIT, else 600), then fail.
    """
    with path_lock(cfg.lock_file, wait, what="the test cluster"):
        yield


@contextlib.contextmanager
def path_lock(lock_file: Path, wait: float | None = None, *, what: str) -> Iterator[None]:
    """Hold the machine-wide lock ``lock_file`` (flock), waiting for another holder as cluster_lock does."""
    if wait is None:
        raw = os.environ.get("DISTPROC_TEST_LOCK_WAIT", "")
        wait = float(raw) if raw.strip() else 600.0
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)

    def acquired() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        if not acquired():
            _log(f"another session is using {what} ({lock_file}); waiting up to {wait:g}s")
            try:
                _wait_for(f"the lock of {what}", acquired, timeout=wait, interval=0.5)
            except ClusterError:
                raise ClusterError(
                    f"another process has been using {what} for over {wait:g}s "
                    f"({lock_file} is locked); one test session per machine"
                ) from None
        yield
    finally:
        os.close(fd)
