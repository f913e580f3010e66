"""Waiting for busy hosts (`run --wait-for-hosts`): the job store's queue and the wait around the backend.

No cluster: a real job store (SQLite in a temporary folder, opened by one
Store per coordinator, as two `distproc run` processes would) and a Backend
that stands in for the hosts' leases (one holder per host, given back by the
test). The real leases on real hosts: tests/test_hostwait_e2e.py.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from distproc.backends.base import Backend, Claimed, Reached, Shortage
from distproc.cli import _bare_wait_flag, _parser
from distproc.errors import JobNotFoundError, SpecError
from distproc.hosts.session import HostSession
from distproc.inventory import Host
from distproc.run import hostwait
from distproc.run.hostwait import HostWait
from distproc.run.options import RunOptions
from distproc.run.outcome import JobStatus
from distproc.run.runner import JobRunner
from distproc.spec import ProcessingJob, job_arn, parse_job
from distproc.store.db import WAITER_STALE_SECONDS, Store


def job(name: str, count: int = 1) -> ProcessingJob:
    return parse_job(
        {
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count}},
            "AppSpecification": {"ImageUri": "busybox"},
        }
    )


def created(store: Store, name: str) -> str:
    store.create_job(name, job_arn(name), {}, None)
    return name


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pauses between rounds, short: the tests wait on the store's states, never on these."""
    monkeypatch.setattr(hostwait, "FIRST_POLL_SECONDS", 0.02)
    monkeypatch.setattr(hostwait, "MAX_POLL_SECONDS", 0.05)
    monkeypatch.setattr(hostwait, "STORE_CHECK_SECONDS", 0.01)


# -- the queue in the job store -------------------------------------------------


def test_waiters_are_ordered_by_arrival_among_those_wanting_the_same_hosts(tmp_path: Path) -> None:
    """Each coordinator its own Store on one home: a waiter is behind every earlier one sharing a host."""
    one, two = Store(tmp_path / "home"), Store(tmp_path / "home")
    one.join_queue(created(one, "a"), ["h1", "h2"])
    two.join_queue(created(two, "b"), ["h2"])
    one.join_queue(created(one, "c"), ["h3"])
    two.join_queue(created(two, "d"), ["h1", "h3"])
    assert one.waiting_ahead("a") == []
    assert two.waiting_ahead("b") == ["a"]
    assert one.waiting_ahead("c") == []  # no host in common with anyone before it
    assert two.waiting_ahead("d") == ["a", "c"]
    one.leave_queue("a")
    assert two.waiting_ahead("b") == []
    assert one.waiting_ahead("d") == ["c"]
    # Coming back is arriving anew: a now waits behind d.
    one.join_queue("a", ["h1"])
    assert two.waiting_ahead("a") == ["d"]


