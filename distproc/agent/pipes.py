"""Pipe mode inputs: one named pipe per input, fed while the container runs.

Each Pipe input gets a FIFO at <LocalPath>_0 (docs/contract.md says why that
path) before the container starts. A thread per pipe waits for the container
to open it for reading, then writes the host's objects into it one after the
other, in the order the task lists them (key order), gunzipped on the way
when the input says Gzip, and closes it: the reader sees every byte, then EOF.

Memory stays bounded: objects are read and written in chunks of CHUNK bytes,
and gzip output is drawn CHUNK bytes at a time however well the input
compresses. Nothing blocks for ever: the pipe is opened and written without
blocking, so a reader that never opens it or stops reading holds the thread
only until `stop` (the container's exit); a reader that closes early ends the
feed (EPIPE), which is the container's choice, not an error. A source that
fails (a missing object, bad gzip, an S3 error) is an error: the pipe is then
left open, not closed, so that the reader never takes a cut stream for the
whole, and the runner stops the container (runner._ContainerWatch).

Imported by the runner only for jobs with Pipe inputs; standard library only,
boto3 (shipped by the coordinator) only for S3 objects.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
import zlib
from typing import Callable, Iterator, List, Optional, Tuple

from .files import EventLog
from .task import HostTask, JobDir, PipeSpec, TaskError

CHUNK = 256 * 1024
# How often a pipe nobody opened yet is tried again, and a full one looked at.
POLL_SECONDS = 0.05
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class PipeFailed(Exception):
    """A source could not be streamed; the message names the input and the object."""

    def __init__(self, message: str, client_error: bool = True) -> None:
        self.client_error = client_error
        super().__init__(message)


class _Stopped(Exception):
    """`stop` was asked for while the feed was still going."""


class _ReaderGone(Exception):
    """The reader closed its end (EPIPE)."""


class Source:
    """One object's bytes, read in chunks; `size` is what the listing said it holds."""

    def __init__(self, label: str, size: int, read: Callable[[int], bytes], close: Callable[[], None]) -> None:
        self.label = label
        self.size = size
        self.read = read
        self.close = close


Opener = Callable[[PipeSpec, str, int], Source]


def make_fifo(path: str) -> None:
    """A fresh FIFO at `path`, readable by any user in the container (only the agent writes)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISFIFO(os.lstat(path).st_mode):
            raise PipeFailed("{} exists and is not a named pipe".format(path), client_error=False)
        os.unlink(path)
    os.mkfifo(path, 0o644)
    os.chmod(path, 0o644)  # mkfifo's mode is cut by the umask


def gunzip(read: Callable[[int], bytes], label: str) -> Iterator[bytes]:
    """The decompressed bytes of a gzip stream (several members too, as `gzip -d` reads them), CHUNK at a time."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    fed = False  # whether the current member has had any input
    pending = b""
    try:
        while True:
            if not pending:
                pending = read(CHUNK)
                if not pending:
                    break
            fed = True
            out = inflater.decompress(pending, CHUNK)
            pending = inflater.unconsumed_tail
            if out:
                yield out
            if inflater.eof:
                # Another member may follow (cat a.gz b.gz): start over on what is left.
                pending = inflater.unused_data + pending
                inflater = zlib.decompressobj(_GZIP_WBITS)
                fed = False
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise PipeFailed("{} is not valid gzip data ({})".format(label, exc)) from exc
    if fed and not inflater.eof:
        raise PipeFailed("{} ends inside its gzip data (truncated)".format(label))


