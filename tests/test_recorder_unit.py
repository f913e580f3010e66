"""The coordinator's recorder and host phases (run/recorder.py, run/hoststate.py), without a cluster.

A real job store (SQLite in a temporary folder) and structlog's capture_logs;
the observer is a plain recording implementation of ProgressObserver.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from distproc.backends.fleet import FleetBackend
from distproc.inventory import Host
from distproc.plan import HostAssignment
from distproc.run.hoststate import TRANSITIONS, HostState
from distproc.run.outcome import FailureClass, HostOutcome, HostPhase, JobOutcome, JobStatus
from distproc.run.recorder import (
    AgentEvent,
    HostAdded,
    HostFailed,
    HostResult,
    JobCreated,
    JobFinished,
    Recorder,
    StagingProgress,
)
from distproc.store.db import Store

RUN = Path(__file__).resolve().parents[1] / "distproc" / "run"


class Heard:
    """A ProgressObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def add_host(self, algo: str, host: str) -> None:
        self.calls.append(("add_host", algo, host))

    def step(self, algo: str, kind: str, **data: object) -> None:
        self.calls.append(("step", algo, kind, data))

    def staging(self, algo: str, staged_bytes: int) -> None:
        self.calls.append(("staging", algo, staged_bytes))

    def finished(self, algo: str, status: str, exit_code: int | None) -> None:
        self.calls.append(("finished", algo, status, exit_code))


def recorder(tmp_path: Path) -> tuple[Recorder, Store, Heard]:
    store = Store(tmp_path / "home")
    heard = Heard()
    rec = Recorder.for_job("job-1", store, heard, structlog.get_logger("distproc").bind(job="job-1"))
    rec(JobCreated("arn:job-1", {"ProcessingJobName": "job-1"}, None, (), 1))
    rec(HostAdded("algo-1", "h1", {"name": "h1"}, "/jobs/job-1", (("connect_started", 1.0), ("connected", 2.0))))
    return rec, store, heard


def test_a_hosts_connecting_steps_reach_the_observer_with_their_times(tmp_path: Path) -> None:
    """HostAdded carries the steps the backend's claim took (connecting): the live view needs them for ELAPSED."""
    _rec, _store, heard = recorder(tmp_path)
    assert heard.calls == [
        ("add_host", "algo-1", "h1"),
        ("step", "algo-1", "connect_started", {"at": 1.0}),
        ("step", "algo-1", "connected", {"at": 2.0}),
    ]


def test_one_event_reaches_the_store_the_observer_and_the_log(tmp_path: Path) -> None:
    rec, store, heard = recorder(tmp_path)
    failed = HostOutcome(
        "algo-1", "h1", HostPhase.FAILED, None, 5.0, error="no space left", error_class="InternalServerError"
    )
    with capture_logs() as logs:
        rec(HostFailed(failed))
    host = store.get_job("job-1").hosts[0]
    assert (host.status, host.error, host.end_time) == ("Failed", "no space left", 5.0)
    assert heard.calls[-1] == ("finished", "algo-1", "Failed", None)
    assert logs == [
        {"job": "job-1", "event": "host failed", "host": "algo-1", "error": "no space left", "log_level": "error"}
    ]
    assert [e["kind"] for e in store.events("job-1")] == ["connect_started", "connected"]


def test_a_result_and_the_job_end_are_recorded_as_before(tmp_path: Path) -> None:
    rec, store, heard = recorder(tmp_path)
    done = HostOutcome("algo-1", "h1", HostPhase.COMPLETED, 0, 9.0, message="ok")
    with capture_logs() as logs:
        rec(AgentEvent("algo-1", "container_started", {}, 3.0, seen_before=False))
        rec(HostResult(done, 3.0))
        rec(JobFinished(JobOutcome(JobStatus.COMPLETED, None, None, None), 10.0))
    job = store.get_job("job-1")
    host = job.hosts[0]
    assert (host.status, host.exit_code, host.start_time, host.end_time, host.message) == (
        "Completed",
        0,
        3.0,
        9.0,
        "ok",
    )
    assert (job.status, job.end_time) == ("Completed", 10.0)
    assert [entry["event"] for entry in logs] == ["container started", "host finished", "job finished"]
    assert ("step", "algo-1", "container_started", {}) in heard.calls


def test_an_event_seen_before_is_told_but_not_recorded_again(tmp_path: Path) -> None:
    """`attach` follows a host from its first event: the live view hears it, the store keeps one copy."""
    rec, store, heard = recorder(tmp_path)
    with capture_logs() as logs:
        rec(AgentEvent("algo-1", "container_started", {}, 3.0, seen_before=True))
    assert [e["kind"] for e in store.events("job-1")] == ["connect_started", "connected"]
    assert heard.calls[-1] == ("step", "algo-1", "container_started", {})
    assert [entry["event"] for entry in logs] == ["reattached to the running container"]


def test_staging_progress_tells_the_observer_each_time_and_logs_now_and_then(tmp_path: Path) -> None:
    rec, _, heard = recorder(tmp_path)
    with capture_logs() as logs:
        for n in range(5):
            rec(StagingProgress("algo-1", n, n * 100))
    assert [c for c in heard.calls if c[0] == "staging"] == [("staging", "algo-1", n * 100) for n in range(5)]
    assert [entry["event"] for entry in logs] == ["staging"]


def test_host_phases_move_only_as_the_transitions_allow() -> None:
    assert set(TRANSITIONS) == set(HostPhase)
    assert HostPhase.IN_PROGRESS not in TRANSITIONS[HostPhase.PENDING]  # never started unprepared
    assert HostPhase.FAILED in TRANSITIONS[HostPhase.COMPLETED]  # outputs that could not be fetched
    assert all(
        not TRANSITIONS[p] - {HostPhase.COMPLETED, HostPhase.FAILED, HostPhase.STOPPED} for p in HostPhase if p.terminal
    )
    assert HostPhase.of_result("Stopped") is HostPhase.STOPPED
    assert HostPhase.of_result("InProgress") is HostPhase.FAILED  # not an end: a broken answer
    assert HostPhase.of_result(None) is HostPhase.FAILED
    assert [p.value for p in HostPhase] == ["Pending", "Preparing", "InProgress", "Completed", "Failed", "Stopped"]


@pytest.mark.parametrize("path", sorted(p.name for p in RUN.glob("*.py")))
def test_no_part_of_run_imports_the_runner(path: str) -> None:
    """The runner imports its parts, never the other way round (attach, the entry of `distproc attach`, aside)."""
    if path in ("runner.py", "attach.py"):
        return
    tree = ast.parse((RUN / path).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert "runner" not in imported, path


def test_a_host_state_refuses_a_move_the_transitions_do_not_allow() -> None:
    """Started without being prepared is a bug in the coordinator, said as such; an end may be corrected."""
    host = Host(name="h1", address="10.0.0.1")
    session = FleetBackend([host]).reach(FleetBackend([host]).endpoint(host), "/jobs/j")
    state = HostState(HostAssignment("algo-1", host, "/jobs/j", ()), session.session)
    with pytest.raises(RuntimeError, match="algo-1: Pending cannot become InProgress"):
        state.move(HostPhase.IN_PROGRESS)
    state.move(HostPhase.PREPARING)
    state.move(HostPhase.IN_PROGRESS)
    assert state.launched
    done = state.end(HostOutcome("algo-1", "h1", HostPhase.COMPLETED, 0, 1.0))
    assert (state.phase, state.outcome) == (HostPhase.COMPLETED, done)
    state.fail(FailureClass.INTERNAL, "output out could not be fetched")
    assert state.phase is HostPhase.FAILED and state.launched
