"""The job a processor started (``processor.latest_job``), as the SDK's
``sagemaker.processing.ProcessingJob``: describe, wait, stop, logs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DistprocError, UnexpectedStatusError
from ..inventory import Host
from ..run.control import print_logs, stop_job
from ..run.options import RunOptions
from ..run.outcome import JobOutcome, JobStatus
from ..run.runner import JobRunner
from ..spec import ProcessingJob
from ..store.db import Store
from ..store.timeline import job_timeline
from ..store.views import describe_document

T = TypeVar("T")
STOP_REASON = "stopped by request (JobHandle.stop)"


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


class JobHandle:
    """A job a processor started: its ``latest_job``, as the SDK's ``sagemaker.processing.ProcessingJob``.

    The job runs in a thread of this process (its own asyncio loop, its own
    job store connection), which is the job's coordinator: the process must
    stay alive until the job ends (Python waits for it at exit). ``describe``,
    ``logs`` and ``stop`` read and act through the job store, as the CLI does.
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

    def wait(self, logs: bool = True) -> JobOutcome:
        """Return when the job has ended, printing its output if ``logs`` (and it was not printed live).

        Raises UnexpectedStatusError if the job Failed (not if it was Stopped),
        as the SDK does. Ctrl-C while waiting stops the job, waits for the stop
        to finish (containers ended, outputs fetched) and raises KeyboardInterrupt.
        """
        thread = self._thread
        assert thread is not None, "a JobHandle is made by Processor.run"
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

    # -- the coordinator's thread ---------------------------------------------------------------

    def _start(self, job: ProcessingJob, hosts: tuple[Host, ...], inventory_path: str, options: RunOptions) -> None:
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

    def _main(self, job: ProcessingJob, hosts: tuple[Host, ...], inventory_path: str, options: RunOptions) -> None:
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
