"""The agent's follow stream and the claiming agent's conversation, on this machine's files and pipes.

The run is played by a thread writing the job folder's files as the runner
does (events.jsonl and container.log appended, result.json renamed into
place); the follower is the agent's own code, reading a real folder.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from distproc.agent import follow as follow_mod
from distproc.agent.dirwatch import DirWatch
from distproc.agent.lines import StdinLines
from distproc.agent.task import JobDir


def _jobdir(tmp_path: Path, pid: int) -> JobDir:
    root = tmp_path / "jobs" / "j" / "algo-1"
    root.mkdir(parents=True)
    jobdir = JobDir(str(root))
    Path(jobdir.pid).write_text(f"{pid}\n")
    return jobdir


def _play_run(jobdir: JobDir, steps: int) -> threading.Thread:
    """Append events and output, then write the result, as the runner would."""

    def run() -> None:
        for k in range(steps):
            with open(jobdir.events, "a") as fh:
                fh.write(json.dumps({"kind": f"step-{k}", "time": k}) + "\n")
            with open(jobdir.log, "ab") as fh:
                fh.write(f"line {k}\n".encode())
        tmp = jobdir.result + ".tmp"
        Path(tmp).write_text(json.dumps({"status": "Completed", "exit_code": 0}))
        os.replace(tmp, jobdir.result)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _streamed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _check_stream(docs: list[dict[str, Any]], steps: int) -> None:
    events = [d["event"]["kind"] for d in docs if d["stream"] == "event"]
    assert events == [f"step-{k}" for k in range(steps)]
    output = "".join(d["data"] for d in docs if d["stream"] == "log")
    assert output == "".join(f"line {k}\n" for k in range(steps))
    assert docs[-1] == {"stream": "result", "result": {"status": "Completed", "exit_code": 0}}
    offsets = [d["offset"] for d in docs if d["stream"] == "log"]
    assert offsets == sorted(offsets) and offsets[-1] == len(output)


@pytest.mark.parametrize("watched", [True, False], ids=["inotify", "polling"])
def test_follow_streams_every_event_and_output_then_the_result(tmp_path: Path, watched: bool) -> None:
    """With inotify the follower wakes on each change; without it, it polls: the stream is the same."""
    jobdir = _jobdir(tmp_path, os.getpid())
    out = io.StringIO()
    writer = _play_run(jobdir, steps=50)
    pings = follow_mod._Pings(jobdir, None)
    watch = DirWatch.open(jobdir.root) if watched else None
    if watched:
        assert watch is not None, "inotify is there on Linux"
    try:
        code = follow_mod._follow(jobdir, 0, 0, out, pings, watch)
    finally:
        if watch is not None:
            watch.close()
    writer.join()
    assert code == 0
    _check_stream(_streamed(out), steps=50)


def test_follow_from_offsets_sends_only_what_is_new(tmp_path: Path) -> None:
    jobdir = _jobdir(tmp_path, os.getpid())
    _play_run(jobdir, steps=3).join()
    first = io.StringIO()
    assert follow_mod.follow(jobdir, out=first) == 0
    docs = _streamed(first)
    events_at = max(d["offset"] for d in docs if d["stream"] == "event")
    log_at = max(d["offset"] for d in docs if d["stream"] == "log")
    again = io.StringIO()
    assert follow_mod.follow(jobdir, events_at, log_at, out=again) == 0
    assert [d["stream"] for d in _streamed(again)] == ["result"]


def test_follow_reports_a_run_whose_agent_died_without_a_result(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jobdir = _jobdir(tmp_path, dead.pid)
    out = io.StringIO()
    assert follow_mod.follow(jobdir, out=out) == 3
    assert _streamed(out)[-1] == {"stream": "lost", "pid": dead.pid}


def test_a_run_launched_here_and_killed_outright_is_reported_lost_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runner.launch forks the run once: it is this process's child, in a session of its own.
    Killed without a result, it stays a zombie until reaped; the follower in the same process
    (the claim conversation) must see it dead, not wait for it forever."""
    from distproc.agent import runner

    release_r, release_w = os.pipe()

    def run_killed_outright(jobdir: JobDir) -> None:  # in the forked child
        os.close(release_w)  # the test's end: closed there, this reads the end of the pipe
        os.read(release_r, 1)
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(runner, "run", run_killed_outright)
    root = tmp_path / "jobs" / "j" / "algo-1"
    root.mkdir(parents=True)
    jobdir = JobDir(str(root))
    pid = runner.launch(jobdir)
    assert Path(jobdir.pid).read_text().strip() == str(pid)
    assert os.getsid(pid) == pid, "the run leads a session of its own"
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
    os.close(release_w)
    os.close(release_r)
    out = io.StringIO()
    codes: list[int] = []
    follower = threading.Thread(target=lambda: codes.append(follow_mod.follow(jobdir, out=out)), daemon=True)
    follower.start()
    follower.join(60)
    assert not follower.is_alive(), "the follower took the dead run's zombie for a live run"
    assert codes == [3] and _streamed(out)[-1] == {"stream": "lost", "pid": pid}
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already


def test_pings_are_noted_and_a_request_during_follow_is_kept_for_the_conversation(tmp_path: Path) -> None:
    jobdir = _jobdir(tmp_path, os.getpid())
    read_end, write_end = os.pipe()
    lines = StdinLines(read_end)
    pings = follow_mod._Pings(jobdir, lines)
    os.utime(jobdir.watched, (0, 0))
    os.write(write_end, b"\n")
    pings.wait(5.0)
    assert os.stat(jobdir.watched).st_mtime > 0, "a ping touches `watched`"
    os.write(write_end, b'{"verb": "cleanup"}\n')
    pings.wait(5.0)
    assert pings.lines is None, "no more pings are read once a request came"
    assert lines.readline(0) == b'{"verb": "cleanup"}\n'
    os.close(write_end)
    assert lines.readline(5.0) == b""
    os.close(read_end)


