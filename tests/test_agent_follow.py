"""The agent's follow stream and the claiming agent's conversation, on this machine's files and pipes.

The run is played by a thread writing the job folder's files as the runner
does (events.jsonl and container.log appended, result.json renamed into
place); the follower is the agent's own code, reading a real folder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
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
