"""The job store: one SQLite database (WAL) and one log file per host and job.

Lives under DISTPROC_HOME, by default $XDG_STATE_HOME/distproc (that is
~/.local/state/distproc). `run` writes while it runs; `describe`, `list`,
`logs` and `stop` read it (and `stop` flags it) from other processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from ..errors import JobExistsError, JobNotFoundError, StoreError
from ..userfiles import inside

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
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
CREATE TABLE IF NOT EXISTS hosts (
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
CREATE TABLE IF NOT EXISTS events (
    job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,
    algo TEXT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job, time);
CREATE TABLE IF NOT EXISTS metrics (
    job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,
    algo TEXT NOT NULL,
    gpu TEXT,
    samples TEXT NOT NULL,
    PRIMARY KEY (job, algo)
);
"""

_JOB_FIELDS = {
    "status",
    "start_time",
    "end_time",
    "failure_reason",
    "exit_message",
    "stop_reason",
    "stop_requested",
    "coordinator_pid",
}
_HOST_FIELDS = {"status", "exit_code", "start_time", "end_time", "message", "error"}

#: Writes that may wait (events, a host's times and Preparing status, metric samples) wait
#: at most this long inside a running event loop, then go in one transaction with the rest.
COALESCE_SECONDS = 0.2
# Host statuses whose loss in a crash changes nothing `attach` decides (a host not yet launched).
_HOST_STATUSES_THAT_MAY_WAIT = frozenset({"Pending", "Preparing"})


def default_home() -> Path:
    explicit = os.environ.get("DISTPROC_HOME")
    if explicit:
        return Path(explicit).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "distproc"


@dataclass(frozen=True, slots=True)
class HostRecord:
    algo: str
    host: str
    endpoint: Mapping[str, Any]
    job_dir: str
    status: str
    exit_code: int | None
    start_time: float | None
    end_time: float | None
    message: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class JobRecord:
    name: str
    arn: str
    status: str
    request: Mapping[str, Any]
    inventory: str | None
    warnings: tuple[str, ...]
    creation_time: float
    start_time: float | None
    end_time: float | None
    last_modified: float
    failure_reason: str | None
    exit_message: str | None
    stop_reason: str | None
    stop_requested: str | None
    coordinator_pid: int | None
    hosts: tuple[HostRecord, ...]


#: Columns stored as JSON text, and what each becomes in its record.
_JSON_COLUMNS: Mapping[str, Callable[[Any], Any]] = {"request": dict, "warnings": tuple, "endpoint": dict}

_R = TypeVar("_R", JobRecord, HostRecord)


def _record(cls: type[_R], row: sqlite3.Row, **given: Any) -> _R:
    """A record from its table's row: each field is the column of its name (JSON ones decoded), or given."""
    values = dict(given)
    for field in fields(cls):
        if field.name not in values:
            value = row[field.name]
            convert = _JSON_COLUMNS.get(field.name)
            values[field.name] = value if convert is None else convert(json.loads(value))
    return cls(**values)


