"""The warm agent (agent/warm.py) on this machine, without SSH: the agent as shipped,
unpacked into a work folder, its `warm` verb serving on its socket; and the
coordinator's side of a call's stream (hosts/transport/agentsocket.py).
The cluster tests (test_warm_agent_e2e.py) reach it through sshd."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from distproc.errors import AgentError, ConnectionError_
from distproc.hosts.agentbundle import agent_bundle
from distproc.hosts.session import warm_idle_seconds, warm_socket_path
from distproc.hosts.transport.agentsocket import AgentSocketChannel


@pytest.fixture
def work() -> Iterator[Path]:
    # Short: a Unix socket's path is at most 107 bytes, and pytest's tmp_path is long.
    root = Path(tempfile.mkdtemp(prefix="dpw-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _unpacked(work: Path) -> Path:
    bundle = agent_bundle()
    target = work / "agent" / f"distproc-agent-{bundle.digest}"
    zipfile.ZipFile(io.BytesIO(bundle.data)).extractall(target)
    return target


def _ask(path: str, request: dict[str, object], rest: bytes = b"") -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(path)
        conn.sendall(json.dumps(request).encode() + b"\n" + rest)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_warm_agent_serves_claims_on_a_private_socket_then_exits_when_idle(work: Path) -> None:
    """A claim on the socket gets the lease answer, then the release when input ends, then
    the trailer with the exit status; a request for another agent version or another verb is
    refused; socket 0600, folder 0700; with nothing to do for its idle time, it exits."""
    bundle = _unpacked(work)
    digest = agent_bundle().digest
    server = subprocess.Popen([sys.executable, str(bundle), "warm", str(work), "--idle", "3"])
    try:
        path = warm_socket_path(str(work), digest)
        assert path is not None
        folder = work / "agent" / "warm"
        pid_file = folder / f"{digest}.pid"
        for _ in range(1200):  # up to a minute: until it listens, or ends first
            if pid_file.exists() and Path(path).exists():
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(0.05)
            assert server.returncode is None, "the warm agent ended before it listened"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600

        out = _ask(path, {"agent": digest, "argv": ["claim", str(work), "--job", "j1", "--holder", "h1"]})
        body, _, trailer = out.partition(b"\0")
        assert [json.loads(x) for x in body.splitlines()] == [{"leased": True}, {"released": True}]
        assert json.loads(trailer) == {"exit": 0, "stderr": ""}

        other = _ask(path, {"agent": "0" * 16, "argv": ["claim", str(work), "--job", "j1", "--holder", "h1"]})
        assert "this is agent" in json.loads(other.partition(b"\0")[0])["error"]
        verb = _ask(path, {"agent": digest, "argv": ["run", str(work)]})
        assert "not a verb this agent serves warm" in json.loads(verb.partition(b"\0")[0])["error"]

        assert server.wait(timeout=60) == 0  # idle for 3 s: it ends by itself
        assert not Path(path).exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


class _Reader:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def read(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


class _Writer:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass


def _channel(chunks: list[bytes]) -> AgentSocketChannel:
    def lost(exc: BaseException) -> ConnectionError_:
        return ConnectionError_("h1", str(exc))

    return AgentSocketChannel(("claim",), _Reader(chunks), _Writer(), lost, (OSError,))


def test_a_calls_stream_splits_into_its_output_and_its_exit_status() -> None:
    """Lines before the NUL are the command's stdout, split across reads anyhow; the trailer is its end."""

    async def scenario() -> tuple[bytes, bytes, int | None, bytes]:
        channel = _channel([b'{"leased": tr', b'ue}\n{"released"', b': true}\n\0{"exit": 3, ', b'"stderr": "oops"}\n'])
        first = await channel.readline()
        result = await channel.wait()
        return first, result.stdout, result.exit_status, result.stderr

    assert asyncio.run(scenario()) == (b'{"leased": true}\n', b'{"released": true}\n', 3, b"oops")


def test_a_call_cut_off_before_its_trailer_has_no_exit_status() -> None:
    async def scenario() -> tuple[bytes, int | None, bool]:
        channel = _channel([b'{"leased": true}\n'])
        line = await channel.readline()
        result = await channel.wait()
        return line + await channel.readline(), result.exit_status, result.ok

    assert asyncio.run(scenario()) == (b'{"leased": true}\n', None, False)


def test_the_idle_time_comes_from_the_environment_and_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTPROC_AGENT_IDLE_SECONDS", raising=False)
    assert warm_idle_seconds() == 600
    monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", "0")
    assert warm_idle_seconds() == 0
    for bad in ("soon", "-1", "nan", "1e9"):
        monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", bad)
        with pytest.raises(AgentError, match="DISTPROC_AGENT_IDLE_SECONDS"):
            warm_idle_seconds()


def test_a_work_folder_too_deep_for_a_socket_has_no_warm_agent() -> None:
    assert warm_socket_path("/w", "0123456789abcdef") == "/w/agent/warm/0123456789abcdef.sock"
    assert warm_socket_path("/" + "d" * 90, "0123456789abcdef") is None


def test_a_warm_call_ends_only_sshds_process_of_one_connection() -> None:
    """The peer of the warm agent's socket is signalled only if it is sshd's per-connection
    process: never the listener, a privileged monitor, an interactive login or anything else."""
    from distproc.agent.session import peer_session_pid

    def ask(comm: str, title: str, pid: int = 4242) -> int | None:
        return peer_session_pid(pid, lambda p: (comm, 1), lambda p: title)

    assert ask("sshd", "sshd: dproot") == 4242
    assert ask("sshd-session", "sshd-session: alice@notty") == 4242
    assert ask("sshd", "sshd: /usr/sbin/sshd -f /etc/ssh/sshd_config [listener] 0 of 10-100 startups") is None
    assert ask("sshd", "sshd: alice [priv]") is None
    assert ask("sshd", "sshd: alice@pts/0") is None
    assert ask("python3", "sshd: alice") is None
    assert ask("sshd", "sshd: alice", pid=1) is None
    assert peer_session_pid(4242, lambda p: None, lambda p: "sshd: alice") is None
