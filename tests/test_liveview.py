"""The live view of `distproc run`: one row per host on a terminal, output
scrolling above it. Rendering is checked on plain data; the real thing runs
in tmux against the 3-host cluster and is read off the screen."""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from distproc.ui.liveview import LiveView, human_bytes, render_rows
from tests.cluster import Cluster
from tests.cluster.jobs import Env, job_doc, wait_until


def test_rows_show_phase_bytes_elapsed_and_exit_within_the_width() -> None:
    """Each row: algo-K, host, phase (or final status), bytes staged, elapsed, exit code; never wider than asked."""
    view = LiveView(io.StringIO())
    view.add_host("algo-1", "gpu-node-01")
    view.add_host("algo-2", "gpu-node-02")
    view.step("algo-1", "connect_started")
    view.staging("algo-1", 3 * 1024 * 1024)
    view.step("algo-2", "connect_started")
    view.step("algo-2", "container_started")
    view.finished("algo-1", "Failed", 3)
    lines = render_rows(list(view.rows.values()), time.time(), 200)
    assert lines[0].split() == ["ALGO", "HOST", "PHASE", "STAGED", "ELAPSED", "EXIT"]
    assert lines[1].split() == ["algo-1", "gpu-node-01", "Failed", "3.0", "MiB", "0:00:00", "3"]
    assert lines[2].split() == ["algo-2", "gpu-node-02", "running", "-", "0:00:00", "-"]
    assert all(len(line) <= 30 for line in render_rows(list(view.rows.values()), time.time(), 30))
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB"


def test_elapsed_counts_from_when_the_host_began_connecting() -> None:
    """A host added after its claim (connect_started told with its time) shows the time since then."""
    view = LiveView(io.StringIO())
    view.add_host("algo-1", "h1")
    view.step("algo-1", "connect_started", at=1000.0)
    lines = render_rows(list(view.rows.values()), 1000.0 + 75, 200)
    assert lines[1].split()[-2] == "0:01:15"


def test_text_written_through_the_view_lands_above_the_redrawn_block() -> None:
    """Writing erases the block (cursor up, erase down), writes the text, and draws the block again."""
    screen = io.StringIO()
    view = LiveView(screen)
    view.add_host("algo-1", "h1")
    screen.seek(0)
    screen.truncate()
    view.write("[algo-1] hello\n")
    out = screen.getvalue()
    # Two lines of block (header and one host) were on screen: go up 2, erase, text, block again.
    assert out.startswith("\x1b[2F\x1b[J[algo-1] hello\nALGO")
    assert out.count("algo-1  h1") == 1


# Prints a line, then waits for the test to release it.
WAIT = (
    "import os, json, time; me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
    "print('hello from', me, flush=True)\n"
    "while not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"
)


def _run_command(env: Env, job: Path) -> str:
    run = [sys.executable, "-m", "distproc", "run", "-i", str(env.inventory), str(job)]
    return shlex.join(["env", f"DISTPROC_HOME={env.home}", *run])


def _screen(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def _headers(screen: str) -> int:
    return sum(1 for line in screen.splitlines() if line.split()[:3] == ["ALGO", "HOST", "PHASE"])


def _wait_screen(session: str, condition: Callable[[str], bool], what: str, timeout: float) -> None:
    def check() -> bool:
        screen = _screen(session)
        if condition(screen):
            return True
        if "RUN-EXIT=" in screen:
            raise AssertionError(f"distproc run ended before {what}")
        return False

    try:
        wait_until(check, what, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the screen shows:\n{_screen(session)}") from None


@pytest.mark.cluster
def test_live_view_in_a_real_terminal(env: Env, cluster: Cluster, tmp_path: Path) -> None:
    """In tmux: a row per host moves to `running`, output scrolls above, the final rows say Completed, 0."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux is not installed (see .ci/run)"
    entry, code_input = env.script("live", WAIT)
    job = env.write_job(job_doc("live", entrypoint=entry, inputs=[code_input]))
    command = _run_command(env, job)
    session = f"distproc-live-{tmp_path.name}"[:60]
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", f"{command}; echo RUN-EXIT=$?"],
        check=True,
    )
    try:
        subprocess.run([tmux, "set-option", "-t", session, "remain-on-exit", "on"], check=True)

        def rows_say(word: str, screen: str) -> bool:
            return all(
                any(line.startswith(f"algo-{k} ") and word in line for line in screen.splitlines()) for k in (1, 2, 3)
            )

        _wait_screen(session, lambda s: rows_say("running", s), "every host's row to say running", 120)
        _wait_screen(session, lambda s: s.count("hello from") == 3, "the three containers' output", 60)
        during = _screen(session)
        assert _headers(during) == 1, during  # one block, redrawn in place
        for k in (1, 2, 3):
            assert f"[algo-{k}] hello from algo-{k}" in during
            # Output lines sit above the block.
            assert during.index(f"[algo-{k}] hello") < during.index("ALGO ")

        for k, host in enumerate(cluster.hosts, start=1):
            code_dir = host.work_dir / "jobs" / "live" / f"algo-{k}" / "ml" / "processing" / "input" / "code"
            (code_dir / "release").write_text("")
        _wait_screen(session, lambda s: "RUN-EXIT=" in s, "distproc run to end", 120)
        after = _screen(session)
        assert "RUN-EXIT=0" in after, after
        assert _headers(after) == 1, after
        for k in (1, 2, 3):
            row = next(line for line in after.splitlines() if line.startswith(f"algo-{k} "))
            assert row.split()[2] == "Completed" and row.split()[-1] == "0", row
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)


@pytest.mark.cluster
def test_closing_the_terminal_stops_the_job(env: Env, cluster: Cluster, tmp_path: Path) -> None:
    """SIGHUP (the terminal closed) stops the job like Ctrl-C: status Stopped, no container left running."""
    entry, code_input = env.script("hangup", WAIT)
    job = env.write_job(job_doc("hangup", entrypoint=entry, inputs=[code_input]))
    command = _run_command(env, job)
    session = f"distproc-hup-{tmp_path.name}"[:60]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", command], check=True)
    try:
        _wait_screen(session, lambda s: s.count("hello from") == 3, "the three containers' output", 120)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)

    def ended() -> bool:
        return env.describe("hangup")["ProcessingJobStatus"] in ("Stopped", "Failed", "Completed")

    wait_until(ended, "the job to end after the hang-up", timeout=120)
    doc = env.describe("hangup")
    assert doc["ProcessingJobStatus"] == "Stopped", doc
    assert "SIGHUP" in (doc["Distproc"]["StopReason"] or "")
