"""`hosts check`'s pure parts: the clock offset from one round trip, the judgement, the table."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from distproc.agent.answers import CheckAnswer
from distproc.errors import AgentError
from distproc.hosts.check import (
    ClockReading,
    HostReport,
    Limits,
    assess,
    check_host,
    clock_reading,
    report_document,
    report_table,
)
from distproc.hosts.transport import LocalTransport
from distproc.inventory import Host

HOST = Host(name="h1", address="10.0.0.2")
FIT_DOC = {
    "docker": {"ok": True, "version": "27.3.1"},
    "disk": {"free_bytes": 100 << 30, "path": "/w"},
    "python": [3, 11, 2],
}
FIT = CheckAnswer.from_doc(FIT_DOC)


def test_a_host_sharing_this_clock_reads_zero_within_its_uncertainty() -> None:
    """Sent at 100.0, answered at 100.4, the host busy 0.3 s before reading its clock (at 100.35, our clock).

    The middle of the whole round trip (100.2) would show +0.15 s; taking the
    host's work out leaves 100.3..100.4: 0.00 ± 0.05 s.
    """
    reading = clock_reading(sent=100.0, back=100.4, host_time=100.35, host_busy=0.3)
    assert reading.offset == pytest.approx(0.0)
    assert reading.uncertainty == pytest.approx(0.05)
    assert reading.shown == 0.0


@pytest.mark.parametrize("read_at", [100.0, 100.1, 100.25, 100.4])
def test_a_shared_clock_is_always_within_the_uncertainty(read_at: float) -> None:
    """Wherever in the round trip the host read the clock, no busy time known: |offset| <= half the round trip."""
    reading = clock_reading(sent=100.0, back=100.4, host_time=read_at)
    assert abs(reading.offset) <= reading.uncertainty + 1e-9
    assert reading.uncertainty == pytest.approx(0.2)
    assert reading.shown == 0.0


def test_an_offset_clock_is_shown_and_judged_beyond_its_uncertainty() -> None:
    """A host 5 s ahead is 5 s ahead; one 2.1 s ahead ± 0.2 s is not surely past a 2 s limit."""
    ahead = clock_reading(sent=100.0, back=100.4, host_time=105.2)
    assert ahead.shown == pytest.approx(5.0)
    assert any("clock is +5.0 s (± 0.2 s)" in p for p in assess(HOST, FIT, ahead, Limits()))
    assert assess(HOST, FIT, ClockReading(2.1, 0.2), Limits()) == ()
    assert assess(HOST, FIT, ClockReading(-2.3, 0.2), Limits()) != ()


def test_busy_time_longer_than_the_round_trip_is_bounded() -> None:
    """A busy time the round trip cannot hold (clock steps, rounding) narrows the span to nothing, not below it."""
    reading = clock_reading(sent=100.0, back=100.4, host_time=100.4, host_busy=9.0)
    assert reading.uncertainty == 0.0 and reading.offset == pytest.approx(0.0)


def _report(name: str, docker: str, offset: float, uncertainty: float, problems: tuple[str, ...] = ()) -> HostReport:
    measured = CheckAnswer.from_doc({**FIT_DOC, "docker": {"ok": True, "version": docker}})
    return HostReport(Host(name=name, address=name), measured, offset, problems, uncertainty)


def test_every_column_is_as_wide_as_its_widest_cell() -> None:
    """A Debian Docker version (20.10.24+dfsg1) widens DOCKER; the later columns stay under their headers."""
    reports = [
        _report("h1", "27.3.1", 0.01, 0.05),
        _report("a-much-longer-host-name", "20.10.24+dfsg1", 3.5, 0.02, ("clock is off",)),
    ]
    lines = report_table(reports).splitlines()
    header = lines[0]
    for column in ("PYTHON", "DOCKER", "STATUS"):  # left-aligned: cells start where the header does
        start = header.index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines[1:]), (column, lines)
    for column in ("GPUS", "FREE", "CLOCK"):  # right-aligned: cells end where the header does
        end = header.index(column) + len(column)
        assert all(line[end - 1] != " " and line[end : end + 2] == "  " for line in lines[1:]), (column, lines)
    assert "20.10.24+dfsg1" in lines[2]
    assert lines[1].split()[5] == "+0.00±0.05s"  # within its uncertainty: 0
    assert lines[2].split()[5] == "+3.50±0.02s"
    assert lines[2].endswith("UNFIT: clock is off")


def test_a_real_agents_check_reads_as_its_typed_answer(tmp_path: Path) -> None:
    """`check_host` on an `ansible_connection: local` host: the agent installed and asked for real,
    its answer read as CheckAnswer. The daemon's socket does not exist, so Docker is judged unreachable."""
    host = Host(
        name="self",
        address="localhost",
        connection="local",
        python=sys.executable,
        work_dir=str(tmp_path / "work"),
        docker_host=f"unix://{tmp_path}/no-daemon.sock",
    )
    report = asyncio.run(asyncio.wait_for(check_host(host, Limits(min_free_bytes=1)), timeout=90))
    assert isinstance(report.measured, CheckAnswer)
    assert report.measured.python == tuple(sys.version_info[:3])
    assert report.measured.gpu is None and report.measured.disk.free_bytes
    assert report.clock_offset_seconds is not None and report.clock_uncertainty_seconds is not None
    assert [p for p in report.problems if p.startswith("Docker is not reachable: ")] == list(report.problems)
    doc = report_document(report)
    assert doc["Python"] == ".".join(map(str, sys.version_info[:3])) and doc["Gpus"] is None and not doc["Fit"]