class Store:
    """The job store.

    Writes that decide what happens next (a job created or ended, a host
    launched or ended, a stop request) are committed before the call returns.
    Writes that only record progress (events, start times, a host's Preparing
    status, metric samples) are coalesced inside a running event loop: held for
    at most COALESCE_SECONDS, then committed in one transaction, or sooner with
    the next write that cannot wait, a read, `flush` or `close`. A coordinator's
    hundreds of events per second are then a few commits, and `describe` or
    `logs` in another process still sees them within that time. A crash of the
    coordinator loses at most the last COALESCE_SECONDS of progress records.
    """

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or default_home()
        try:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.home / "logs").mkdir(exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(self.home / "jobs.db", timeout=30, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL never corrupts the database; a power cut may lose the last
            # commits, not the file. FULL's fsync per event was a fifth of the coordinator's CPU.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the job store in {self.home}: {exc}") from exc
        # Writes not committed yet, in order; the timer that commits them; open batch() blocks.
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._batching = 0

    def close(self) -> None:
        self.flush()
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; the writes still waiting go first, in it."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in self._pending:
                    self._db.execute(sql, params)
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"job store {self.home / 'jobs.db'}: {exc}") from exc
        # Only once committed: after a failure they stay, and go with the next transaction.
        self._pending.clear()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def flush(self) -> None:
        """Commit the writes still waiting, if any."""
        if self._pending:
            with self._tx():
                pass

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside the block, whatever its kind, in one transaction at its end."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
        if not self._batching:
            self.flush()

    def _write(self, sql: str, params: tuple[Any, ...], may_wait: bool = False) -> None:
        if self._batching:
            self._pending.append((sql, params))
            return
        if may_wait:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop here (a CLI command, a test): commit at once
                pass
            else:
                self._pending.append((sql, params))
                if self._flush_timer is None or self._timer_loop is not loop:  # none yet, or one of a loop now gone
                    if self._flush_timer is not None:
                        self._flush_timer.cancel()
                    self._flush_timer = loop.call_later(COALESCE_SECONDS, self._flush_later)
                    self._timer_loop = loop
                return
        with self._tx() as db:
            db.execute(sql, params)

    def _flush_later(self) -> None:
        self._flush_timer = None
        # On failure the writes stay waiting; the next write that cannot wait raises the error.
        with suppress(StoreError):
            self.flush()

    def log_path(self, job: str, algo: str) -> Path:
        """`logs/<job>/<algo-K>-<creation epoch>.log`: CloudWatch names the stream `<job>/algo-K-<timestamp>`."""
        row = self._db.execute("SELECT creation_time FROM jobs WHERE name = ?", (job,)).fetchone()
        if row is None:
            raise JobNotFoundError(job)
        return inside(self.home / "logs", job, f"{algo}-{int(row['creation_time'])}.log", what="job or host name")

    def create_job(
        self,
        name: str,
        arn: str,
        request: Mapping[str, Any],
        inventory: str | None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        """Record a new job, InProgress. A name in use is refused, as SageMaker does."""
        logs = inside(self.home / "logs", name, what="job name")  # before the job is recorded
        t = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE name = ?", (name,)).fetchone()
            if row is not None:
                raise JobExistsError(name, row["status"])
            db.execute(
                "INSERT INTO jobs (name, arn, status, request, inventory, warnings, creation_time,"
                " last_modified, coordinator_pid) VALUES (?, ?, 'InProgress', ?, ?, ?, ?, ?, ?)",
                (name, arn, json.dumps(request), inventory, json.dumps(list(warnings)), t, t, os.getpid()),
            )
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _update(
        self, table: str, allowed: set[str], where: dict[str, Any], fields: dict[str, Any], may_wait: bool = False
    ) -> None:
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown {table} fields {unknown}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        cond = " AND ".join(f"{k} = ?" for k in where)
        # Column names come from the fixed sets above, never from input.
        sql = f"UPDATE {table} SET {sets} WHERE {cond}"  # noqa: S608
        self._write(sql, (*fields.values(), *where.values()), may_wait)

    def update_job(self, name: str, **fields: Any) -> None:
        self._update("jobs", _JOB_FIELDS | {"last_modified"}, {"name": name}, {**fields, "last_modified": time.time()})

    def add_host(self, job: str, algo: str, host: str, endpoint: Mapping[str, Any], job_dir: str) -> None:
        self._write(
            "INSERT INTO hosts (job, algo, host, endpoint, job_dir, status) VALUES (?, ?, ?, ?, ?, 'Pending')",
            (job, algo, host, json.dumps(endpoint), job_dir),
        )

    def update_host(self, job: str, algo: str, **fields: Any) -> None:
        # A host's launch and end are committed at once (`attach` acts on them); the rest may wait.
        may_wait = fields.get("status", "Preparing") in _HOST_STATUSES_THAT_MAY_WAIT
        self._update("hosts", _HOST_FIELDS, {"job": job, "algo": algo}, fields, may_wait)

    def add_event(
        self, job: str, algo: str | None, kind: str, data: Mapping[str, Any], at: float | None = None
    ) -> None:
        self._write(
            "INSERT INTO events (job, algo, time, kind, data) VALUES (?, ?, ?, ?, ?)",
            (job, algo, at if at is not None else time.time(), kind, json.dumps(dict(data))),
            may_wait=True,
        )

    def events(self, job: str) -> list[dict[str, Any]]:
        self.flush()
        rows = self._db.execute(
            "SELECT algo, time, kind, data FROM events WHERE job = ? ORDER BY time, rowid", (job,)
        ).fetchall()
        return [{"algo": r["algo"], "time": r["time"], "kind": r["kind"], **json.loads(r["data"])} for r in rows]

    def take_over(self, name: str, expected_pid: int | None) -> bool:
        """Make this process the job's coordinator, if the recorded one is still `expected_pid`.

        Two `attach` commands racing for one job: only one sees its update land.
        """
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET coordinator_pid = ?, last_modified = ? WHERE name = ? AND coordinator_pid IS ?",
                (os.getpid(), time.time(), name, expected_pid),
            )
            return cur.rowcount == 1

    def set_metrics(self, job: str, algo: str, gpu: Mapping[str, Any] | None, samples: list[dict[str, Any]]) -> None:
        """A host's metric samples (replacing any earlier copy) and its GPU note: a record that may wait."""
        self._write(
            "INSERT OR REPLACE INTO metrics (job, algo, gpu, samples) VALUES (?, ?, ?, ?)",
            (job, algo, json.dumps(dict(gpu)) if gpu is not None else None, json.dumps(samples)),
            may_wait=True,
        )

    def metrics(self, job: str) -> dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]]:
        """algo-K -> (GPU note, samples), for the hosts whose metrics were fetched."""
        self.flush()
        rows = self._db.execute("SELECT algo, gpu, samples FROM metrics WHERE job = ?", (job,)).fetchall()
        return {r["algo"]: (json.loads(r["gpu"]) if r["gpu"] else None, json.loads(r["samples"])) for r in rows}

    def request_stop(self, name: str, reason: str) -> JobRecord:
        """Flag a job for stopping; returns it as it was."""
        job = self.get_job(name)
        if job.status in ("InProgress", "Stopping"):
            self.update_job(name, status="Stopping", stop_requested=reason)
        return job

    def get_job(self, name: str) -> JobRecord:
        self.flush()
        try:
            row = self._db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
            hosts = self._db.execute(
                "SELECT * FROM hosts WHERE job = ? ORDER BY CAST(substr(algo, 6) AS INTEGER)", (name,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"job store {self.home / 'jobs.db'}: {exc}") from exc
        if row is None:
            raise JobNotFoundError(name)
        return _record(JobRecord, row, hosts=tuple(_record(HostRecord, h) for h in hosts))

    def list_jobs(self, limit: int = 100, status: str | None = None) -> list[JobRecord]:
        query = "SELECT name FROM jobs"
        args: tuple[Any, ...] = ()
        if status:
            query += " WHERE status = ?"
            args = (status,)
        query += " ORDER BY creation_time DESC LIMIT ?"
        self.flush()
        names = [r["name"] for r in self._db.execute(query, (*args, limit)).fetchall()]
        return [self.get_job(n) for n in names]
