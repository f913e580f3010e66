"""The job store: one SQLite database (WAL) and one log file per host and job.

Lives under DISTPROC_HOME, by default $XDG_STATE_HOME/distproc (that is
~/.local/state/distproc). `run` writes while it runs; `describe`, `list`,
`logs` and `stop` read it (and `stop` flags it) from other processes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..agent.pids import pid_alive
from ..errors import BadNextTokenError, JobExistsError, JobNotFoundError, StoreError
from ..run.outcome import HostPhase
from ..userfiles import inside

if TYPE_CHECKING:
    import asyncio

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
-- Jobs waiting for busy hosts (`run --wait-for-hosts`), in order of arrival (seq):
-- the hosts each may use, and what it waits for now (describe shows it).
CREATE TABLE IF NOT EXISTS waiting (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL UNIQUE REFERENCES jobs(name) ON DELETE CASCADE,
    arrival REAL NOT NULL,
    hosts TEXT NOT NULL,
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL,
    seen REAL NOT NULL,
    message TEXT
);
"""

#: Changes to the tables above, in order; PRAGMA user_version counts those a store has had.
#: A store (new or old) gets each step it lacks when opened, so every later column is here.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the job's backend and what reaches it again (JSON, backends/records.py; NULL: the SSH
    #    fleet, which every job of an older store ran on), and why it waits in the backend's
    #    queue (Slurm's pending reason).
    ("ALTER TABLE jobs ADD COLUMN backend TEXT", "ALTER TABLE jobs ADD COLUMN waiting_for TEXT"),
    # 2: how `run` was asked to run the job (RunOptions.to_record, JSON; NULL: not recorded), so
    #    that `attach` carries on with the run's grace, windows, credentials mode and the rest.
    ("ALTER TABLE jobs ADD COLUMN run_options TEXT",),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_JOB_FIELDS = {
    "status",
    "start_time",
    "end_time",
    "failure_reason",
    "exit_message",
    "stop_reason",
    "stop_requested",
    "coordinator_pid",
    "waiting_for",
}
_HOST_FIELDS = {"status", "exit_code", "start_time", "end_time", "message", "error"}

#: A waiting job's coordinator says it is alive at least every round of asking the hosts (at most
#: 30 s apart, plus the asking); one silent this long has died, and its place in the queue is dropped.
WAITER_STALE_SECONDS = 300.0
#: Writes that may wait (events, a host's times and Preparing status, metric samples) wait
#: at most this long inside a running event loop, then go in one transaction with the rest.
COALESCE_SECONDS = 0.2
# Host statuses whose loss in a crash changes nothing `attach` decides (a host not yet launched).
_HOST_STATUSES_THAT_MAY_WAIT = frozenset({HostPhase.PENDING, HostPhase.PREPARING})


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """This thread's running event loop, if any.

    asyncio is not imported for it: `list` and `describe` read the store without
    one, and asyncio was a fifth of their start (docs/benchmarks.md). A process
    that has not imported asyncio runs no event loop.
    """
    aio = sys.modules.get("asyncio")
    if aio is None:
        return None
    try:
        loop: asyncio.AbstractEventLoop = aio.get_running_loop()
    except RuntimeError:
        return None
    return loop


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
    #: What the job waits for while `run --wait-for-hosts` waits for busy hosts (the waiting
    #: table's), or while it waits in its backend's queue (Slurm's reason); None otherwise.
    waiting_for: str | None = None
    #: The backend the job runs on and what reaches it again (Backend.record); older stores: the fleet.
    backend: Mapping[str, Any] = dataclass_field(default_factory=lambda: {"backend": "fleet"})
    #: How `run` was asked to run it (RunOptions.to_record); None in stores from before it was kept.
    run_options: Mapping[str, Any] | None = None


#: Columns stored as JSON text, and what each becomes in its record.
_JSON_COLUMNS: Mapping[str, Callable[[Any], Any]] = {
    "request": dict,
    "warnings": tuple,
    "endpoint": dict,
    "run_options": dict,
}