def _raw(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while True:
        data = read(CHUNK)
        if not data:
            return
        yield data


class _Counted:
    """A source's read, counting the bytes so that a short or long object is noticed."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.count = 0

    def read(self, n: int) -> bytes:
        data = self.source.read(n)
        self.count += len(data)
        return data


class Feeder:
    """One named pipe and the thread that fills it."""

    def __init__(self, spec: PipeSpec, fifo: str, open_source: Opener, events: EventLog) -> None:
        self.spec = spec
        self.fifo = fifo
        self.open_source = open_source
        self.events = events
        self.stopping = threading.Event()
        self.error: Optional[PipeFailed] = None
        self.outcome = "not opened"
        self.written = 0
        self._fd: Optional[int] = None
        make_fifo(fifo)
        self.thread = threading.Thread(target=self._run, name="pipe-" + spec.name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the feed (the container has exited): the thread closes the pipe and ends."""
        self.stopping.set()
        self.thread.join(timeout)
        if not self.thread.is_alive() and self._fd is not None:
            # A failed feed kept the pipe open until now (see the module's docstring).
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        self._fd = self._open()
        if self._fd is None:
            if self.error is None:
                self.events.emit("pipe_unread", input=self.spec.name, path=self.spec.path)
            return
        self.outcome = "opened"
        self.events.emit("pipe_opened", input=self.spec.name, path=self.spec.path)
        try:
            for source, size in self.spec.objects:
                self._feed(source, size)
            self.outcome = "complete"
        except _ReaderGone:
            self.outcome = "closed by reader"
        except _Stopped:
            self.outcome = "stopped"
        except Exception as exc:  # a source's failure, or the feed's own: the job fails, named, never hangs
            failed = (
                exc
                if isinstance(exc, PipeFailed)
                else PipeFailed("input {}: {}".format(self.spec.name, exc), client_error=False)
            )
            self.error = failed
            self.outcome = "failed"
            # The pipe stays open (no EOF for a cut stream); `stop` closes it once the reader is stopped.
            self.events.emit("pipe_failed", input=self.spec.name, error=str(failed), bytes=self.written)
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # the reader's EOF
        self.events.emit("pipe_closed", input=self.spec.name, outcome=self.outcome, bytes=self.written)

    def _open(self) -> Optional[int]:
        """The pipe's write end once a reader has opened it; None if stopped first.

        O_NONBLOCK: an open for writing with no reader fails at once (ENXIO)
        instead of blocking for ever, and writes never block past a stop.
        """
        while True:
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    self.error = PipeFailed("cannot open {}: {}".format(self.spec.path, exc), client_error=False)
                    self.outcome = "failed"
                    self.events.emit("pipe_failed", input=self.spec.name, error=str(self.error))
                    return None
            if self.stopping.wait(POLL_SECONDS):
                return None

    def _feed(self, source: str, size: int) -> None:
        label = "input {}: {}".format(self.spec.name, source)
        opened = self.open_source(self.spec, source, size)
        try:
            counted = _Counted(opened)
            for data in gunzip(counted.read, label) if self.spec.gzip else _raw(counted.read):
                self._write(data)
        finally:
            opened.close()
        if counted.count != size:
            raise PipeFailed(
                "{} is {} bytes, not the {} it was listed with (changed while the job ran)".format(
                    label, counted.count, size
                )
            )

    def _write(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        while view:
            if self.stopping.is_set():
                raise _Stopped()
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                # Full: wait for the reader to make room, looking at `stopping` now and then.
                select.select([], [fd], [], POLL_SECONDS)
                continue
            except BrokenPipeError:
                raise _ReaderGone() from None
            view = view[n:]
            self.written += n


def file_opener(jobdir: JobDir) -> Opener:
    """Sources of file:// inputs: the files the coordinator unpacked under each pipe's staging folder."""

    def open_source(spec: PipeSpec, source: str, size: int) -> Source:
        label = "input {}: {}".format(spec.name, source)
        if spec.staged is None:
            raise PipeFailed("{}: no staging folder for a file:// object".format(label), client_error=False)
        base = os.path.realpath(jobdir.host_path(spec.staged))
        path = os.path.join(base, source)
        if os.path.commonpath([base, os.path.realpath(path)]) != base:
            raise PipeFailed("{} leads outside its staging folder".format(label))
        try:
            # No links: the coordinator sent regular files only (local_files.list_prefix).
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise PipeFailed("{}: cannot read the staged file: {}".format(label, exc.strerror)) from exc
        fh = os.fdopen(fd, "rb")
        return Source(label, size, fh.read, fh.close)

    return open_source


def s3_opener(task: HostTask) -> Opener:
    """Sources of S3 inputs: GET each object and read its body as it comes."""
    from . import staging  # puts the shipped boto3 on sys.path

    s3 = staging._s3(task)
    client = s3.make_client(dict(task.s3 or {}))

    def open_source(spec: PipeSpec, source: str, size: int) -> Source:
        label = "input {}: {}".format(spec.name, source)
        # The coordinator's listing names objects s3://bucket/key with the key as it is (not URL-quoted).
        bucket, _, key = source[len("s3://") :].partition("/") if source.startswith("s3://") else ("", "", "")
        if not bucket or not key:
            raise PipeFailed("{}: not an s3://bucket/key object".format(label), client_error=False)
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:  # botocore's errors: named by their code, classed as File mode's are
            err = s3._error(exc, bucket, key)
            raise PipeFailed("input {}: {}".format(spec.name, err), client_error=err.client_error) from exc

        def read(n: int) -> bytes:
            try:
                data: bytes = body.read(n)
            except Exception as exc:  # a connection lost mid-object is the platform's, not the job's
                err = s3._error(exc, bucket, key)
                raise PipeFailed("input {}: {}".format(spec.name, err), client_error=False) from exc
            return data

        return Source(label, size, read, body.close)

    return open_source


class Pipes:
    """Every Pipe input of the task: the FIFOs made now, fed from `start` until `stop`."""

    def __init__(self, jobdir: JobDir, task: HostTask, events: EventLog) -> None:
        self.feeders: List[Feeder] = []
        files = file_opener(jobdir)
        s3: Optional[Opener] = None
        if any(spec.staged is None and spec.objects for spec in task.pipes):
            s3 = s3_opener(task)

        def open_source(spec: PipeSpec, source: str, size: int) -> Source:
            if spec.staged is not None:
                return files(spec, source, size)
            assert s3 is not None
            return s3(spec, source, size)

        for spec in task.pipes:
            try:
                fifo = jobdir.host_path(spec.path)
            except TaskError as exc:
                raise PipeFailed("input {}: {}".format(spec.name, exc), client_error=False) from exc
            self.feeders.append(Feeder(spec, fifo, open_source, events))

    def start(self) -> None:
        for feeder in self.feeders:
            feeder.start()

    def failure(self) -> Optional[PipeFailed]:
        """The first feed that failed, if any (the container is then stopped)."""
        for feeder in self.feeders:
            if feeder.error is not None:
                return feeder.error
        return None

    def stop(self, timeout: float = 10.0) -> Tuple[Optional[PipeFailed], List[str]]:
        """Stop every feed; (the first failure, each pipe's outcome) once they ended."""
        for feeder in self.feeders:
            feeder.stopping.set()
        for feeder in self.feeders:
            feeder.stop(timeout)
        outcomes = ["{}: {} ({} bytes)".format(f.spec.name, f.outcome, f.written) for f in self.feeders]
        return self.failure(), outcomes


__all__ = ["CHUNK", "Feeder", "PipeFailed", "Pipes", "Source", "file_opener", "gunzip", "make_fifo", "s3_opener"]
