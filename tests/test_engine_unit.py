"""The API engine's pure parts: the create body (what `docker run` would ask for) and the
HTTP reader, against bytes on a real socket pair. The daemon itself: tests/test_engine_dockerd.py."""

from __future__ import annotations

import socket
import threading
from typing import Any

from distproc.agent.container import LABEL_ALGO, LABEL_JOB
from distproc.agent.engine import CliEngine, _Response, create_body, docker_error_text, for_access
from distproc.agent.task import DockerAccess, parse_task
from tests.task_docs import task_doc


def body(**over: Any) -> dict[str, Any]:
    return create_body(parse_task(task_doc(**over)), "/w/jobs/j1/algo-2/ml")


def test_the_create_body_asks_for_what_run_argv_asks_for() -> None:
    """Name-independent parts of `docker run`: labels, host network, hostname, add-host, mount, env."""
    doc = body(environment=[["A", "1"], ["NL", "two\nlines"], ["Q", "it's $(x)"]])
    assert doc["Image"] == "img:1"
    assert doc["Hostname"] == "algo-2"
    assert doc["Labels"] == {LABEL_JOB: "j1", LABEL_ALGO: "algo-2"}
    assert doc["Env"] == ["A=1", "NL=two\nlines", "Q=it's $(x)"]
    assert doc["Tty"] is False and doc["OpenStdin"] is False
    host = doc["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert host["ExtraHosts"] == ["algo-1:10.0.0.1", "algo-2:10.0.0.2"]
    assert host["Binds"] == ["/w/jobs/j1/algo-2/ml:/opt/ml"]
    assert "Memory" not in host and "DeviceRequests" not in host and "Runtime" not in host


def test_entrypoint_and_arguments_in_the_create_body() -> None:
    """The whole entrypoint list is Entrypoint (which makes the daemon drop the image's CMD);
    arguments are Cmd; neither leaves both null so the image's are kept."""
    neither = body()
    assert neither["Entrypoint"] is None and neither["Cmd"] is None
    only_entry = body(entrypoint=["python3", "-c", "x"])
    assert only_entry["Entrypoint"] == ["python3", "-c", "x"] and only_entry["Cmd"] is None
    only_args = body(arguments=["--a", "1"])
    assert only_args["Entrypoint"] is None and only_args["Cmd"] == ["--a", "1"]
    both = body(entrypoint=["e0", "e1"], arguments=["a1"])
    assert both["Entrypoint"] == ["e0", "e1"] and both["Cmd"] == ["a1"]


def test_memory_and_gpus_in_the_create_body() -> None:
    host = body(memory_limit_bytes=64 << 20)["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 64 << 20
    requests = body(gpus=2)["HostConfig"]["DeviceRequests"]
    assert requests == [{"Driver": "", "Count": 2, "Capabilities": [["gpu"]]}]
    assert body(gpus="all")["HostConfig"]["DeviceRequests"][0]["Count"] == -1
    runtime = body(gpus=2, gpu_mode="runtime")
    assert runtime["HostConfig"]["Runtime"] == "nvidia" and "DeviceRequests" not in runtime["HostConfig"]
    assert runtime["Env"][-1] == "NVIDIA_VISIBLE_DEVICES=0,1"


def test_anything_but_plain_docker_on_a_certain_socket_keeps_the_cli(tmp_path: Any) -> None:
    """sudo, wrappers, tcp://, a socket nobody answers on: the CLI, exactly as before."""
    for access in (
        DockerAccess(("sudo", "-n", "docker"), None),
        DockerAccess(("env", "docker"), None),
        DockerAccess(("podman",), None),
        DockerAccess(("docker",), "tcp://10.0.0.1:2375"),
        DockerAccess(("docker",), f"unix://{tmp_path}/nobody.sock"),
    ):
        assert isinstance(for_access(access), CliEngine), access


def test_docker_error_text_drops_the_help_advice() -> None:
    err = "docker: Error response from daemon: boom.\n\nRun 'docker run --help' for more information\n"
    assert docker_error_text(err) == "docker: Error response from daemon: boom."


def _answer(raw: bytes) -> _Response:
    """A _Response read from a real socket whose other end sends `raw` and closes."""
    ours, theirs = socket.socketpair()

    def send() -> None:
        with theirs:
            theirs.sendall(raw)

    threading.Thread(target=send, daemon=True).start()
    return _Response(ours)


def test_the_reader_takes_length_chunked_and_until_close_bodies() -> None:
    plain = _answer(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"StatusCode": 3}')
    assert plain.status == 200 and plain.read_all() == b'{"StatusCode": 3}'
    plain.close()
    sized = _answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello and more")
    assert sized.status == 404 and sized.read_all() == b"hello"
    sized.close()
    chunked = _answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5;x=y\r\ndefgh\r\n0\r\n\r\n")
    assert chunked.read(2) == b"ab" and chunked.read(100) == b"cdefgh" and chunked.read(5) == b""
    chunked.close()
