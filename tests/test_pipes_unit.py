"""Pipe mode's writer on its own (agent/pipes.py): real named pipes, real gzip, a
real S3 endpoint (moto's server on loopback). A reader thread stands in for the
container: it sees every byte of every object in order, then EOF; the writer
never hangs on a reader that never comes or leaves early, and a source that
fails is named and never looks like a clean end of data."""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distproc.agent.files import EventLog
from distproc.agent.pipes import CHUNK, Feeder, PipeFailed, Pipes, file_opener, gunzip
from distproc.agent.task import JobDir, PipeSpec, parse_task
from tests.s3server import MotoServer, start_moto_server
from tests.task_docs import task_doc

FIFO = "/opt/ml/processing/in_0"
STAGED = "/opt/ml/.distproc-pipe/0"


class Reader:
    """The container's side: opens the pipe (blocking, as a plain open() does) and reads it to EOF."""

    def __init__(self, path: str, stop_after: int | None = None) -> None:
        self.path = path
        self.stop_after = stop_after
        self.data = bytearray()
        self.eof = False
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with open(self.path, "rb", buffering=0) as fh:
            self.opened.set()
            while True:
                want = 65536 if self.stop_after is None else self.stop_after - len(self.data)
                if want <= 0:
                    return  # leaves early: closes its end with data still coming
                chunk = fh.read(want)
                if not chunk:
                    self.eof = True
                    return
                self.data += chunk

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the reader never saw the end of the pipe"


def staged(jobdir: JobDir, files: dict[str, bytes]) -> tuple[tuple[str, int], ...]:
    """Files as the coordinator unpacks a file:// Pipe input's shard, and the objects naming them."""
    base = Path(jobdir.host_path(STAGED))
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return tuple((rel, len(data)) for rel, data in files.items())


def feeder(jobdir: JobDir, objects: tuple[tuple[str, int], ...], gzip_: bool = False) -> Feeder:
    spec = PipeSpec("in", FIFO, gzip_, STAGED, objects)
    return Feeder(spec, jobdir.host_path(FIFO), file_opener(jobdir), EventLog(jobdir.events))


@pytest.fixture
def jobdir(tmp_path: Path) -> JobDir:
    jd = JobDir(str(tmp_path / "job"))
    os.makedirs(jd.host_path("/opt/ml/processing/in"))
    return jd


def events(jobdir: JobDir) -> list[dict[str, Any]]:
    with open(jobdir.events, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_every_object_in_order_then_eof_through_a_real_fifo(jobdir: JobDir) -> None:
    """Objects larger than the pipe's buffer, one after the other in the listed order; EOF after the last."""
    first, second = os.urandom(3 * CHUNK + 7), os.urandom(CHUNK // 3)
    objects = staged(jobdir, {"a/part-0": first, "b/part-1": second, "empty": b""})
    feed = feeder(jobdir, objects)
    assert stat.S_ISFIFO(os.lstat(jobdir.host_path(FIFO)).st_mode)
    assert stat.S_IMODE(os.lstat(jobdir.host_path(FIFO)).st_mode) == 0o644
    feed.start()
    reader = Reader(jobdir.host_path(FIFO))
    reader.join()
    feed.thread.join(30)
    assert reader.eof and bytes(reader.data) == first + second
    assert (feed.outcome, feed.error, feed.written) == ("complete", None, len(first) + len(second))
    assert [e["kind"] for e in events(jobdir)] == ["pipe_opened", "pipe_closed"]


def test_gzip_objects_are_decompressed_on_the_fly_members_and_all(jobdir: JobDir) -> None:
    """Each object is gunzipped on its own; an object of two gzip members gives both, as `gzip -d` does."""
    text = b"".join(b"line %d\n" % i for i in range(200000))
    two_members = gzip.compress(b"first member\n") + gzip.compress(b"second member\n")
    objects = staged(jobdir, {"0.gz": gzip.compress(text), "1.gz": two_members})
    feed = feeder(jobdir, objects, gzip_=True)
    feed.start()
    reader = Reader(jobdir.host_path(FIFO))
    reader.join()
    assert reader.eof and bytes(reader.data) == text + b"first member\nsecond member\n"
    assert feed.written == len(text) + 27


def test_gunzip_gives_bounded_chunks_however_well_the_data_compresses() -> None:
    """64 MiB of zeros is a few KiB of gzip: it still comes out CHUNK bytes at a time, never whole."""
    packed = gzip.compress(bytes(64 << 20))
    stream = iter([packed[i : i + 4096] for i in range(0, len(packed), 4096)])
    sizes = [len(c) for c in gunzip(lambda n: next(stream, b""), "zeros.gz")]
    assert sum(sizes) == 64 << 20
    assert max(sizes) <= CHUNK


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"this is not gzip at all", "is not valid gzip data"),
        (gzip.compress(b"cut short")[:10], "ends inside its gzip data (truncated)"),
    ],
)
def test_bad_gzip_fails_named_and_the_reader_gets_no_eof_until_stop(jobdir: JobDir, data: bytes, why: str) -> None:
    """A cut stream must not look like the whole one: the pipe stays open until the runner stops the reader."""
    objects = staged(jobdir, {"ok.gz": gzip.compress(b"fine\n"), "bad.gz": data})
    feed = feeder(jobdir, objects, gzip_=True)
    feed.start()
    fd = os.open(jobdir.host_path(FIFO), os.O_RDONLY)  # blocks until the writer opens: the container's open()
    try:
        feed.thread.join(30)
        assert not feed.thread.is_alive()
        assert isinstance(feed.error, PipeFailed) and feed.error.client_error
        assert str(feed.error).startswith(f"input in: bad.gz {why}")
        assert os.read(fd, 100) == b"fine\n"
        os.set_blocking(fd, False)
        with pytest.raises(BlockingIOError):
            os.read(fd, 100)  # no EOF: the write end is still open
        feed.stop()
        assert os.read(fd, 100) == b""  # now the end
    finally:
        os.close(fd)
    assert events(jobdir)[-1]["kind"] == "pipe_failed"


