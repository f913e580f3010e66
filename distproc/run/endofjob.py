"""The end of a job: every host's outputs fetched or uploaded, then every host cleaned up.

Runs for failed and stopped jobs too: whatever a prepared host produced is
collected, and every host claimed for the job is given back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ..agent.answers import CleanupAnswer, Metrics
from ..errors import DistprocError, StagingError
from ..staging import is_s3_uri
from ..staging.local_files import file_uri_path
from .context import JobContext
from .hoststate import HostState, within
from .outcome import FailureClass, HostOutcome, HostPhase
from .recorder import HostMetrics, OutputFailed
from .shared import shared_binds


class EndOfJob:
    """Outputs and cleanup for the hosts of one job (the runner's last two steps)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.job = ctx.job
        self.options = ctx.options
        self.recorder = ctx.recorder
        self.log = ctx.recorder.log

    async def run(self) -> None:
        """Collect every host's outputs, then clean every host up."""
        await self.collect_outputs()
        await self.cleanup_all()

    async def collect_outputs(self) -> None:
        """EndOfJob upload: every output of every prepared host, whatever its status."""

        window = asyncio.Semaphore(self.options.fan_out)

        async def collect(state: HostState) -> None:
            if not state.prepared or state.lost or state.cleaned_by_host:
                # A lost host's outputs cannot be fetched (its failure says why); a host
                # whose orphan timeout stopped the job has removed them (its StopReason says so).
                return
            async with window:
                self.recorder.step(state.assignment.algo, "upload_started")
                await self._upload_outputs(state)
                self.recorder.step(state.assignment.algo, "outputs_uploaded")

        await asyncio.gather(*(collect(s) for s in self.ctx.states))

    def _keep_metrics(self, state: HostState, metrics: Metrics) -> None:
        """The host's samples, as its cleanup answered them; a host that sent none just has none."""
        self.recorder(HostMetrics(state.assignment.algo, metrics.gpu, metrics.samples))

    async def _upload_outputs(self, state: HostState) -> None:
        """EndOfJob: S3 outputs are uploaded by the host itself, file:// ones come back here."""
        if any(is_s3_uri(o.uri) for o in self.job.outputs):
            try:
                report = await state.session.upload_s3()
                self.log.info("outputs uploaded", host=state.assignment.algo, outputs=report.report())
            except DistprocError as exc:
                client = isinstance(exc, StagingError) and exc.client_error
                self._output_failed(state, f"S3 outputs could not be uploaded: {exc}", client)
        bound = shared_binds(self.job, self.ctx.backend.shared_dir).output_names()
        for output in self.job.outputs:
            if is_s3_uri(output.uri) or output.name in bound:
                continue  # S3: uploaded by the host; bound: written in place by the container (run/shared.py)
            dest = Path(file_uri_path(output.uri))
            try:
                files, size = await state.session.pull_files(output.local_path, dest)
            except DistprocError as exc:
                self._output_failed(state, f"output {output.name} could not be fetched: {exc}", False)
                continue
            self.log.info("output saved", host=state.assignment.algo, output=output.name, files=files, bytes=size)

    def _output_failed(self, state: HostState, error: str, client_error: bool) -> None:
        a = state.assignment
        prior = state.outcome
        # A job whose outputs are missing is never Completed.
        outcome = state.end(
            HostOutcome(
                algo=a.algo,
                host=a.host.name,
                status=HostPhase.FAILED,
                exit_code=prior.exit_code if prior else None,
                ended_at=time.time(),
                message=prior.message if prior else None,
                message_valid=prior.message_valid if prior else True,
                message_problem=prior.message_problem if prior else None,
                error=error,
                error_class=(FailureClass.CLIENT if client_error else FailureClass.INTERNAL).value,
            )
        )
        self.recorder(OutputFailed(outcome))

    async def cleanup_all(self) -> None:
        async def cleanup(state: HostState) -> None:
            if not state.prepared:
                # Cleanup releases the lease of a prepared host; this one's still needs giving back.
                try:
                    await self.ctx.backend.release(self.job.name, state.session)
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
            self._keep_metrics(state, doc.metrics)
            if doc.problems:
                self.log.warning("cleanup incomplete", host=state.assignment.algo, problems=list(doc.problems))

        await asyncio.gather(*(cleanup(s) for s in self.ctx.states))

    async def _clean_lost(self, state: HostState) -> CleanupAnswer:
        """One more try at a host given up on: stop its container (grace as usual), then clean up."""
        await state.session.stop("lost contact with the coordinator")
        end = time.time() + self.options.stop_grace_seconds + 30
        while time.time() < end:
            answer = await state.session.status()
            if answer.finished or not answer.alive:
                break
            await asyncio.sleep(0.5)
        return await state.session.cleanup()
