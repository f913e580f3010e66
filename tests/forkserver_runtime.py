"""A private runtime folder for the fork-server's tests (distproc/forkserver), and the
servers started in it: tests/test_forkserver_unit.py and tests/test_forkserver_e2e.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distproc.forkserver import client

DISTPROC = str(Path(sys.executable).parent / "distproc")


@dataclass
class Runtime:
    """A private runtime folder and job store, and the servers started in them."""

    base: Path
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.base / "run" / "distproc"

    def env(self, served: bool = True, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISTPROC_FORKSERVER")}
        env.update(XDG_RUNTIME_DIR=str(self.base / "run"), DISTPROC_HOME=str(self.base / "home"))
        if served:
            env["DISTPROC_FORKSERVER"] = "1"
        env.update(extra)
        return env

    def socket(self) -> Path:
        return client.socket_path(self.folder, client.fingerprint())

    def keeper_log(self) -> list[str]:
        """The connection keeper's log (hosts/transport/keeper.py): one line per connection and channel."""
        path = self.folder / f"keeper-{client.fingerprint()}.log"
        return path.read_text().splitlines() if path.exists() else []

    def log(self) -> list[str]:
        path = self.socket().with_suffix(".log")
        return path.read_text().splitlines() if path.exists() else []

    def served(self) -> list[str]:
        """The argv of each command the server forked, in order."""
        return [line.split(" argv=", 1)[1] for line in self.log() if " argv=" in line]

    def start_server(self, env: dict[str, str] | None = None, python_path: str | None = None) -> int:
        """A server of this install (or of the sources on python_path), started here; its pid once it serves."""
        env = dict(env or self.env())
        if python_path:
            env["PYTHONPATH"] = python_path
        fingerprint = subprocess.run(
            [sys.executable, "-c", "from distproc.forkserver.client import fingerprint; print(fingerprint())"],
            env=env,
            cwd="/",  # not the checkout: `-c` and `-m` put the working folder first on sys.path
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        client.private_dir(self.folder)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distproc.forkserver.server",
                str(client.socket_path(self.folder, fingerprint)),
                fingerprint,
            ],
            env=env,
            cwd="/",
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.servers.append(proc)
        assert proc.stdout is not None
        ready = proc.stdout.readline().decode()
        assert ready.startswith("ready "), ready
        return int(ready.split()[1])


def run_hello_served(runtime: Runtime, home: Path, inventory: Path, job: Path) -> subprocess.CompletedProcess[str]:
    """`distproc run` of `job` as a user with the fork-server on (this runtime folder, job store at home)."""
    return subprocess.run(
        [DISTPROC, "run", "--inventory", str(inventory), str(job)],
        env=runtime.env(DISTPROC_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=240,
    )


#: A job's entrypoint that says where it ran.
HELLO = ["python3", "-c", "print('hello from', __import__('socket').gethostname())"]


@contextlib.contextmanager
def private_runtime() -> Iterator[Runtime]:
    """Short, under /tmp: a Unix socket's path is limited to 108 bytes."""
    rt = Runtime(Path(tempfile.mkdtemp(prefix="dpfs", dir="/tmp")))
    try:
        yield rt
    finally:
        for proc in rt.servers:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
        # Servers and connection keepers a command started are not our children, and may still be
        # importing (not yet logging): each is found by its socket's path, under this test's own
        # folder, in its argv.
        for pid in _servers_under(rt.base):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(rt.base, ignore_errors=True)


def _servers_under(base: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        ours = b"distproc.forkserver.server" in argv or b"distproc.hosts.transport.keeper" in argv
        if ours and any(a.startswith(os.fsencode(base) + b"/") for a in argv):
            found.append(int(proc.name))
    return found
