"""The end of a job: every host's outputs fetched or uploaded, then every host cleaned up.

Runs for failed and stopped jobs too: whatever a prepared host produced is
collected, and every host claimed for the job is given back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DistprocError, StagingError
from ..spec import ProcessingJob
from ..staging import is_s3_uri
from ..staging.local_files import file_uri_path
from ..store.db import Store
from .hoststate import HostState, within
from .outcome import FailureClass, HostOutcome

if TYPE_CHECKING:
    from .runner import RunOptions


class EndOfJob:
    """Outputs and cleanup for the hosts of one job (JobRunner's last two steps)."""

    def __init__(
        self,
        job: ProcessingJob,
        store: Store,
        options: RunOptions,
        log: Any,
        states: list[HostState],
        mark: Callable[..., None],
        tell_finished: Callable[[HostOutcome], None],
    ) -> None:
        self.job = job
        self.store = store
        self.options = options
        self.log = log
        self.states = states
        self.mark = mark
        self.tell_finished = tell_finished

    async def collect_outputs(self) -> None:
        """EndOfJob upload: every output of every prepared host, whatever its status."""

        window = asyncio.Semaphore(self.options.fan_out)

        async def collect(state: HostState) -> None:
            if not state.prepared or state.lost or state.cleaned_by_host:
                # A lost host's outputs cannot be fetched (its failure says why); a host
                # whose orphan timeout stopped the job has removed them (its StopReason says so).
                return
            async with window:
                self.mark(state, "upload_started")
                await self._upload_outputs(state)
                self.mark(state, "outputs_uploaded")

        await asyncio.gather(*(collect(s) for s in self.states))

    def _keep_metrics(self, state: HostState, doc: Any) -> None:
        """The host's samples, as its cleanup answered them; a host that sent none just has none."""
        if not isinstance(doc, dict):
            return
        samples = doc.get("samples")
        gpu = doc.get("gpu")
        self.store.set_metrics(
            self.job.name,
            state.assignment.algo,
            gpu if isinstance(gpu, dict) else None,
            samples if isinstance(samples, list) else [],
        )

    async def _upload_outputs(self, state: HostState) -> None:
        """EndOfJob: S3 outputs are uploaded by the host itself, file:// ones come back here."""
        if any(is_s3_uri(o.uri) for o in self.job.outputs):
            try:
                report = await state.session.upload_s3()
                self.log.info("outputs uploaded", host=state.assignment.algo, outputs=report.get("outputs"))
            except DistprocError as exc:
                client = isinstance(exc, StagingError) and exc.client_error
                self._output_failed(state, f"S3 outputs could not be uploaded: {exc}", client)
        for output in self.job.outputs:
            if is_s3_uri(output.uri):
                continue
            dest = Path(file_uri_path(output.uri))
            try:
                files, size = await state.session.pull_files(output.local_path, dest)
            except DistprocError as exc:
                self._output_failed(state, f"output {output.name} could not be fetched: {exc}", False)
                continue
            self.log.info("output saved", host=state.assignment.algo, output=output.name, files=files, bytes=size)

    def _output_failed(self, state: HostState, error: str, client_error: bool) -> None:
        a = state.assignment
        self.log.error("output failed", host=a.algo, error=error)
        prior = state.outcome
        # A job whose outputs are missing is never Completed.
        state.outcome = HostOutcome(
            algo=a.algo,
            host=a.host.name,
            status="Failed",
            exit_code=prior.exit_code if prior else None,
            ended_at=time.time(),
            message=prior.message if prior else None,
            message_valid=prior.message_valid if prior else True,
            message_problem=prior.message_problem if prior else None,
            error=error,
            error_class=(FailureClass.CLIENT if client_error else FailureClass.INTERNAL).value,
        )
        self.store.update_host(self.job.name, a.algo, status="Failed", error=error)
        self.tell_finished(state.outcome)

    async def cleanup_all(self) -> None:
        async def cleanup(state: HostState) -> None:
            if not state.prepared:
                # Cleanup releases the lease of a prepared host; this one's still needs giving back.
                try:
                    await state.session.release(self.job.name)
                except DistprocError as exc:
                    self.log.warning("could not release the host", host=state.assignment.algo, error=str(exc))
                return
            try:
                if state.lost:
                    doc = await within(
                        self._clean_lost(state), self.options.reconnect_window_seconds, state.session.transport.name
                    )
                else:
                    doc = await state.session.cleanup()
            except DistprocError as exc:
                self.log.warning("cleanup failed", host=state.assignment.algo, error=str(exc))
                return
            self._keep_metrics(state, doc.get("metrics"))
            if doc.get("problems"):
                self.log.warning("cleanup incomplete", host=state.assignment.algo, problems=doc["problems"])

        await asyncio.gather(*(cleanup(s) for s in self.states))

    async def _clean_lost(self, state: HostState) -> dict[str, Any]:
        """One more try at a host given up on: stop its container (grace as usual), then clean up."""
        await state.session.stop("lost contact with the coordinator")
        end = time.time() + self.options.stop_grace_seconds + 30
        while time.time() < end:
            answer = await state.session.status()
            if answer.get("result") is not None or not answer.get("alive"):
                break
            await asyncio.sleep(0.5)
        return await state.session.cleanup()
