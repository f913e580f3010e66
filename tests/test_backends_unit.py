"""The backend seam (distproc/backends/): the runner claims and reaches hosts only through a Backend.

No cluster: a real job store (SQLite in a temporary folder), a job with no
inputs, and a second Backend implementation that never has hosts (the
interface is ours; this is how a backend without free nodes answers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from distproc.backends.base import Backend, Claimed, Reached, Shortage
from distproc.backends.fleet import FleetBackend
from distproc.hosts.session import HostSession
from distproc.inventory import Host
from distproc.run.outcome import JobStatus
from distproc.run.runner import JobRunner
from distproc.spec import ProcessingJob, parse_job
from distproc.store.db import Store


def job(name: str = "seam") -> ProcessingJob:
    return parse_job(
        {
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.t3.medium", "InstanceCount": 2}},
            "AppSpecification": {"ImageUri": "busybox"},
        }
    )


class NoneFree(Backend):
    """A backend whose hosts are all taken."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def acquire(self, job: ProcessingJob) -> Sequence[Claimed] | Shortage:
        self.asked.append(job.name)
        return Shortage("too few free hosts: all 2 busy", client_error=True)

    def endpoint(self, host: Host) -> Mapping[str, Any]:
        raise AssertionError("no host was claimed")

    def reach(self, endpoint: Mapping[str, Any], job_dir: str) -> Reached:
        raise AssertionError("no host was claimed")

    async def release(self, job: str, session: HostSession) -> None:
        raise AssertionError("no host was claimed")


def test_the_runner_claims_its_hosts_from_the_backend_it_is_given(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    backend = NoneFree()
    with capture_logs() as logs:
        outcome = asyncio.run(JobRunner(job(), (), store, backend=backend).run())
    assert backend.asked == ["seam"]
    assert outcome.status is JobStatus.FAILED
    assert outcome.failure_reason == "ClientError: too few free hosts: all 2 busy"
    record = store.get_job("seam")
    assert (record.status, record.failure_reason) == ("Failed", "ClientError: too few free hosts: all 2 busy")
    assert [e["event"] for e in logs] == ["job created", "job finished"]


def test_a_broken_shortage_is_an_internal_failure(tmp_path: Path) -> None:
    class Unreachable(NoneFree):
        async def acquire(self, job: ProcessingJob) -> Sequence[Claimed] | Shortage:
            return Shortage("too few free hosts: h1 unreachable", client_error=False)

    outcome = asyncio.run(JobRunner(job(), (), Store(tmp_path / "home"), backend=Unreachable()).run())
    assert outcome.failure_reason == "InternalServerError: too few free hosts: h1 unreachable"


def test_the_fleet_reaches_a_host_again_from_what_the_store_keeps() -> None:
    host = Host(name="gpu1", address="10.0.0.11", port=2222, user="ops", key_file="/keys/id", work_dir="/srv/dp")
    fleet = FleetBackend([host])
    reached = fleet.reach(dict(fleet.endpoint(host)), "/srv/dp/jobs/seam")
    assert (reached.host.name, reached.host.address, reached.host.port, reached.host.user) == (
        "gpu1",
        "10.0.0.11",
        2222,
        "ops",
    )
    assert (reached.host.key_file, reached.host.work_dir) == ("/keys/id", "/srv/dp")
    assert reached.session.job_dir == "/srv/dp/jobs/seam"


def test_a_backend_must_implement_the_whole_interface() -> None:
    class Half(Backend):
        async def acquire(self, job: ProcessingJob) -> Sequence[Claimed] | Shortage:
            return Shortage("none", client_error=True)

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]