def test_a_missing_staged_file_is_named(jobdir: JobDir) -> None:
    feed = feeder(jobdir, (("gone.csv", 10),))
    feed.start()
    reader = Reader(jobdir.host_path(FIFO))
    reader.opened.wait(30)
    feed.thread.join(30)
    assert feed.error is not None and str(feed.error).startswith("input in: gone.csv: cannot read the staged file")
    feed.stop()
    reader.join()


def test_a_reader_that_leaves_early_ends_the_feed_without_an_error(jobdir: JobDir) -> None:
    """The container read what it wanted and closed the pipe (or exited): EPIPE ends the feed, no hang."""
    objects = staged(jobdir, {"big": os.urandom(8 * CHUNK)})
    feed = feeder(jobdir, objects)
    feed.start()
    reader = Reader(jobdir.host_path(FIFO), stop_after=10)
    reader.join()
    feed.thread.join(30)
    assert not feed.thread.is_alive()
    assert (feed.outcome, feed.error) == ("closed by reader", None)
    assert len(reader.data) == 10 and not reader.eof


def test_a_reader_that_never_opens_the_pipe_does_not_hold_the_writer(jobdir: JobDir) -> None:
    """A container that ignores its pipe: `stop` (its exit) ends the writer at once; nothing is left behind."""
    objects = staged(jobdir, {"a": b"data"})
    feed = feeder(jobdir, objects)
    feed.start()
    feed.stop(timeout=30)
    assert not feed.thread.is_alive()
    assert (feed.outcome, feed.error, feed.written) == ("not opened", None, 0)
    assert [e["kind"] for e in events(jobdir)] == ["pipe_unread"]


def test_a_reader_that_stops_reading_is_cut_off_by_stop(jobdir: JobDir) -> None:
    """The pipe is full and the reader is stuck: `stop` still ends the writer (non-blocking writes)."""
    objects = staged(jobdir, {"big": os.urandom(8 * CHUNK)})
    feed = feeder(jobdir, objects)
    feed.start()
    fd = os.open(jobdir.host_path(FIFO), os.O_RDONLY)  # opened, never read
    try:
        feed.stop(timeout=30)
        assert not feed.thread.is_alive()
        assert feed.outcome == "stopped" and feed.error is None
    finally:
        os.close(fd)


def test_a_leftover_that_is_not_a_fifo_is_refused(jobdir: JobDir) -> None:
    Path(jobdir.host_path(FIFO)).write_text("a regular file")
    with pytest.raises(PipeFailed, match="exists and is not a named pipe"):
        feeder(jobdir, ())


# -- S3 objects, from a real endpoint -------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    moto = start_moto_server("127.0.0.1")
    yield moto
    moto.stop()


