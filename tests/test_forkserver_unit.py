"""The opt-in fork-server (distproc/forkserver): real `distproc` processes, a real server.

No cluster: the commands served are `validate`, `list` and `logs --follow`,
which need only the job store. Each test has its own runtime folder (short,
under /tmp: a Unix socket's path is limited to 108 bytes) and job store; the
servers it starts are stopped at its end. A server is started either by the
first client (as a user meets it) or by the test itself, with its stdout on a
pipe where it says "ready PID" once it serves, so no test waits by sleeping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distproc.forkserver import client
from distproc.store.db import Store
from tests.forkserver_runtime import DISTPROC, Runtime, private_runtime

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "examples" / "hello" / "job.json"


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with private_runtime() as rt:
        yield rt


def _run(env: dict[str, str], *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DISTPROC, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def _wait_for(condition: object, what: str) -> None:
    """The server a client started in the background serves once it has imported the run
    path; its own log says so. A bounded wait on that condition."""
    deadline = time.monotonic() + 60
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_first_command_starts_the_server_and_the_second_is_served(runtime: Runtime) -> None:
    first = _run(runtime.env(AWS_SECRET_ACCESS_KEY="first-clients-secret"), "list")
    assert (first.returncode, first.stdout) == (0, "no jobs\n"), first.stderr
    assert runtime.served() == []  # the first ran in-process ...
    _wait_for(lambda: any("serving pid=" in line for line in runtime.log()), "the server to serve")
    [server] = [line.split("serving pid=")[1].split()[0] for line in runtime.log() if "serving pid=" in line]
    # The server keeps nothing of its first client's environment but what selects its sources.
    assert b"first-clients-secret" not in Path(f"/proc/{server}/environ").read_bytes()
    second = _run(runtime.env(), "list")
    assert (second.returncode, second.stdout, second.stderr) == (0, "no jobs\n", "")
    assert runtime.served() == ['["list"]']  # ... the second in the server's child
    # Owned by us and closed to everyone else.
    folder, sock = os.stat(runtime.folder), os.stat(runtime.socket())
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600


def test_with_the_server_off_nothing_is_started(runtime: Runtime) -> None:
    """Off by default: the command neither uses nor starts a server."""
    result = _run(runtime.env(served=False), "list")
    assert result.returncode == 0
    assert not runtime.folder.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", str(JOB)],
        ["validate", str(ROOT / "tests" / "no-such-job.json")],
        ["validate", "--no-such-flag"],
        ["list"],
        ["list", "--json"],
        ["--version"],
    ],
    ids=["validate-good", "validate-bad", "usage-error", "list", "list-json", "version"],
)
def test_output_and_exit_code_are_those_of_the_command_in_process(runtime: Runtime, argv: list[str]) -> None:
    runtime.start_server()
    here = _run(runtime.env(served=False), *argv)
    served = _run(runtime.env(), *argv)
    assert runtime.served() == [json.dumps(argv)]
    assert (served.returncode, served.stdout, served.stderr) == (here.returncode, here.stdout, here.stderr)
    assert here.stdout or here.stderr  # something was compared


def test_a_served_command_imports_nothing_of_the_command_line_in_its_own_process(runtime: Runtime) -> None:
    """The command's process only hands itself to the server: the CLI module, argparse and
    dataclasses are the server's imports (paid once), not each command's."""
    runtime.start_server()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", DISTPROC, "list"],
        env=runtime.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (0, "no jobs\n"), done.stderr
    assert runtime.served() == ['["list"]']
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "distproc.forkserver.client" in imported  # the client ran here ...
    assert sorted(imported & {"distproc.cli", "argparse", "dataclasses"}) == []  # ... and nothing heavier


def test_environment_cwd_and_umask_come_from_the_client(runtime: Runtime) -> None:
    """The server was started with another job store and runs in /; the command sees the client's."""
    server = runtime.start_server(runtime.env(DISTPROC_HOME=str(runtime.base / "server-home")))
    home = runtime.base / "client-home"
    store = Store(home)
    store.create_job("theirs", "arn:theirs", json.loads(JOB.read_text()), None)
    store.close()
    listed = _run(runtime.env(DISTPROC_HOME=str(home)), "list")
    assert listed.returncode == 0, listed.stderr
    assert "theirs" in listed.stdout
    # A relative path resolves against the client's working folder.
    valid = _run(runtime.env(), "validate", "job.json", cwd=JOB.parent)
    assert valid.returncode == 0, valid.stderr
    assert runtime.served() == ['["list"]', '["validate", "job.json"]']
    # Folders the command creates get the client's umask: the job store makes its home 0700
    # but the folders above it (mkdir parents=True) with the process's umask.
    server_umask = next(
        line.split()[1] for line in Path(f"/proc/{server}/status").read_text().splitlines() if line.startswith("Umask:")
    )
    assert int(server_umask, 8) != 0o077
    subprocess.run(
        ["sh", "-c", f'umask 077 && exec "{DISTPROC}" list'],
        env=runtime.env(DISTPROC_HOME=str(runtime.base / "fresh" / "home")),
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert len(runtime.served()) == 3
    assert stat.S_IMODE(os.stat(runtime.base / "fresh").st_mode) == 0o700


def test_a_server_of_other_sources_is_not_used(runtime: Runtime, tmp_path: Path) -> None:
    """A copy of distproc with one file changed is another version: its server gets another
    socket, and a client of this install neither talks to it nor is answered by it."""
    copy = tmp_path / "other"
    shutil.copytree(ROOT / "distproc", copy / "distproc", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "distproc" / "plan.py", "a") as fh:
        fh.write("\n# another version\n")
    other_pid = runtime.start_server(python_path=str(copy))
    sockets = list(runtime.folder.glob("*.sock"))
    assert len(sockets) == 1 and sockets[0] != runtime.socket()
    result = _run(runtime.env(), "list")
    assert result.returncode == 0
    other_log = sockets[0].with_suffix(".log").read_text()
    assert f"serving pid={other_pid}" in other_log and "argv=" not in other_log
    # Asked directly (as a client of the old version would), the server refuses another fingerprint.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(sockets[0]))
        payload = json.dumps(
            {"fingerprint": client.fingerprint(), "argv": ["distproc", "list"], "cwd": "/", "env": {}, "umask": 0o22}
        ).encode()
        socket.send_fds(sock, [struct.pack("!Q", len(payload))], [0, 1, 2])
        sock.sendall(payload)
        assert sock.recv(256).decode() == "R another version of distproc\n"


def test_the_server_exits_after_its_idle_time(runtime: Runtime) -> None:
    runtime.start_server(runtime.env(DISTPROC_FORKSERVER_IDLE_SECONDS="1"))
    result = _run(runtime.env(), "list")
    assert result.returncode == 0 and runtime.served() == ['["list"]']
    assert runtime.servers[0].wait(timeout=60) == 0
    assert not runtime.socket().exists()
    assert runtime.log()[-1].endswith("idle: exiting")


def _follow(runtime: Runtime, served: bool) -> tuple[int, str]:
    """`distproc logs --follow` of a running job: it prints the log so far, then waits for more
    until Ctrl-C, which ends it with status 0. SIGINT goes to the client process only."""
    proc = subprocess.Popen(
        [DISTPROC, "logs", "follow", "--follow"], env=runtime.env(served=served), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    with proc.stdout:
        first = proc.stdout.readline()  # the command is in its follow loop
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
    return proc.wait(timeout=60), first + rest


def _following_job(runtime: Runtime) -> None:
    store = Store(runtime.base / "home")
    store.create_job("follow", "arn:follow", json.loads(JOB.read_text()), None)
    store.add_host("follow", "algo-1", "h1", {}, "/tmp/job")
    store.log_path("follow", "algo-1").write_text("a line\n")
    store.close()


def test_ctrl_c_reaches_the_command_through_the_client(runtime: Runtime) -> None:
    _following_job(runtime)
    runtime.start_server()
    here = _follow(runtime, served=False)
    served = _follow(runtime, served=True)
    assert here == (0, "[algo-1] a line\n")
    assert served == here
    [child] = [line for line in runtime.log() if " argv=" in line]
    pid = child.split("child pid=")[1].split()[0]
    # The forked command ended by itself (the KeyboardInterrupt it handles), not killed.
    assert any(line.endswith(f"child pid={pid} status=0") for line in runtime.log())


def _state(pid: int) -> str:
    """The kernel's one-letter state of a process: T when stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_ctrl_z_stops_the_command_with_its_client_and_fg_continues_both(runtime: Runtime, tmp_path: Path) -> None:
    """In-process, Ctrl-Z stops the command. Through the server the command is another
    process, outside the terminal's process group: the client stops it, then itself, and
    continues it when continued.

    The client runs in a process group of its own, as a shell's job does: in a group with
    no parent outside it in its session (orphaned, as pytest's own may be under CI), the
    kernel discards the stop signals, and Ctrl-Z could not stop anything."""
    _following_job(runtime)
    runtime.start_server()
    proc = subprocess.Popen(
        [DISTPROC, "logs", "follow", "--follow"],
        env=runtime.env(),
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    assert proc.stdout is not None
    try:
        with proc.stdout:
            assert proc.stdout.readline() == "[algo-1] a line\n"  # served, and following
            [child] = [int(line.split("child pid=")[1].split()[0]) for line in runtime.log() if " argv=" in line]
            proc.send_signal(signal.SIGTSTP)
            _wait_for(lambda: _state(proc.pid) == "T" and _state(child) == "T", "the client and its command to stop")
            proc.send_signal(signal.SIGCONT)
            _wait_for(lambda: _state(proc.pid) != "T" and _state(child) != "T", "both to continue")
            store = Store(runtime.base / "home")
            with store.log_path("follow", "algo-1").open("a") as log:
                log.write("after fg\n")
            store.close()
            assert proc.stdout.readline() == "[algo-1] after fg\n"  # the command runs again
            proc.send_signal(signal.SIGINT)
            assert proc.stdout.read() == ""
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=60)


def test_a_stopped_server_lets_its_running_commands_finish(runtime: Runtime) -> None:
    """SIGTERM to the server: no new command is served (its socket is gone), the running one
    goes on and its client still gets its exit status; then the server exits."""
    _following_job(runtime)
    runtime.start_server()
    proc = subprocess.Popen(
        [DISTPROC, "logs", "follow", "--follow"], env=runtime.env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == "[algo-1] a line\n"  # served, and following
        server = runtime.servers[0]
        server.terminate()
        _wait_for(lambda: not runtime.socket().exists(), "the server to close its socket")
        assert server.poll() is None  # still waiting for its command
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.read() == ""
    assert proc.wait(timeout=60) == 0
    assert server.wait(timeout=60) == 0
    assert runtime.log()[-1].endswith("stopped")


def test_a_client_killed_outright_takes_its_command_with_it(runtime: Runtime) -> None:
    """In-process, SIGKILL ends the command; through the server, the server sees its client hang
    up and kills the command it runs."""
    _following_job(runtime)
    runtime.start_server()
    proc = subprocess.Popen([DISTPROC, "logs", "follow", "--follow"], env=runtime.env(), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == b"[algo-1] a line\n"
        proc.kill()
        assert proc.wait(timeout=60) == -signal.SIGKILL
    [child] = [line.split("child pid=")[1].split()[0] for line in runtime.log() if " argv=" in line]
    _wait_for(lambda: runtime.log()[-1].endswith(f"child pid={child} status={signal.SIGKILL}"), "the command's end")
    assert any(line.endswith(f"client of pid={child} hung up: killed it") for line in runtime.log())
