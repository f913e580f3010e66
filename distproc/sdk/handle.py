"""A processing job (``processor.latest_job``, or one found by name or ARN), as the
SDK's ``sagemaker.processing.ProcessingJob``: describe, wait, stop, logs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DistprocError, JobNotFoundError, SpecError, UnexpectedStatusError, Violation
from ..inventory import Host
from ..run.control import print_logs, stop_job
from ..run.options import RunOptions
from ..run.outcome import JobOutcome, JobStatus
from ..run.runner import JobRunner
from ..spec import JobSpec
from ..store.db import ListQuery, Store
from ..store.timeline import job_timeline
from ..store.views import describe_document

T = TypeVar("T")
STOP_REASON = "stopped by request (ProcessingJob.stop)"
ENDED = ("Completed", "Failed", "Stopped")
#: How often ``wait`` reads the job store for a job another process coordinates.
POLL_SECONDS = 0.5
_ARN_MARK = ":processing-job/"


def _with_store(home: Path, work: Callable[[Store], T]) -> T:
    """``work`` with a Store of the calling thread's own: sqlite connections stay in their thread."""
    store = Store(home)
    try:
        return work(store)
    finally:
        store.close()


def _in_thread(work: Callable[[], T]) -> T:
    """``work()`` in a fresh thread: asyncio.run there works even when this thread has a running loop (Jupyter)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=target, name="distproc-call")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class ProcessingJob:
    """A processing job, as the SDK's ``sagemaker.processing.ProcessingJob``.

    A processor's ``latest_job`` runs in a thread of this process (its own
    asyncio loop, its own job store connection), which is the job's
    coordinator: the process must stay alive until the job ends (Python waits
    for it at exit). ``from_processing_name`` / ``from_processing_arn`` find a
    job in the job store (started by ``distproc run`` or another process);
    ``wait`` then follows the store. ``describe``, ``logs`` and ``stop`` read
    and act through the job store, as the CLI does.
    """

    def __init__(self, job_name: str, home: Path) -> None:
        self.job_name = job_name
        self.home = home
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: JobRunner | None = None
        self._running = False
        self._recorded = threading.Event()
        self._created = False
        self._outcome: JobOutcome | None = None
        self._error: BaseException | None = None
        self._live_logs = False

    @property
    def name(self) -> str:
        return self.job_name

    @classmethod
    def from_processing_name(cls, sagemaker_session: Any = None, processing_job_name: str = "") -> ProcessingJob:
        """The job of that name in the session's job store (JobNotFoundError if there is none), as the SDK's."""
        home = _session_home(sagemaker_session)
        _with_store(home, lambda s: s.get_job(processing_job_name))
        return cls(processing_job_name, home)

    @classmethod
    def from_processing_arn(cls, sagemaker_session: Any = None, processing_job_arn: str = "") -> ProcessingJob:
        """The job with that ARN (``arn:aws:sagemaker:local:000000000000:processing-job/NAME``), as the SDK's."""
        home = _session_home(sagemaker_session)
        if not isinstance(processing_job_arn, str) or _ARN_MARK not in processing_job_arn:
            rule = f"not a processing job ARN (...{_ARN_MARK}NAME): {processing_job_arn!r}"
            raise SpecError([Violation("processing_job_arn", rule)], source="processing arguments")
        lowered = processing_job_arn.split(_ARN_MARK, 1)[1]

        def find(store: Store) -> str:
            # The ARN has the name lowercased, as SageMaker's: look among the names that contain it.
            token: str | None = None
            while True:
                page = store.list_page(ListQuery(name_contains=lowered), next_token=token)
                for record in page.jobs:
                    if record.arn == processing_job_arn:
                        return record.name
                if page.next_token is None:
                    raise JobNotFoundError(lowered)
                token = page.next_token

        return cls(_with_store(home, find), home)

    def describe(self) -> dict[str, Any]:
        """The DescribeProcessingJob-shaped document ``distproc describe NAME --json`` prints."""
        name = self.job_name
        return _with_store(
            self.home, lambda s: describe_document(s.get_job(name), job_timeline(s.events(name)), s.metrics(name))
        )

    def logs(self, host: str | None = None, follow: bool = False) -> None:
        """Print the container output (``[algo-K] line``), as ``distproc logs``; ``follow`` until the job ends."""
        _with_store(self.home, lambda s: print_logs(s, self.job_name, host, follow, sys.stdout))

    def stop(self) -> None:
        """Ask the job to stop (SIGINT, grace period, SIGKILL on every host); returns at once, as the SDK's."""
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(self._stop_in_loop, STOP_REASON)
                return
            except RuntimeError:
                pass  # the loop has just closed: the job ended; the store says how
        # Not running here (or no longer): the same path as `distproc stop`, which refuses an ended job.
        _in_thread(lambda: _with_store(self.home, lambda s: asyncio.run(stop_job(s, self.job_name, STOP_REASON))))

    def wait(self, logs: bool = True) -> JobOutcome | None:
        """Return when the job has ended, printing its output if ``logs`` (and it was not printed live).

        Raises UnexpectedStatusError if the job Failed (not if it was Stopped),
        as the SDK does. Ctrl-C while waiting stops the job, waits for the stop
        to finish (containers ended, outputs fetched) and raises KeyboardInterrupt.
        The outcome of a job run here; None for one coordinated elsewhere
        (``from_processing_name``), whose end is read from the job store.
        """
        thread = self._thread
        if thread is None:
            self._wait_in_store(logs)
            return None
        try:
            if logs and not self._live_logs:
                self.logs(follow=True)
            thread.join()
        except KeyboardInterrupt:
            with contextlib.suppress(DistprocError):  # it may have ended meanwhile
                self.stop()
            thread.join()
            raise
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        if self._outcome.status is JobStatus.FAILED:
            raise UnexpectedStatusError(self.job_name, self._outcome.status.value, self._outcome.failure_reason)
        return self._outcome

    def _wait_in_store(self, logs: bool) -> None:
        """Wait for a job another process coordinates: its status in the job store is the only signal."""
        if logs:
            self.logs(follow=True)  # returns when the job has ended
        while (record := _with_store(self.home, lambda s: s.get_job(self.job_name))).status not in ENDED:
            time.sleep(POLL_SECONDS)
        if record.status == "Failed":
            raise UnexpectedStatusError(self.job_name, record.status, record.failure_reason)

    # -- the coordinator's thread ---------------------------------------------------------------

    def _start(self, job: JobSpec, hosts: tuple[Host, ...], inventory_path: str, options: RunOptions) -> None:
        """Start the job's thread; return once the job is in the store, or raise why it could not be."""
        self._live_logs = options.console is not None
        # Not a daemon: the interpreter waits for the job rather than abandon it half done.
        self._thread = threading.Thread(
            target=self._main, args=(job, hosts, inventory_path, options), name=f"distproc-{job.name}"
        )
        self._thread.start()
        self._recorded.wait()
        if not self._created:
            self._thread.join()
            assert self._error is not None
            raise self._error

    def _main(self, job: JobSpec, hosts: tuple[Host, ...], inventory_path: str, options: RunOptions) -> None:
        handle = self

        class RecordingStore(Store):
            def create_job(self, *args: Any, **kwargs: Any) -> None:
                super().create_job(*args, **kwargs)
                handle._created = True
                handle._recorded.set()

        async def main(store: Store) -> JobOutcome:
            self._loop = asyncio.get_running_loop()
            self._runner = JobRunner(job, hosts, store, inventory_path, options)
            self._running = True
            try:
                return await self._runner.run()
            finally:
                self._running = False

        store: Store | None = None
        try:
            store = RecordingStore(self.home)
            self._outcome = asyncio.run(main(store))
        except BaseException as exc:  # handed to run() or wait()
            self._error = exc
        finally:
            if store is not None:
                store.close()
            self._recorded.set()

    def _stop_in_loop(self, reason: str) -> None:
        # On the loop's thread, so it cannot race the end of the run: a job that ended stays as it ended.
        if self._running and self._runner is not None:
            self._runner.request_stop(reason)


#: The name this class had before it took the SDK's.
JobHandle = ProcessingJob


def _session_home(session: Any) -> Path:
    """The job store of a distproc Session (None: a ``Session()`` from the environment and defaults)."""
    from .session import Session

    if session is None:
        session = Session()
    if not isinstance(session, Session):
        rule = f"must be a distproc.Session or None (got {type(session).__name__})"
        raise SpecError([Violation("sagemaker_session", rule)], source="processing arguments")
    return session.home
