"""A backend's queue, seen from outside the backend: its record in the job store, the queued phase,
the live view's line, and a stop that cancels a job still queued.

No cluster: a real job store (SQLite in a temporary folder); the runner test uses a Backend of
its own whose acquire waits in a queue until it is cancelled (as Slurm's does while a job is
PENDING); SlurmBackend's record is built and read back without reaching any Slurm.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from distproc.backends.base import Backend, Claimed, Queued, Reached, Shortage, Submitted
from distproc.backends.records import backend_from_record
from distproc.backends.slurm.backend import SlurmBackend
from distproc.backends.slurm.inventory import parse_slurm_inventory
from distproc.errors import JobNotFoundError, SpecError, StoreError
from distproc.hosts.session import HostSession
from distproc.inventory import Host
from distproc.run.attach import attach
from distproc.run.control import stop_job
from distproc.run.options import RunOptions
from distproc.run.outcome import JobStatus
from distproc.run.runner import JobRunner
from distproc.spec import ProcessingJob, parse_job
from distproc.store.db import Store
from distproc.store.timeline import job_timeline, queue_phase
from distproc.store.views import describe_document
from distproc.ui.liveview import LiveView

REASON = "waiting for 2 nodes in partition debug: Resources"


def job(name: str = "queued") -> ProcessingJob:
    return parse_job(
        {
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}},
            "AppSpecification": {"ImageUri": "busybox"},
        }
    )


class Queue(Backend):
    """A backend whose jobs wait in its queue until cancelled, as a PENDING Slurm job does."""

    kind = "test-queue"
    queues = True

    def __init__(self) -> None:
        self.cancelled = False

    async def acquire(self, job: ProcessingJob) -> Sequence[Claimed] | Shortage:
        assert self.listener is not None, "the runner listens to what happens in the queue"
        self.listener(Submitted(1000.0))
        self.listener(Queued(REASON))
        try:
            await asyncio.Event().wait()  # never allocated
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")

    def record(self, job: str) -> Mapping[str, Any]:
        return {"backend": self.kind, "queue_id": "q-1"}

    def endpoint(self, host: Host) -> Mapping[str, Any]:
        raise AssertionError("no host was claimed")

    def reach(self, endpoint: Mapping[str, Any], job_dir: str) -> Reached:
        raise AssertionError("no host was claimed")

    async def release(self, job: str, session: HostSession) -> None:
        raise AssertionError("no host was claimed")


def waiting_for(store: Store, name: str) -> str | None:
    try:
        return store.get_job(name).waiting_for
    except JobNotFoundError:
        return None


def test_a_stop_in_the_store_cancels_a_queued_acquire_and_the_job_ends_stopped(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    backend = Queue()
    seen: dict[str, Any] = {}

    async def scenario() -> Any:
        running = asyncio.ensure_future(JobRunner(job(), (), store, backend=backend).run())
        while waiting_for(store, "queued") is None:
            assert not running.done(), running.result()
            await asyncio.sleep(0.05)  # the runner's own loop must turn: this is how the test waits for it
        record = store.get_job("queued")
        seen.update(status=record.status, waiting_for=record.waiting_for, backend=record.backend)
        store.request_stop("queued", "stopped by request (distproc stop)")  # what `distproc stop` does first
        return await asyncio.wait_for(running, 30)

    outcome = asyncio.run(scenario())
    assert seen == {
        "status": "InProgress",
        "waiting_for": REASON,
        "backend": {"backend": "test-queue", "queue_id": "q-1"},
    }
    assert backend.cancelled
    assert outcome.status is JobStatus.STOPPED
    assert outcome.stop_reason == "stopped by request (distproc stop)"
    record = store.get_job("queued")
    assert (record.status, record.stop_reason, record.waiting_for) == ("Stopped", outcome.stop_reason, None)
    events = store.events("queued")
    assert [(e["algo"], e["kind"]) for e in events] == [(None, "queued"), (None, "left_queue")]
    phase = queue_phase(events)
    assert phase is not None and phase.start == 1000.0 and phase.end is not None
    assert describe_document(record, queued=phase)["Distproc"]["Queued"]["Start"] == 1000.0


def test_every_host_shares_the_jobs_queued_phase() -> None:
    events = [
        {"algo": None, "kind": "queued", "time": 10.0},
        {"algo": None, "kind": "allocated", "time": 25.0},
        {"algo": "algo-1", "kind": "connect_started", "time": 25.5},
        {"algo": "algo-1", "kind": "connected", "time": 26.0},
        {"algo": "algo-2", "kind": "connect_started", "time": 25.6},
    ]
    timeline = job_timeline(events)
    for algo in ("algo-1", "algo-2"):
        first = timeline[algo][0]
        assert (first.name, first.start, first.end, first.seconds) == ("queued", 10.0, 25.0, 15.0)
    assert [p.name for p in timeline["algo-1"]] == ["queued", "connect", "agent_ready"]
    assert queue_phase(events) == timeline["algo-1"][0]
    # A fleet job has no job-level events: no queued phase.
    assert [p.name for p in job_timeline(events[2:])["algo-1"]] == ["connect", "agent_ready"]
    assert queue_phase(events[2:]) is None


def test_the_live_view_says_what_the_job_waits_for_before_it_has_hosts() -> None:
    screen = io.StringIO()
    view = LiveView(screen)
    view.waiting(REASON)
    assert screen.getvalue().splitlines()[-1] == f"queued: {REASON}"
    view.waiting(None)
    view.add_host("algo-1", "sl1")
    assert "queued:" not in screen.getvalue().splitlines()[-2]  # the header and one row, no waiting line
    assert screen.getvalue().splitlines()[-1].split()[:2] == ["algo-1", "sl1"]


def slurm_backend(tmp_path: Path, **submit: Any) -> SlurmBackend:
    inventory = parse_slurm_inventory(
        {"slurm": {"submit": submit or {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": "debug"}}},
        tmp_path / "slurm.yaml",
    )
    return SlurmBackend(
        inventory, node_python="/usr/bin/python3", node_work_dir="/var/tmp/dp", docker_host="unix:///d-{node}"
    )


def test_a_slurm_backend_is_built_again_from_its_record(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key")
    backend = slurm_backend(
        tmp_path, ansible_host="login.example.org", ansible_user="alice", ansible_ssh_private_key_file=str(key)
    )
    backend._slurm_job["j"] = "123"  # as acquire leaves it once sbatch answered
    record = backend.record("j")
    assert record["backend"] == "slurm" and record["slurm_job_id"] == "123"
    assert (record["node_python"], record["node_work_dir"], record["docker_host"]) == (
        "/usr/bin/python3",
        "/var/tmp/dp",
        "unix:///d-{node}",
    )
    assert record["submit"]["address"] == "login.example.org" and record["submit"]["user"] == "alice"
    assert "not a real key" not in repr(record)  # a path to the key, never the key
    again = backend_from_record(record, "j")
    assert isinstance(again, SlurmBackend)
    assert again.record("j") == record
    reached = again.reach({"name": "sl2", "address": "10.9.0.2", "slurm_job_id": "123"}, "/var/tmp/dp/jobs/j/algo-2")
    assert (reached.host.name, reached.host.address, reached.host.docker_host) == ("sl2", "10.9.0.2", "unix:///d-sl2")
    assert reached.session.transport.name == "sl2"


def test_a_damaged_or_unknown_backend_record_is_refused_naming_the_job(tmp_path: Path) -> None:
    record = dict(slurm_backend(tmp_path).record("j"))
    with pytest.raises(StoreError, match="job j: the job store's Slurm job id is not a number"):
        backend_from_record({**record, "slurm_job_id": "1; rm -rf /"}, "j")
    with pytest.raises(StoreError, match="job j: the job store's Slurm record is damaged"):
        backend_from_record({"backend": "slurm"}, "j")
    with pytest.raises(StoreError, match="job j: the job store names a backend this distproc does not know: 'k8s'"):
        backend_from_record({"backend": "k8s"}, "j")


def test_stop_of_a_job_with_no_hosts_asks_its_recorded_backend(tmp_path: Path) -> None:
    """`distproc stop` goes through the backend the store names; the fleet has no queue of its own to empty."""
    store = Store(tmp_path / "home")
    store.create_job("f", "arn:f", {"ProcessingJobName": "f"}, None)
    assert asyncio.run(stop_job(store, "f")) == {}
    assert store.get_job("f").status == "Stopping"  # its `run --wait-for-hosts` reads the flag
    store.create_job("k", "arn:k", {"ProcessingJobName": "k"}, None, (), {"backend": "k8s"})
    with pytest.raises(StoreError, match="'k8s'"):
        asyncio.run(stop_job(store, "k"))


def test_attach_refuses_a_job_whose_run_died_before_it_had_hosts(tmp_path: Path) -> None:
    """Nothing runs or waits to follow (it died before sbatch answered: no Slurm job recorded): `attach` says so
    and names `stop`, rather than record it Completed. With a Slurm job recorded it waits for it
    (tests/test_slurm_control_e2e.py)."""
    store = Store(tmp_path / "home")
    store.create_job("q", "arn:q", job("q").request_dict(), None, (), slurm_backend(tmp_path).record("q"))
    with pytest.raises(SpecError, match=r"never had its hosts .*`distproc stop q` ends it"):
        asyncio.run(attach(store, "q", RunOptions()))
    assert store.get_job("q").status == "InProgress"