_R = TypeVar("_R", JobRecord, HostRecord)


def _record(cls: type[_R], row: sqlite3.Row, **given: Any) -> _R:
    """A record from its table's row: each field is the column of its name (JSON ones decoded), or given."""
    values = dict(given)
    for field in fields(cls):
        if field.name not in values:
            value = row[field.name]
            convert = _JSON_COLUMNS.get(field.name)
            values[field.name] = value if convert is None or value is None else convert(json.loads(value))
    return cls(**values)


#: ListProcessingJobs' SortBy -> the column it orders by (the name breaks ties, so pages never overlap).
SORT_COLUMNS: Mapping[str, str] = {"Name": "name", "CreationTime": "creation_time", "Status": "status"}
#: ListProcessingJobs' bounds on MaxResults and on a NextToken's length.
MAX_RESULTS = 100
MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True, slots=True)
class ListQuery:
    """ListProcessingJobs' filters and order; the times are epoch seconds, bounds excluded, as AWS's."""

    name_contains: str | None = None
    status: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    sort_by: str = "CreationTime"
    sort_order: str = "Descending"

    def __post_init__(self) -> None:
        if self.sort_by not in SORT_COLUMNS:
            raise ValueError(f"sort_by must be one of {sorted(SORT_COLUMNS)}, not {self.sort_by!r}")
        if self.sort_order not in ("Ascending", "Descending"):
            raise ValueError(f"sort_order must be Ascending or Descending, not {self.sort_order!r}")

    def fingerprint(self) -> str:
        """What a NextToken is bound to: a token from one query is refused by another."""
        return hashlib.sha256(json.dumps([getattr(self, f.name) for f in fields(self)]).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[JobRecord]
    next_token: str | None


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
            _migrate(self._db)
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
            loop = _running_loop()
            if loop is not None:  # else no event loop here (a CLI command, a test): commit at once
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
        backend: Mapping[str, Any] | None = None,
        run_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a new job, InProgress. A name in use is refused, as SageMaker does.

        ``backend``: what Backend.record gives (None: the SSH fleet); ``run_options``:
        RunOptions.to_record() of the `run` that creates it.
        """
        logs = inside(self.home / "logs", name, what="job name")  # before the job is recorded
        t = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE name = ?", (name,)).fetchone()
            if row is not None:
                raise JobExistsError(name, row["status"])
            db.execute(
                "INSERT INTO jobs (name, arn, status, request, inventory, warnings, creation_time,"
                " last_modified, coordinator_pid, backend, run_options)"
                " VALUES (?, ?, 'InProgress', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    arn,
                    json.dumps(request),
                    inventory,
                    json.dumps(list(warnings)),
                    t,
                    t,
                    os.getpid(),
                    json.dumps(dict(backend)) if backend is not None else None,
                    json.dumps(dict(run_options)) if run_options is not None else None,
                ),
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

    def record_backend(self, name: str, backend: Mapping[str, Any]) -> None:
        """What reaches the job's backend again, as it is now (a Slurm job id once submitted): committed at once."""
        self._write("UPDATE jobs SET backend = ? WHERE name = ?", (json.dumps(dict(backend)), name))

    def add_host(self, job: str, algo: str, host: str, endpoint: Mapping[str, Any], job_dir: str) -> None:
        self._write(
            "INSERT INTO hosts (job, algo, host, endpoint, job_dir, status) VALUES (?, ?, ?, ?, ?, ?)",
            (job, algo, host, json.dumps(endpoint), job_dir, HostPhase.PENDING.value),
        )

    def update_host(self, job: str, algo: str, **fields: Any) -> None:
        # A host's launch and end are committed at once (`attach` acts on them); the rest may wait.
        may_wait = fields.get("status", HostPhase.PREPARING) in _HOST_STATUSES_THAT_MAY_WAIT
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
        waiting = self._db.execute("SELECT message FROM waiting WHERE job = ?", (name,)).fetchone()
        return _record(
            JobRecord,
            row,
            hosts=tuple(_record(HostRecord, h) for h in hosts),
            # While in the fleet's local queue (`run --wait-for-hosts`): what it says there.
            waiting_for=waiting["message"] if waiting is not None else row["waiting_for"],
            backend=json.loads(row["backend"]) if row["backend"] else {"backend": "fleet"},
        )

    def list_jobs(self, limit: int = 100, status: str | None = None) -> list[JobRecord]:
        """The newest jobs first, at most `limit` of them."""
        return self.list_page(ListQuery(status=status), min(limit, MAX_RESULTS)).jobs

    def list_page(self, query: ListQuery, max_results: int = MAX_RESULTS, next_token: str | None = None) -> JobPage:
        """One page of ListProcessingJobs: filtered, ordered and cut in SQL, continuing after `next_token`.

        Paging is by key (the last row's sort value and name), so a page never
        repeats or skips a job that existed when the first page was read, and
        jobs added meanwhile appear where their order puts them.
        """
        if not 1 <= max_results <= MAX_RESULTS:
            raise ValueError(f"max_results must be 1..{MAX_RESULTS}, not {max_results}")
        column = SORT_COLUMNS[query.sort_by]
        direction, beyond = ("ASC", ">") if query.sort_order == "Ascending" else ("DESC", "<")
        where: list[str] = []
        args: list[Any] = []
        if query.name_contains:  # instr, not LIKE: a % or _ in the filter means itself
            where.append("instr(lower(name), lower(?)) > 0")
            args.append(query.name_contains)
        for sql, value in (
            ("status = ?", query.status),
            ("creation_time > ?", query.created_after),
            ("creation_time < ?", query.created_before),
            ("last_modified > ?", query.modified_after),
            ("last_modified < ?", query.modified_before),
        ):
            if value is not None:
                where.append(sql)
                args.append(value)
        if next_token is not None:
            last_value, last_name = self._read_token(next_token, query)
            if column == "name":
                where.append(f"name {beyond} ?")
                args.append(last_name)
            else:
                where.append(f"({column} {beyond} ? OR ({column} = ? AND name {beyond} ?))")
                args += [last_value, last_value, last_name]
        # Column and direction come from the fixed tables above, never from input.
        sql = "SELECT name, " + column + " AS sort_value FROM jobs"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {column} {direction}, name {direction} LIMIT ?"
        self.flush()
        try:
            rows = self._db.execute(sql, (*args, max_results + 1)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"job store {self.home / 'jobs.db'}: {exc}") from exc
        more = len(rows) > max_results
        rows = rows[:max_results]
        token = self._make_token(query, rows[-1]["sort_value"], rows[-1]["name"]) if more else None
        return JobPage([self.get_job(r["name"]) for r in rows], token)

    # NextToken: the page's last key and the query's fingerprint, signed (HMAC-SHA256) with a key kept
    # in the store, so a token cannot be altered, forged or replayed against another query unnoticed.

    def _token_key(self) -> bytes:
        path = self.home / "list-token.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with path.open("rb") as f:
                key = f.read(64)  # bounded: the key is 32 bytes
            if len(key) >= 32:
                return key
            raise StoreError(f"{path} is damaged (shorter than 32 bytes): delete it to make a new one") from None
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror}") from exc
        key = os.urandom(32)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._token_key(), payload, hashlib.sha256).hexdigest()

    def _make_token(self, query: ListQuery, value: Any, name: str) -> str:
        payload = json.dumps({"q": query.fingerprint(), "k": [value, name]}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)

    def _read_token(self, token: str, query: ListQuery) -> tuple[Any, str]:
        if len(token) > MAX_TOKEN_CHARS:
            raise BadNextTokenError(f"longer than {MAX_TOKEN_CHARS} characters")
        body, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            raise BadNextTokenError("not a token this job store issued") from None
        if not signature.isascii() or not hmac.compare_digest(signature, self._sign(payload)):
            raise BadNextTokenError("not a token this job store issued (or it was altered)")
        data = json.loads(payload)  # signed by us: well formed
        if data["q"] != query.fingerprint():
            raise BadNextTokenError(
                "issued for other filters or another order; give the same filters, --sort-by and --sort-order"
            )
        value, name = data["k"]
        return value, str(name)

    # -- jobs waiting for busy hosts (`run --wait-for-hosts`) -------------------
    #
    # A local queue, fair among the coordinators that share this store: a waiting
    # job tries to claim only when no job that arrived before it and may use one
    # of the same hosts is still waiting. Coordinators with other stores (other
    # machines, other DISTPROC_HOMEs) are not in it: between them the host's
    # lease decides, first come first served.

    def join_queue(self, job: str, hosts: Sequence[str]) -> None:
        """The job waits for some of `hosts` (keys naming each host's lease) from now on."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO waiting (job, arrival, hosts, machine, pid, seen) VALUES (?, ?, ?, ?, ?, ?)",
                (job, now, json.dumps(sorted(set(hosts))), socket.gethostname(), os.getpid(), now),
            )

    def leave_queue(self, job: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM waiting WHERE job = ?", (job,))

    def set_waiting_for(self, job: str, message: str) -> None:
        """What the waiting job waits for now, for `describe`."""
        with self._tx() as db:
            db.execute("UPDATE waiting SET message = ? WHERE job = ?", (message, job))

    def waiting_ahead(self, job: str) -> list[str]:
        """The jobs still waiting that arrived before `job` and may use one of its hosts, oldest first.

        Each call says that `job`'s coordinator is alive. A waiter whose
        coordinator died (killed before it could leave the queue) no longer
        counts, and its row is removed: at once on this machine (its process is
        gone), after WAITER_STALE_SECONDS of silence from another machine.
        """
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE waiting SET seen = ? WHERE job = ?", (now, job))
            mine = db.execute("SELECT seq, hosts FROM waiting WHERE job = ?", (job,)).fetchone()
            if mine is None:
                return []
            wanted = set(json.loads(mine["hosts"]))
            rows = db.execute(
                "SELECT job, hosts, machine, pid, seen FROM waiting WHERE seq < ? ORDER BY seq", (mine["seq"],)
            ).fetchall()
            here = socket.gethostname()
            ahead: list[str] = []
            for row in rows:
                gone = not pid_alive(row["pid"]) if row["machine"] == here else False
                if gone or now - row["seen"] > WAITER_STALE_SECONDS:
                    db.execute("DELETE FROM waiting WHERE job = ?", (row["job"],))
                elif wanted & set(json.loads(row["hosts"])):
                    ahead.append(row["job"])
            return ahead

    def queue_mark(self) -> tuple[int, int, float]:
        """Changes to this mark when a host may have been given back here: a job ended, or a waiter left.

        Cheap enough to read every second; the hosts' leases are asked far less often.
        """
        self.flush()
        ended = self._db.execute("SELECT count(*), coalesce(max(end_time), 0) FROM jobs WHERE end_time IS NOT NULL")
        count, last = ended.fetchone()
        waiters = self._db.execute("SELECT coalesce(sum(seq), 0) FROM waiting").fetchone()[0]
        return int(waiters), int(count), float(last)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the store to SCHEMA_VERSION: each missing step, in one transaction.

    Read first without a lock, so that opening a current store (every `describe`)
    writes nothing; looked at again under the write lock, so that two processes
    opening an old store at once apply each step once. A store from a newer
    distproc is left as it is: its extra columns are not read here.
    """
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for steps in _MIGRATIONS[version:]:
            for sql in steps:
                db.execute(sql)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