def test_a_waiter_whose_coordinator_died_no_longer_holds_up_the_queue(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    store.join_queue(created(store, "crashed"), ["h1"])
    store.join_queue(created(store, "next"), ["h1"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    # The row as a coordinator killed with SIGKILL leaves it: its pid is gone.
    store._db.execute("UPDATE waiting SET pid = ? WHERE job = 'crashed'", (int(dead.stdout),))
    assert store.waiting_ahead("next") == []
    assert store.get_job("crashed").waiting_for is None


def test_a_waiter_on_another_machine_counts_until_it_falls_silent(tmp_path: Path) -> None:
    """A store shared with another machine: its waiter's process cannot be seen, only its last word."""
    store = Store(tmp_path / "home")
    store.join_queue(created(store, "there"), ["h1"])
    store.join_queue(created(store, "here"), ["h1"])
    store._db.execute("UPDATE waiting SET machine = 'elsewhere', pid = 1 WHERE job = 'there'")
    assert store.waiting_ahead("here") == ["there"]
    store._db.execute("UPDATE waiting SET seen = ? WHERE job = 'there'", (time.time() - WAITER_STALE_SECONDS - 1,))
    assert store.waiting_ahead("here") == []


def test_what_a_job_waits_for_is_in_its_record_until_it_leaves_the_queue(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    store.join_queue(created(store, "w"), ["h1"])
    store.set_waiting_for("w", "waiting for 1 host of ml.m5.xlarge: h1 busy with job x")
    assert Store(tmp_path / "home").get_job("w").waiting_for == "waiting for 1 host of ml.m5.xlarge: h1 busy with job x"
    store.leave_queue("w")
    assert store.get_job("w").waiting_for is None


# -- the wait -------------------------------------------------------------------


class Leases(Backend):
    """Hosts with one holder each, as the hosts' leases keep them; the test gives them back."""

    def __init__(self, holders: dict[str, str | None], reachable: bool = True) -> None:
        self.holders = holders
        self.reachable = reachable
        self.asked: list[str] = []
        self.granted: list[str] = []

    async def acquire(self, job: ProcessingJob) -> Sequence[Claimed] | Shortage:
        self.asked.append(job.name)
        free = [h for h, holder in self.holders.items() if holder is None]
        need = job.cluster.instance_count
        if len(free) >= need:
            for host in free[:need]:
                self.holders[host] = job.name
            self.granted.append(job.name)
            return []
        busy = tuple((h, str(holder)) for h, holder in self.holders.items() if holder is not None)
        said = "; ".join(f"{h}: busy with job {holder}" for h, holder in busy)
        return Shortage(
            f"too few free hosts: the job needs {need} x ml.m5.xlarge, {len(free)} could be had; {said}",
            client_error=self.reachable,
            busy=busy,
            enough_if_freed=self.reachable,
        )

    def give_back(self, job: str) -> None:
        for host, holder in self.holders.items():
            if holder == job:
                self.holders[host] = None

    def queue_keys(self) -> tuple[str, ...]:
        return tuple(self.holders)

    def endpoint(self, host: Host) -> Mapping[str, Any]:
        raise AssertionError("not reached")

    def reach(self, endpoint: Mapping[str, Any], job_dir: str) -> Reached:
        raise AssertionError("not reached")

    async def release(self, job: str, session: HostSession) -> None:
        raise AssertionError("not reached")


async def until(condition: Any, what: str) -> None:
    """Wait on an observable state (the store); the bound only turns a hang into a failure."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def waiting_for(store: Store, name: str) -> str | None:
    """What the job waits for, as `describe` shows it; None before it is recorded too."""
    try:
        return store.get_job(name).waiting_for
    except JobNotFoundError:
        return None


def end(store: Store, name: str) -> None:
    """The job ended: what its coordinator records once its hosts are given back."""
    store.update_job(name, status="Completed", end_time=time.time())


def test_jobs_waiting_for_one_host_get_it_in_order_of_arrival(tmp_path: Path) -> None:
    """x holds h1; a waits, then b: b does not even ask the host while a waits ahead of it."""
    home = tmp_path / "home"
    store = Store(home)
    created(store, "x")
    leases = Leases({"h1": "x"})

    def waiter(name: str) -> HostWait:
        runner = JobRunner(job(name), (), Store(home), backend=leases)
        created(runner.store, name)
        return HostWait(runner.ctx, math.inf)

    async def scenario() -> None:
        a = asyncio.ensure_future(waiter("a").claim())
        await until(lambda: store.get_job("a").waiting_for is not None, "a to wait")
        assert store.get_job("a").waiting_for == "waiting for 1 host of ml.m5.xlarge: h1 busy with job x"
        b = asyncio.ensure_future(waiter("b").claim())
        await until(lambda: store.get_job("b").waiting_for is not None, "b to wait")
        assert (
            store.get_job("b").waiting_for == "waiting behind job a, which arrived earlier and wait for the same hosts"
        )
        assert "b" not in leases.asked
        leases.give_back("x")
        end(store, "x")
        assert await a == []
        await until(lambda: "b" in leases.asked, "b to ask once a is served")
        assert leases.holders == {"h1": "a"} and not b.done()
        await until(lambda: "busy with job a" in (store.get_job("b").waiting_for or ""), "b to wait for a")
        leases.give_back("a")
        end(store, "a")
        assert await b == []

    asyncio.run(scenario())
    assert leases.granted == ["a", "b"]
    assert store.get_job("a").waiting_for is None and store.get_job("b").waiting_for is None


def test_a_limited_wait_fails_naming_the_busy_hosts_and_how_long_it_waited(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    leases = Leases({"h1": "holder", "h2": None})
    options = RunOptions(wait_for_hosts_seconds=0.2)
    outcome = asyncio.run(JobRunner(job("late", count=2), (), store, options=options, backend=leases).run())
    assert outcome.status is JobStatus.FAILED
    reason = outcome.failure_reason or ""
    assert reason.startswith("ClientError: too few free hosts: the job needs 2 x ml.m5.xlarge, 1 could be had; ")
    assert "h1: busy with job holder" in reason
    assert reason.endswith("gave up after waiting 0 s for them (the wait's limit: 0.2 s)")
    assert len(leases.asked) > 1  # it asked again while it waited
    assert store.get_job("late").waiting_for is None  # out of the queue


def test_without_waiting_a_busy_host_fails_the_job_at_once(tmp_path: Path) -> None:
    leases = Leases({"h1": "holder"})
    outcome = asyncio.run(JobRunner(job("now"), (), Store(tmp_path / "home"), backend=leases).run())
    assert outcome.failure_reason == (
        "ClientError: too few free hosts: the job needs 1 x ml.m5.xlarge, 0 could be had; h1: busy with job holder"
    )
    assert leases.asked == ["now"]


def test_a_shortage_that_waiting_cannot_end_fails_at_once(tmp_path: Path) -> None:
    """Unreachable hosts are not given back by anyone: no point waiting for them."""
    leases = Leases({"h1": "holder"}, reachable=False)
    options = RunOptions(wait_for_hosts_seconds=math.inf)
    outcome = asyncio.run(JobRunner(job("broken"), (), Store(tmp_path / "home"), options=options, backend=leases).run())
    assert outcome.status is JobStatus.FAILED and leases.asked == ["broken"]


@pytest.mark.parametrize("how", ["distproc stop", "Ctrl-C"])
def test_a_waiting_job_is_stopped_cleanly(tmp_path: Path, how: str) -> None:
    store = Store(tmp_path / "home")
    leases = Leases({"h1": "holder"})
    runner = JobRunner(job("patient"), (), store, options=RunOptions(wait_for_hosts_seconds=math.inf), backend=leases)

    async def scenario() -> Any:
        running = asyncio.ensure_future(runner.run())
        await until(lambda: waiting_for(store, "patient") is not None, "the job to wait")
        if how == "Ctrl-C":
            runner.request_stop("interrupted (Ctrl-C)")
        else:
            Store(tmp_path / "home").request_stop("patient", "stopped by request (distproc stop)")
        return await running

    outcome = asyncio.run(scenario())
    assert outcome.status is JobStatus.STOPPED
    record = store.get_job("patient")
    assert record.status == "Stopped" and record.waiting_for is None and record.hosts == ()
    assert record.stop_reason == ("interrupted (Ctrl-C)" if how == "Ctrl-C" else "stopped by request (distproc stop)")


# -- the option -----------------------------------------------------------------


def test_the_run_option_waits_indefinitely_bare_or_seconds_with_a_value() -> None:
    def parsed(*extra: str) -> Any:
        return _parser().parse_args(_bare_wait_flag(["run", "-i", "inv.yaml", *extra]))

    bare = parsed("--wait-for-hosts", "job.json")
    assert (bare.wait_for_hosts, bare.job) == (math.inf, "job.json")  # the job file is not taken as SECONDS
    assert parsed("--wait-for-hosts=30", "job.json").wait_for_hosts == 30.0
    assert parsed("job.json").wait_for_hosts is None
    with pytest.raises(SystemExit):
        parsed("--wait-for-hosts=0", "job.json")


def test_the_python_api_has_the_same_option(tmp_path: Path) -> None:
    from distproc.sdk.processing import Processor

    def options(**kw: Any) -> RunOptions:
        p = Processor(image_uri="i", instance_count=1, instance_type="ml.m5.xlarge", inventory="x", home=tmp_path, **kw)
        return p._options.run_options(live_logs=False)

    assert options().wait_for_hosts_seconds is None
    assert options(wait_for_hosts=True).wait_for_hosts_seconds == math.inf
    assert options(wait_for_hosts=90).wait_for_hosts_seconds == 90.0
    with pytest.raises(SpecError, match="wait_for_hosts"):
        options(wait_for_hosts=-1)