def _answering(tmp_path: Path, answer: object, status: int = 0) -> list[str]:
    """An agent stand-in's argv (a real command run by the real transport): prints one JSON answer."""
    script = tmp_path / "agent.py"
    script.write_text(f"import sys\nprint({json.dumps(json.dumps(answer))})\nsys.exit({status})\n")
    return [sys.executable, str(script), "check"]


def test_a_malformed_check_answer_is_an_agent_error_naming_the_field(tmp_path: Path) -> None:
    bad = {**FIT_DOC, "disk": {"path": "/w", "free_bytes": "lots"}}
    with pytest.raises(
        AgentError, match=r"^h1: the agent's answer does not fit the protocol: check\.disk\.free_bytes: "
    ):
        asyncio.run(LocalTransport("h1").run_json(_answering(tmp_path, bad), CheckAnswer.from_doc))


def test_an_error_answer_is_the_agents_message(tmp_path: Path) -> None:
    """{"error": ...} is the agent's own message, however the answer is typed; none: its stderr."""
    with pytest.raises(AgentError, match=r"^h1: no work folder$"):
        asyncio.run(
            LocalTransport("h1").run_json(_answering(tmp_path, {"error": "no work folder"}, 1), CheckAnswer.from_doc)
        )
    with pytest.raises(AgentError, match=r"^h1: no work folder$"):
        asyncio.run(
            LocalTransport("h1").run_json(_answering(tmp_path, {"error": "no work folder"}), CheckAnswer.from_doc)
        )


def test_a_gpu_host_is_judged_on_its_typed_gpu_report() -> None:
    """GPUs are mocked here only in the sense that none exist on this machine: the agent's report is written by hand."""
    host = Host(name="g1", address="10.0.0.9", gpus=2, gpu_mode="runtime")
    measured = CheckAnswer.from_doc(
        {
            **FIT_DOC,
            "docker": {"ok": True, "version": "27.3.1", "runtimes": ["runc"]},
            "gpu": {"available": True, "reason": None, "driver": "550.54", "count": 1, "gpus": [{}]},
        }
    )
    problems = assess(host, measured, None, Limits())
    assert problems == (
        "the inventory gives it 2 GPU(s), but found 1",
        "distproc_gpu_mode is runtime, but Docker has no nvidia runtime",
    )
    doc = report_document(HostReport(host, measured, None, problems))
    assert (doc["Gpus"], doc["GpuDriver"], doc["GpuNote"], doc["DockerRuntimes"]) == (1, "550.54", None, ["runc"])