def _claim(work: Path, stdin: bytes) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, "-m", "distproc.agent", "claim", str(work), "--job", "j1", "--holder", "h1"],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.decode().splitlines()]


def test_the_conversation_refuses_a_step_before_prepare_and_keeps_the_lease_for_release(tmp_path: Path) -> None:
    code, answers = _claim(tmp_path, b'{"verb": "launch"}\n')
    assert code == 2
    assert answers[0]["leased"] is True
    assert answers[-1] == {"error": "launch before prepare"}
    assert (tmp_path / "lease.json").exists()


def test_the_conversation_ended_before_any_request_gives_the_host_back(tmp_path: Path) -> None:
    code, answers = _claim(tmp_path, b"\n\n")  # pings only, then end of input
    assert code == 0
    assert answers == [answers[0], {"released": True}] and answers[0]["leased"] is True
    assert not (tmp_path / "lease.json").exists()


def test_the_conversation_answers_a_request_that_is_not_json_with_an_error(tmp_path: Path) -> None:
    code, answers = _claim(tmp_path, b"launch now please\n")
    assert code == 2
    assert answers[-1]["error"].startswith("bad request")


def test_a_quiet_follower_says_it_is_alive_until_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing to send, the follower still sends {"stream": "alive"} every ALIVE_SECONDS: the
    coordinator counts its reconnect window from the last line it heard (hostsession.last_heard)."""
    monkeypatch.setattr(follow_mod, "ALIVE_SECONDS", 0.05)
    jobdir = _jobdir(tmp_path, os.getpid())
    out = io.StringIO()
    codes: list[int] = []
    follower = threading.Thread(target=lambda: codes.append(follow_mod.follow(jobdir, out=out)))
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while out.getvalue().count('"alive"') < 3:
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.01)
    finally:
        Path(jobdir.result).write_text(json.dumps({"status": "Completed"}))
        follower.join(30)
    streams = [d["stream"] for d in _streamed(out)]
    assert codes == [0]
    assert streams[-1] == "result" and set(streams[:-1]) == {"alive"} and len(streams) >= 4, streams


def _orphaned_result(jobdir: JobDir, orphaned: bool) -> None:
    result = {"status": "Stopped", "stopped": True, "orphaned": orphaned}
    Path(jobdir.result).write_text(json.dumps(result))


def test_a_follow_of_a_run_stopped_for_want_of_pings_that_got_none_either_is_unwatched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its caller then ends its SSH session (cli._end_unwatched). A follower that did hear from its
    coordinator lately (a late `attach` just started), or a run that ended otherwise, is not."""
    jobdir = _jobdir(tmp_path, os.getpid())
    _orphaned_result(jobdir, orphaned=True)
    assert follow_mod.follow(jobdir, out=io.StringIO()) == 0, "heard from just now: a live attach"
    monkeypatch.setattr(follow_mod, "PINGS_MISSED_SECONDS", 0.0)
    read_end, write_end = os.pipe()
    try:
        assert follow_mod.follow(jobdir, out=io.StringIO(), lines=StdinLines(read_end)) == follow_mod.UNWATCHED
        _orphaned_result(jobdir, orphaned=False)
        assert follow_mod.follow(jobdir, out=io.StringIO(), lines=StdinLines(read_end)) == 0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_input_resets_how_long_the_conversation_has_been_silent(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    lines = StdinLines(read_end)
    lines.last_input -= 100  # as if made 100 s ago
    assert lines.silent_for() >= 100
    os.write(write_end, b"\n")
    assert lines.readline(5.0) == b"\n"
    assert lines.silent_for() < 100
    os.close(write_end)
    os.close(read_end)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # The agent's parent is the session's sshd (bash exec'd the command): ended.
        ({10: ("sshd", 5, "sshd: root@notty")}, 10),
        # Through the login shell (dash forks), and OpenSSH 9.8's sshd-session: ended.
        ({10: ("sh", 9, "sh -c ..."), 9: ("sshd-session", 5, "sshd-session: dp@notty")}, 9),
        # `ansible_connection: local`: the parent is the coordinator, even inside an SSH login.
        ({10: ("python3", 9, "python3 -m distproc run"), 9: ("sshd", 5, "sshd: me@notty")}, None),
        # An interactive login, a privileged monitor, the listener: never.
        ({10: ("bash", 9, "-bash"), 9: ("sshd", 5, "sshd: me@pts/0")}, None),
        ({10: ("sshd", 5, "sshd: me [priv]")}, None),
        ({10: ("sshd", 1, "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups")}, None),
        # Two shells deep, or reparented to init: not looked further.
        ({10: ("sh", 9, "sh"), 9: ("bash", 8, "bash"), 8: ("sshd", 5, "sshd: me@notty")}, None),
        ({1: ("systemd", 0, "/sbin/init")}, None),
    ],
)
def test_only_the_no_tty_ssh_session_that_started_the_agent_is_ended(
    table: dict[int, tuple[str, int, str]], expected: int | None
) -> None:
    """The rule over a process table (parent 10, or 1 when reparented); session.py reads /proc for it,
    and the network-cut test on the cluster ends a real sshd's session with it."""
    from distproc.agent.session import session_pid_from

    start = 1 if 1 in table else 10
    found = session_pid_from(
        start, lambda pid: table[pid][:2] if pid in table else None, lambda pid: table[pid][2] if pid in table else ""
    )
    assert found == expected