def s3_task(server: MotoServer, pipes: list[dict[str, Any]]) -> Any:
    s3 = {
        "endpoint_url": server.endpoint_url,
        "region": "us-east-1",
        "credentials": {"access_key_id": "testing", "secret_access_key": "testing"},
    }
    return parse_task(task_doc(s3=s3, pipes=pipes))


def test_s3_objects_stream_gunzipped_and_a_missing_key_is_named(server: MotoServer, jobdir: JobDir) -> None:
    """Two Pipe inputs from S3: one Gzip, whole; one naming a key that is gone, which fails as File mode's would."""
    client = server.client()
    client.create_bucket(Bucket="pipes")
    rows = b"".join(b"%d,%d\n" % (i, i * i) for i in range(50000))
    client.put_object(Bucket="pipes", Key="in/a.csv.gz", Body=gzip.compress(rows[:1000]))
    client.put_object(Bucket="pipes", Key="in/b weird%20name?.csv.gz", Body=gzip.compress(rows[1000:]))
    os.makedirs(jobdir.host_path("/opt/ml/processing/other"))
    sizes = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket="pipes")["Contents"]}
    task = s3_task(
        server,
        [
            {
                "name": "in",
                "path": FIFO,
                "gzip": True,
                "staged": None,
                "objects": [[f"s3://pipes/{k}", s] for k, s in sorted(sizes.items())],
            },
            {
                "name": "other",
                "path": "/opt/ml/processing/other_0",
                "gzip": False,
                "staged": None,
                "objects": [["s3://pipes/in/missing.csv", 3]],
            },
        ],
    )
    pipes = Pipes(jobdir, task, EventLog(jobdir.events))
    pipes.start()
    reader = Reader(jobdir.host_path(FIFO))
    other = os.open(jobdir.host_path("/opt/ml/processing/other_0"), os.O_RDONLY)
    try:
        reader.join()
        assert reader.eof and bytes(reader.data) == rows
        pipes.feeders[1].thread.join(30)
        failure = pipes.failure()
        assert failure is not None and failure.client_error
        assert str(failure).startswith("input other: s3://pipes/in/missing.csv: NoSuchKey")
        failed, outcomes = pipes.stop()
        assert failed is failure
        assert outcomes == [f"in: complete ({len(rows)} bytes)", "other: failed (0 bytes)"]
    finally:
        os.close(other)


# -- the task's pipes, as the agent reads them -------------------------------------


@pytest.mark.parametrize(
    ("pipe", "field", "problem"),
    [
        ({"path": "/opt/ml/config/x_0"}, "task.pipes[0].path", "is outside /opt/ml/processing/"),
        ({"path": "/opt/ml/processing/../config_0"}, "task.pipes[0].path", "is outside /opt/ml/processing/"),
        ({"staged": "/opt/ml/processing/in"}, "task.pipes[0].staged", "is not under /opt/ml/.distproc-pipe"),
        ({"objects": [["../../task.json", 3]]}, "task.pipes[0].objects[0]", "leaves its staging folder"),
        ({"objects": [["/etc/passwd", 3]]}, "task.pipes[0].objects[0]", "leaves its staging folder"),
        ({"objects": [["a", -1]]}, "task.pipes[0].objects[0]", "must be a [source, size] pair"),
        ({"gzip": "yes"}, "task.pipes[0].gzip", "must be true or false"),
    ],
)
def test_a_pipe_the_agent_would_not_keep_in_its_folders_is_refused(
    pipe: dict[str, Any], field: str, problem: str
) -> None:
    from distproc.agent.task import TaskError

    doc = {"name": "in", "path": FIFO, "gzip": False, "staged": STAGED, "objects": [["a", 1]], **pipe}
    with pytest.raises(TaskError, match=re.escape(field) + ": .*" + re.escape(problem)):
        parse_task(task_doc(pipes=[doc]))


def test_pipe_staging_lies_outside_the_folder_the_container_mounts(tmp_path: Path) -> None:
    """file:// Pipe data is unpacked next to ml/ (mounted at /opt/ml), not in it, and cleanup removes it."""
    jobdir = JobDir(str(tmp_path / "job"))
    assert jobdir.host_path(STAGED) == str(tmp_path / "job" / "pipe-data" / "0")
    assert not jobdir.host_path(STAGED).startswith(jobdir.ml)
    assert jobdir.host_path(FIFO) == str(tmp_path / "job" / "ml" / "processing" / "in_0")
    assert jobdir.pipe_data in jobdir.data
