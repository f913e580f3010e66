"""scripts/docker-ready.sh (run by scripts/demo.sh) decides rightly where Docker comes from.

The thing under test is the script's decision (install docker.io, start a
dockerd, start nothing, or refuse), not Docker: so the script runs with a PATH
that holds only stand-in ``docker``, ``dockerd`` and ``apt-get`` shell scripts
(plus ``setsid``, ``sleep``, ``tail``, ``tr`` and ``cut``, the real ones),
written here into tmp_path; each stand-in logs its argv to a file. The stand-in
``docker info`` answers once a "daemon is up" file exists: the stand-in
``dockerd`` creates it, or a test does for a daemon that is already running.
The stand-in ``apt-get install docker.io`` puts a stand-in ``docker`` and
``dockerd`` on PATH, as the package would. The real demo (real apt-get,
dockerd and a job) is checked by hand; see README.md's "Start".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "docker-ready.sh"
# The real tools the script may use besides the stand-ins.
REAL_TOOLS = ("setsid", "sleep", "tail", "tr", "cut")

DOCKER = """#!/bin/sh
echo "docker $* DOCKER_HOST=${{DOCKER_HOST:-}}" >> {calls}
if [ "$1" = info ]; then
  [ -e {up} ] && exit 0
  echo "Cannot connect to the Docker daemon at ${{DOCKER_HOST:-unix:///var/run/docker.sock}}." >&2
  exit 1
fi
"""
# The stand-ins use the machine's own tools (their PATH is not the script's).
# Like dockerd, it keeps running once it answers; the test ends it by its pid.
DOCKERD = """#!/bin/sh
PATH=/usr/bin:/bin
echo "dockerd $*" >> {calls}
echo $$ > {pidfile}
echo "dockerd starting"
touch {up}
exec sleep 300
"""
DOCKERD_FAILS = """#!/bin/sh
echo "dockerd $*" >> {calls}
echo "failed to start daemon: pid file found, ensure docker is not running"
exit 1
"""
APT_GET = """#!/bin/sh
PATH=/usr/bin:/bin
echo "apt-get $*" >> {calls}
case " $* " in
  *" install "*docker.io*)
    [ -e {bin}/docker ] || cp {stubs}/docker {bin}/docker
    cp {stubs}/dockerd {bin}/dockerd
    ;;
esac
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    calls: list[str]


class World:
    """A PATH of stand-ins, and a run of the script on it."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.stubs = root / "stubs"
        self.up = root / "daemon-up"
        self.calls = root / "calls.log"
        self.pidfile = root / "dockerd.pid"
        self.log = root / "dockerd.log"
        self.bin.mkdir()
        self.stubs.mkdir()
        self.calls.touch()
        for tool in REAL_TOOLS:
            real = shutil.which(tool)
            assert real, f"{tool} is needed to run the script"
            (self.bin / tool).symlink_to(real)
        fields = {
            "calls": self.calls,
            "up": self.up,
            "pidfile": self.pidfile,
            "bin": self.bin,
            "stubs": self.stubs,
        }
        for name, text in (("docker", DOCKER), ("dockerd", DOCKERD), ("apt-get", APT_GET)):
            self._write(self.stubs / name, text.format(**fields))
        self._fields = fields

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o755)

    def add(self, *names: str) -> None:
        for name in names:
            shutil.copy(self.stubs / name, self.bin / name)

    def add_failing_dockerd(self) -> None:
        self._write(self.bin / "dockerd", DOCKERD_FAILS.format(**self._fields))

    def daemon_running(self) -> None:
        self.up.touch()

    def run(self, docker_host: str | None = None) -> Result:
        env = {"PATH": str(self.bin), "DISTPROC_DEMO_DOCKERD_LOG": str(self.log)}
        if docker_host is not None:
            env["DOCKER_HOST"] = docker_host
        proc = subprocess.run(
            ["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, self.calls.read_text().splitlines())

    def stop_dockerd(self) -> None:
        if self.pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(self.pidfile.read_text()), signal.SIGTERM)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.stop_dockerd()


def installs(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("apt-get") and " install " in f" {c} "]


def dockerd_starts(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("dockerd")]


def test_cli_without_dockerd_installs_docker_io_then_starts_dockerd(world: World) -> None:
    """The newcomer's machine: a docker CLI, no daemon, no dockerd."""
    world.add("docker", "apt-get")
    r = world.run()
    assert r.code == 0, r.stderr
    assert len(installs(r.calls)) == 1 and "docker.io" in installs(r.calls)[0].split()
    assert dockerd_starts(r.calls) == ["dockerd --bridge=none --iptables=false"]
    assert f"log: {world.log}" in r.stdout
    assert "dockerd starting" in world.log.read_text()


def test_no_docker_at_all_installs_docker_io_then_starts_dockerd(world: World) -> None:
    world.add("apt-get")
    r = world.run()
    assert r.code == 0, r.stderr
    assert len(installs(r.calls)) == 1 and "docker.io" in installs(r.calls)[0].split()
    assert dockerd_starts(r.calls) == ["dockerd --bridge=none --iptables=false"]


def test_cli_and_dockerd_without_a_daemon_starts_dockerd_and_installs_nothing(world: World) -> None:
    world.add("docker", "dockerd", "apt-get")
    r = world.run()
    assert r.code == 0, r.stderr
    assert installs(r.calls) == []
    assert dockerd_starts(r.calls) == ["dockerd --bridge=none --iptables=false"]
    assert f"log: {world.log}" in r.stdout


def test_a_daemon_that_answers_is_used_as_it_is(world: World) -> None:
    """No dockerd here (Docker Desktop, rootless, a socket from elsewhere): nothing to install."""
    world.add("docker", "apt-get")
    world.daemon_running()
    r = world.run()
    assert r.code == 0, r.stderr
    assert installs(r.calls) == [] and dockerd_starts(r.calls) == []
    assert "docker info DOCKER_HOST=" in r.calls


def test_docker_host_that_answers_is_used_and_nothing_is_started(world: World) -> None:
    """No dockerd here: the daemon is elsewhere, so nothing is installed either."""
    world.add("docker", "apt-get")
    world.daemon_running()
    r = world.run(docker_host="tcp://10.0.0.5:2375")
    assert r.code == 0, r.stderr
    assert installs(r.calls) == [] and dockerd_starts(r.calls) == []
    assert "docker info DOCKER_HOST=tcp://10.0.0.5:2375" in r.calls


def test_docker_host_that_does_not_answer_fails_naming_it_and_starts_nothing(world: World) -> None:
    world.add("docker", "dockerd", "apt-get")
    r = world.run(docker_host="unix:///run/elsewhere/docker.sock")
    assert r.code != 0
    assert "DOCKER_HOST=unix:///run/elsewhere/docker.sock does not answer" in r.stderr
    assert "Cannot connect to the Docker daemon" in r.stderr
    assert installs(r.calls) == [] and dockerd_starts(r.calls) == []
    assert "Traceback" not in r.stderr


def test_a_dockerd_that_exits_fails_at_once_with_the_end_of_its_log(world: World) -> None:
    world.add("docker", "apt-get")
    world.add_failing_dockerd()
    r = world.run()
    assert r.code != 0
    assert f"dockerd exited before it answered; the end of {world.log}" in r.stderr
    assert "pid file found, ensure docker is not running" in r.stderr
