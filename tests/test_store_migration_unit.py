"""The job store's migrations (store/db.py): a store written by an older distproc opens, keeps its jobs,
and gains the new columns; its jobs read as fleet jobs. Real SQLite files in a temporary folder."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from distproc.backends.fleet import FleetBackend
from distproc.backends.records import backend_from_record
from distproc.store.db import SCHEMA_VERSION, Store

#: The jobs and hosts tables as every store had them before migrations (user_version 0).
OLD_SCHEMA = """
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    inventory TEXT,
    warnings TEXT NOT NULL DEFAULT '[]',
    creation_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    last_modified REAL NOT NULL,
    failure_reason TEXT,
    exit_message TEXT,
    stop_reason TEXT,
    stop_requested TEXT,
    coordinator_pid INTEGER
);
CREATE TABLE hosts (
    job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,
    algo TEXT NOT NULL,
    host TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    job_dir TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    start_time REAL,
    end_time REAL,
    message TEXT,
    error TEXT,
    PRIMARY KEY (job, algo)
);
INSERT INTO jobs (name, arn, status, request, inventory, creation_time, last_modified, coordinator_pid)
    VALUES ('old-job', 'arn:old', 'InProgress', '{"ProcessingJobName": "old-job"}', 'inv.yaml', 1.0, 2.0, 1);
INSERT INTO hosts (job, algo, host, endpoint, job_dir, status)
    VALUES ('old-job', 'algo-1', 'h1',
            '{"name": "h1", "connection": "ssh", "address": "10.0.0.1", "port": 22, "python": "python3",
              "work_dir": "/w"}',
            '/w/jobs/old-job/algo-1', 'InProgress');
"""


def old_store(home: Path) -> Path:
    home.mkdir(parents=True)
    db = sqlite3.connect(home / "jobs.db")
    db.executescript(OLD_SCHEMA)
    db.close()
    return home / "jobs.db"


def columns(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
    finally:
        db.close()


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_an_older_store_gains_the_new_columns_and_its_jobs_are_fleet_jobs(tmp_path: Path) -> None:
    path = old_store(tmp_path / "home")
    assert version(path) == 0 and "backend" not in columns(path)
    store = Store(tmp_path / "home")
    assert {"backend", "waiting_for"} <= columns(path)
    assert version(path) == SCHEMA_VERSION >= 1
    job = store.get_job("old-job")
    # Nothing of the job is lost, and it ran on the fleet: its hosts are reached as before.
    assert (job.arn, job.status, job.inventory, job.coordinator_pid) == ("arn:old", "InProgress", "inv.yaml", 1)
    assert [(h.algo, h.host, h.endpoint["address"]) for h in job.hosts] == [("algo-1", "h1", "10.0.0.1")]
    assert job.backend == {"backend": "fleet"}
    assert job.waiting_for is None
    backend = backend_from_record(job.backend, job.name)
    assert isinstance(backend, FleetBackend)
    assert backend.reach(job.hosts[0].endpoint, job.hosts[0].job_dir).host.address == "10.0.0.1"


def test_a_migrated_store_opens_again_unchanged_and_takes_new_jobs(tmp_path: Path) -> None:
    path = old_store(tmp_path / "home")
    first, second = Store(tmp_path / "home"), Store(tmp_path / "home")  # each step once, however many open it
    assert version(path) == SCHEMA_VERSION
    record = {"backend": "slurm", "node_python": "python3", "slurm_job_id": "17"}
    first.create_job("new-job", "arn:new", {"ProcessingJobName": "new-job"}, None, (), record)
    assert second.get_job("new-job").backend == record
    assert second.get_job("old-job").backend == {"backend": "fleet"}
    first.close()
    second.close()


def test_a_new_store_is_at_the_current_version(tmp_path: Path) -> None:
    Store(tmp_path / "home").close()
    path = tmp_path / "home" / "jobs.db"
    assert version(path) == SCHEMA_VERSION
    assert {"backend", "waiting_for"} <= columns(path)


def test_the_backend_record_and_the_queue_reason_are_kept_and_cleared(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    store.create_job("j", "arn:j", {"ProcessingJobName": "j"}, None, (), {"backend": "slurm"})
    store.record_backend("j", {"backend": "slurm", "slurm_job_id": "42"})
    store.update_job("j", waiting_for="waiting for 3 nodes in partition debug: Resources")
    job = store.get_job("j")
    assert job.backend == {"backend": "slurm", "slurm_job_id": "42"}
    assert job.waiting_for == "waiting for 3 nodes in partition debug: Resources"
    # The fleet's local queue (`run --wait-for-hosts`) says what it waits for there while the job is in it.
    store.join_queue("j", ["h1"])
    store.set_waiting_for("j", "waiting for 1 host of ml.m5.xlarge: h1 busy with job x")
    assert store.get_job("j").waiting_for == "waiting for 1 host of ml.m5.xlarge: h1 busy with job x"
    store.leave_queue("j")
    store.update_job("j", waiting_for=None)
    assert store.get_job("j").waiting_for is None


def test_the_runs_options_are_kept_for_attach_and_an_older_job_has_none(tmp_path: Path) -> None:
    from distproc.run.options import RunOptions

    path = old_store(tmp_path / "home")
    store = Store(tmp_path / "home")
    assert "run_options" in columns(path)
    ran = RunOptions(
        stop_grace_seconds=2.5,
        fan_out=7,
        aws_credentials="forward",
        s3_endpoint_url="http://s3.local:9000",
        metrics_interval_seconds=0.0,
        ship_image=True,
        orphan_timeout_seconds=60.0,
    )
    store.create_job("j", "arn:j", {"ProcessingJobName": "j"}, None, (), None, ran.to_record())
    recorded = Store(tmp_path / "home").get_job("j").run_options
    # What attach gets: the run's options, with its own console and observer.
    taken_up = RunOptions(console=None).with_recorded(recorded)
    assert taken_up == ran
    assert store.get_job("old-job").run_options is None
    assert RunOptions(fan_out=3).with_recorded(store.get_job("old-job").run_options) == RunOptions(fan_out=3)
    # In a listing too (the same row reader).
    assert {j.name: j.run_options is not None for j in store.list_jobs()} == {"j": True, "old-job": False}


def test_a_damaged_or_newer_run_options_record(tmp_path: Path) -> None:
    import pytest

    from distproc.errors import StoreError
    from distproc.run.options import RunOptions

    # A newer distproc's option is passed over; ints stand for floats as JSON writes them.
    assert RunOptions().with_recorded({"fan_out": 5, "stop_grace_seconds": 3, "from_the_future": 1}) == RunOptions(
        fan_out=5, stop_grace_seconds=3.0
    )
    for damaged in ({"fan_out": "5"}, {"fan_out": True}, {"ship_image": 1}, {"aws_credentials": "steal"}):
        with pytest.raises(StoreError, match=next(iter(damaged))):
            RunOptions().with_recorded(damaged)
