"""The one install script (distproc/hosts/install.py) that puts the agent and its libraries on a host.

Run here as the hosts run it: `python3 -I -c SCRIPT TARGET` with the real
bundle on stdin, on the system python3 (what a host has), no cluster needed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from distproc.hosts.agentbundle import INSTALL_SCRIPT, agent_bundle
from distproc.hosts.depsbundle import INSTALL_DEPS_SCRIPT, deps_bundle

PYTHON = "/usr/bin/python3"
KINDS = [
    pytest.param(INSTALL_SCRIPT, lambda: agent_bundle().data, "distproc_agent/cli.py", id="agent"),
    pytest.param(INSTALL_DEPS_SCRIPT, lambda: deps_bundle().data, "botocore/__init__.py", id="deps"),
]


def install(script: str, data: bytes, target: Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    def restrictive() -> None:
        os.umask(umask)

    done = subprocess.run(
        [PYTHON, "-I", "-c", script, str(target)], input=data, capture_output=True, preexec_fn=restrictive, check=False
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def modes(root: Path) -> Iterator[tuple[str, int]]:
    for path in [root, *root.rglob("*")]:
        yield str(path.relative_to(root)), stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize(("script", "bundle", "member"), KINDS)
def test_a_bundle_lands_whole_with_the_same_modes_whatever_the_umask(
    script: str, bundle: Callable[[], bytes], member: str, tmp_path: Path
) -> None:
    """Folders 0755, files 0644 even under umask 077: the libraries' script had left them 0700/0600.

    (The two scripts had drifted: the agent's set every mode, the libraries'
    only its top folder's, so under a strict umask the libraries were readable
    by their owner alone, unlike the agent beside them.)
    """
    target = tmp_path / "w" / "agent" / "b-1"
    done = install(script, bundle(), target, umask=0o077)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"installed": True}
    assert (target / member).is_file()
    wrong = {name: oct(mode) for name, mode in modes(target) if mode != (0o755 if (target / name).is_dir() else 0o644)}
    assert wrong == {}
    assert [p.name for p in target.parent.iterdir()] == ["b-1"]  # no temporary folder left beside it


def test_the_agent_is_compiled_at_install_and_the_libraries_when_first_imported(tmp_path: Path) -> None:
    """The agent's modules are imported at every call, so their bytecode is written once, up front."""
    assert install(INSTALL_SCRIPT, agent_bundle().data, tmp_path / "a").returncode == 0
    assert list((tmp_path / "a" / "distproc_agent" / "__pycache__").glob("cli.*.pyc"))
    assert install(INSTALL_DEPS_SCRIPT, deps_bundle().data, tmp_path / "d").returncode == 0
    assert not list((tmp_path / "d").rglob("__pycache__"))


@pytest.mark.parametrize(("script", "bundle", "member"), KINDS)
def test_a_bundle_already_there_is_left_as_it_is(
    script: str, bundle: Callable[[], bytes], member: str, tmp_path: Path
) -> None:
    """Named by its content, a bundle present is the same one: nothing is unpacked again."""
    target = tmp_path / "b"
    assert install(script, bundle(), target).returncode == 0
    (target / member).write_text("# kept\n")
    again = install(script, bundle(), target)
    assert again.returncode == 0 and json.loads(again.stdout) == {"installed": False}
    assert (target / member).read_text() == "# kept\n"


def _zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.py", b"")
        archive.writestr(name, b"x")
    return buffer.getvalue()


def _tar(name: str, kind: bytes = tarfile.REGTYPE) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(tarfile.TarInfo("ok.py"), io.BytesIO(b""))
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        else:
            info.size = 1
        archive.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    return gzip.compress(buffer.getvalue())


@pytest.mark.parametrize(
    ("script", "data", "name"),
    [
        pytest.param(INSTALL_SCRIPT, _zip("../evil"), "../evil", id="agent-parent"),
        pytest.param(INSTALL_SCRIPT, _zip("/tmp/evil"), "/tmp/evil", id="agent-absolute"),
        pytest.param(INSTALL_DEPS_SCRIPT, _tar("a/../../evil"), "a/../../evil", id="deps-parent"),
        pytest.param(INSTALL_DEPS_SCRIPT, _tar("link", tarfile.SYMTYPE), "link", id="deps-symlink"),
    ],
)
def test_a_member_that_would_leave_the_folder_is_refused_and_nothing_stays(
    script: str, data: bytes, name: str, tmp_path: Path
) -> None:
    target = tmp_path / "w" / "b"
    done = install(script, data, target)
    assert done.returncode != 0
    assert f"refusing bundle member {name!r}" in done.stderr
    assert list(target.parent.iterdir()) == [] and not (tmp_path / "evil").exists()
