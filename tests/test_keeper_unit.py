"""The connection keeper (hosts/transport/keeper.py) without a cluster: a real keeper process in a
private runtime folder. What needs real hosts (channels relayed, no new SSH connection per job)
is tests/test_keeper_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import stat
import time
from collections.abc import Iterator

import pytest

from distproc.errors import ConnectionError_
from distproc.hosts.transport import kept as keeper
from distproc.hosts.transport.ssh import SSHTarget
from tests.forkserver_runtime import Runtime, private_runtime


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    with private_runtime() as rt:
        for name, value in rt.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(keeper, "_started", False)
        yield rt


def _lost(exc: BaseException) -> ConnectionError_:
    return ConnectionError_("h", str(exc))


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _serving(rt: Runtime) -> bool:
    return any(" serving pid=" in line for line in rt.keeper_log())


# Nothing listens on port 1 of the loopback: a connection there is refused at once.
CLOSED_TARGET = SSHTarget("h", "127.0.0.1", 1, "nobody", None, None, connect_timeout=5.0)
CLOSED = dataclasses.asdict(CLOSED_TARGET)


def test_the_first_command_goes_on_without_a_keeper_and_starts_one(runtime: Runtime) -> None:
    assert keeper.wanted()
    first = asyncio.run(keeper.open_socket(CLOSED, "/w/agent.sock", ["python3"], _lost))
    assert first is keeper.UNAVAILABLE
    _wait_for(lambda: _serving(runtime), "the keeper to serve")
    path = keeper.socket_path()
    assert path is not None and path.parent == runtime.folder
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(runtime.folder).st_mode) == 0o700
    # Once per command: another host finding no keeper yet starts no second one.
    assert keeper._started


def test_a_host_the_keeper_cannot_reach_is_left_to_the_command(runtime: Runtime) -> None:
    asyncio.run(keeper.open_socket(CLOSED, "/w/agent.sock", ["python3"], _lost))
    _wait_for(lambda: _serving(runtime), "the keeper to serve")
    answer = asyncio.run(keeper.open_socket(CLOSED, "/w/agent.sock", ["python3"], _lost))
    # The command then connects itself and reports the host in its own words.
    assert answer is keeper.UNAVAILABLE
    assert any(" lost h: " in line or " not kept h: " in line for line in runtime.keeper_log())


def test_a_request_of_another_shape_gets_no_answer(runtime: Runtime) -> None:
    asyncio.run(keeper.open_socket(CLOSED, "/w/agent.sock", ["python3"], _lost))
    _wait_for(lambda: _serving(runtime), "the keeper to serve")
    path = keeper.socket_path()
    assert path is not None
    for bad in (b"not json\n", json.dumps({"target": {"name": "h", "port": "22"}, "socket": "/s"}).encode() + b"\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(path))
            sock.sendall(bad)
            assert sock.recv(100) == b""  # closed, nothing said
    assert sum("bad request" in line for line in runtime.keeper_log()) == 2
