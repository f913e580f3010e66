"""Job status, FailureReason and ExitMessage from per-host outcomes (pure policy)."""

from __future__ import annotations

from distproc.run.outcome import (
    HostCause,
    HostOutcome,
    HostPhase,
    JobStatus,
    aggregate,
    cut,
    exit_message,
    name_ranges,
    say_once,
)


def host(algo: str, status: str = "Completed", code: int | None = 0, ended: float = 1.0, **kw: object) -> HostOutcome:
    return HostOutcome(algo=algo, host=f"h{algo[-1]}", status=HostPhase(status), exit_code=code, ended_at=ended, **kw)  # type: ignore[arg-type]


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


# -- FailureReason: identical causes said once, cut at a word boundary --------

UNTRUSTED = (
    "cannot connect to {name}: host key of {address}:22 is not trusted (Host key is not trusted). "
    "Check the host's fingerprint, then add its key to /srv/cluster/known_hosts, e.g. "
    "`ssh-keyscan -p 22 {address} >> /srv/cluster/known_hosts`; "
    "or name a known_hosts file with distproc_known_hosts in the inventory"
)


def untrusted(name: str, address: str) -> HostCause:
    return HostCause(name, UNTRUSTED.format(name=name, address=address), address)


def test_identical_causes_on_consecutive_hosts_are_said_once() -> None:
    """Three hosts with the same unknown-host-key error: one instruction, "h1..3", placeholders for what differs."""
    said = say_once([untrusted(f"h{k}", f"10.0.0.{k + 1}") for k in (1, 2, 3)])
    assert said.startswith("h1..3: cannot connect to <host>: host key of <address>:22 is not trusted")
    assert said.count("ssh-keyscan") == 1
    assert "`ssh-keyscan -p 22 <address> >> /srv/cluster/known_hosts`" in said
    assert "10.0.0." not in said


def test_identical_causes_on_scattered_hosts_name_each_host() -> None:
    """Not consecutive: "h1, h3"; a different cause keeps its own words, in first-seen order."""
    said = say_once(
        [
            untrusted("h1", "10.0.0.2"),
            HostCause("h2", "busy with job nightly (lease renewed 3.0 s ago)", "10.0.0.3"),
            untrusted("h3", "10.0.0.4"),
        ]
    )
    assert said.startswith("h1, h3: cannot connect to <host>: ")
    assert said.endswith("; h2: busy with job nightly (lease renewed 3.0 s ago)")


def test_a_single_cause_keeps_its_address() -> None:
    """One host: its reason word for word, nothing templated."""
    assert say_once([untrusted("h1", "10.0.0.2")]) == "h1: " + UNTRUSTED.format(name="h1", address="10.0.0.2")


def test_only_whole_names_are_templated() -> None:
    """h1's address 10.0.0.2 is not replaced inside 10.0.0.23, nor its name inside h12."""
    pairs = (("h1", "10.0.0.2"), ("h2", "10.0.0.3"))
    causes = [HostCause(name, f"cannot reach h12 via 10.0.0.23 from {a}", a) for name, a in pairs]
    assert say_once(causes) == "h1, h2: cannot reach h12 via 10.0.0.23 from <address>"


def test_name_ranges() -> None:
    assert name_ranges(["algo-1", "algo-2", "algo-3", "algo-5"]) == "algo-1..3, algo-5"
    assert name_ranges(["h1", "h3"]) == "h1, h3"
    assert name_ranges(["node-a", "node-b", "node-c"]) == "node-a, node-b, node-c"
    assert name_ranges(["h9", "h10", "h11"]) == "h9..11"


def test_a_long_reason_is_cut_at_a_word_boundary_with_dots() -> None:
    """Over 1024 characters: cut between words, "..." added, never a shortened address left behind."""
    addresses = [f"10.20.{k}.{100 + k}" for k in range(60)]
    text = "unreachable: " + " ".join(addresses)
    for limit in range(40, 200):
        shown = cut(text, limit)
        assert len(shown) <= limit and shown.endswith("...")
        assert all(word in addresses for word in shown[:-3].split()[1:]), shown
    assert cut("short", 1024) == "short"
    assert cut("x" * 2000, 1024) == "x" * 1021 + "..."  # one word longer than the limit: cut inside
    assert cut("code 1: " + "m" * 2000, 1024) == "code 1: " + "m" * 1013 + "..."  # a dump, not a name: kept


def test_many_hosts_failing_alike_fit_in_the_reason() -> None:
    """Ten hosts with the same untrusted key: the reason says it once and ends whole, within 1024."""
    causes = [untrusted(f"h{k}", f"10.0.0.{k + 1}") for k in range(1, 11)]
    busy = [HostCause(f"n{k}", f"busy with job j{k} (lease renewed {k}.0 s ago)") for k in range(40)]
    out = aggregate([host("algo-1", "Failed", None, error=say_once([*causes, *busy]), error_class="ClientError")])
    reason = out.failure_reason or ""
    assert len(reason) <= 1024 and reason.endswith("...")
    assert reason.startswith("ClientError: algo-1 (h1): h1..10: cannot connect to <host>:")
    assert reason.count("ssh-keyscan") == 1
