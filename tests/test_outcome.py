"""Job status, FailureReason and ExitMessage from per-host outcomes (pure policy)."""

from __future__ import annotations

from distproc.outcome import HostOutcome, JobStatus, aggregate, exit_message


def host(algo: str, status: str = "Completed", code: int | None = 0, ended: float = 1.0, **kw: object) -> HostOutcome:
    return HostOutcome(algo=algo, host=f"h{algo[-1]}", status=status, exit_code=code, ended_at=ended, **kw)  # type: ignore[arg-type]


def test_all_zero_is_completed() -> None:
    """Completed only when every container exits 0."""
    out = aggregate([host("algo-1"), host("algo-2")])
    assert out.status is JobStatus.COMPLETED
    assert out.failure_reason is None


def test_first_failure_in_time_names_the_job_failure() -> None:
    """The host that failed first is named, with its exit code, as an AlgorithmError."""
    out = aggregate(
        [
            host("algo-1", "Failed", 2, ended=5.0),
            host("algo-2", "Failed", 7, ended=3.0),
            host("algo-3", "Stopped", 130, ended=6.0, stopped_by_distproc=True),
        ]
    )
    assert out.status is JobStatus.FAILED
    assert out.failure_reason is not None
    assert out.failure_reason.startswith("AlgorithmError: algo-2 (h2) exited with code 7")
    assert "1 more host(s) failed" in out.failure_reason


def test_hosts_stopped_after_a_failure_are_not_failures() -> None:
    """Stopped hosts (stopped because another failed) do not count as failed."""
    out = aggregate([host("algo-1", "Failed", 1), host("algo-2", "Stopped", 137, stopped_by_distproc=True)])
    assert out.status is JobStatus.FAILED
    assert "more host" not in (out.failure_reason or "")


def test_stop_request_gives_stopped() -> None:
    """A stop asked for, with no failure before it, ends Stopped with its reason."""
    out = aggregate([host("algo-1", "Stopped", 130), host("algo-2")], stop_reason="interrupted (Ctrl-C)")
    assert out.status is JobStatus.STOPPED
    assert out.stop_reason == "interrupted (Ctrl-C)"
    assert out.failure_reason is None


def test_non_utf8_message_fails_with_client_error() -> None:
    """A message that is not UTF-8 fails the job with ClientError, even if all exit 0."""
    out = aggregate([host("algo-1"), host("algo-2", message_valid=False)])
    assert out.status is JobStatus.FAILED
    assert out.failure_reason is not None
    assert out.failure_reason.startswith("ClientError: algo-2")


def test_platform_error_is_internal_server_error() -> None:
    """A host the platform lost fails the job as InternalServerError."""
    out = aggregate([host("algo-1", "Failed", None, error="lost contact", error_class="InternalServerError")])
    assert out.failure_reason == "InternalServerError: algo-1 (h1): lost contact"


def test_exit_message_concatenates_in_algo_order_and_cuts_to_1024() -> None:
    """Messages are joined in numeric algo order (algo-10 after algo-9) and cut to 1024 characters."""
    hosts = [host(f"algo-{k}", message=f"<{k}>" + "x" * 100) for k in (10, 2, 1, 9, 3, 4, 5, 6, 7, 8)]
    text = exit_message(hosts)
    assert text is not None
    assert len(text) == 1024
    assert text.startswith("<1>")
    assert text.index("<9>") < text.index("<10>")


def test_failure_reason_is_cut_to_1024() -> None:
    """FailureReason never exceeds 1024 characters."""
    out = aggregate([host("algo-1", "Failed", 1, message="m" * 5000)])
    assert out.failure_reason is not None
    assert len(out.failure_reason) == 1024
