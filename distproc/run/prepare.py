"""Preparing the hosts of a job: dependencies, the task, the image (--ship-image) and the inputs.

Each host is prepared on its own, at most --fan-out at once; a host with
nothing to receive is started by its prepare (the watcher follows it from
then on). A host that fails here fails the job; the others are not started.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..agent.answers import StageProgress
from ..errors import AgentError, DistprocError, ImageError, StagingError
from ..hosts.depsbundle import deps_bundle
from ..hosts.images import SavedImage, forget_saved, saved_image
from ..plan import JobPlan, host_task, pipe_staging_path
from ..staging import is_s3_uri
from .context import JobContext
from .hoststate import HostState
from .outcome import FailureClass, HostPhase
from .recorder import HostReady, StagingProgress
from .shared import shared_binds
from .watch import Watch


class Prepare:
    """The preparing of one job's hosts, with the image saved once for all of them."""

    def __init__(
        self, ctx: JobContext, plan: JobPlan, s3_settings: dict[str, dict[str, Any]], ship_image_id: str | None
    ) -> None:
        self.ctx = ctx
        self.job = ctx.job
        self.options = ctx.options
        self.store = ctx.store
        self.recorder = ctx.recorder
        self.plan = plan
        #: Each host's AWS settings for its agent, by inventory name (none: the job needs none).
        self.s3_settings = s3_settings
        # --ship-image: this machine's ID of the image; the tar, saved once a host lacks it.
        self._ship_image_id = ship_image_id
        self._saved_image: SavedImage | None = None
        #: file:// data in the nodes' shared folder (a Slurm shared_dir): bound into the containers, not copied.
        self.binds = shared_binds(self.job, ctx.backend.shared_dir)
        self._saving_image = asyncio.Lock()

    async def all(self, watch: Watch) -> None:
        """Prepare every host, at most --fan-out at once; a host that has nothing to stage starts at once."""
        plan, s3_settings = self.plan, self.s3_settings
        window = asyncio.Semaphore(self.options.fan_out)
        # boto3 for S3 jobs, pynvml for GPU hosts' metrics; hosts without either get nothing extra.
        needs_deps = bool(s3_settings) or any(s.assignment.host.gpus for s in self.ctx.states)
        deps = deps_bundle() if needs_deps else None
        stop = self.ctx.stop

        async def prepare(state: HostState) -> None:
            a = state.assignment
            async with window:
                if stop.reason is not None or stop.host_failed:
                    return
                state.move(HostPhase.PREPARING)
                self.recorder.phase(a.algo, HostPhase.PREPARING)
                sent = state.agent_sent
                try:
                    deps_dir = await state.session.install_deps(deps) if deps is not None else None
                    s3 = s3_settings.get(a.host.name)
                    task = host_task(
                        plan,
                        a,
                        self.options.stop_grace_seconds,
                        s3,
                        deps_dir,
                        self.options.metrics_interval_seconds,
                        self.options.orphan_timeout_seconds,
                    )
                    if self.binds.inputs or self.binds.outputs:
                        task = task._replace(binds=self.binds.task_binds())
                    # A host with nothing to receive starts at once (one round trip fewer); if
                    # another host then fails to prepare, it is stopped like any running host.
                    bound = self.binds.input_names()
                    launch_now = all(s.input.name in bound for s in a.inputs) and not self.options.ship_image
                    if await state.session.prepare(task, launch=launch_now) is not None:
                        watch.launched(state)
                    self.recorder.step(a.algo, "agent_ready", agent_sent=sent)
                    if self.options.ship_image:
                        await self._ship(state)
                    self.recorder.step(a.algo, "staging_started")
                    staged_files, staged_bytes = await self._stage_inputs(state)
                    self.recorder.step(a.algo, "inputs_staged", objects=staged_files, bytes=staged_bytes)
                except DistprocError as exc:
                    client = isinstance(exc, ImageError) or (isinstance(exc, StagingError) and exc.client_error)
                    self.ctx.host_failed(state, FailureClass.CLIENT if client else FailureClass.INTERNAL, str(exc))
                    return
                state.prepared = True
                self.recorder(HostReady(a.algo, a.host.name, sent, staged_files, staged_bytes))

        await asyncio.gather(*(prepare(s) for s in self.ctx.states))

    async def _stage_inputs(self, state: HostState) -> tuple[int, int]:
        """file:// shards travel from here; S3 shards are fetched by the host itself."""
        a = state.assignment
        files = size = 0
        remote: list[dict[str, Any]] = []
        bound = self.binds.input_names()
        for index, shard in enumerate(a.inputs):
            if shard.input.name in bound:
                continue  # every node sees it where it is: bound into the container (run/shared.py)
            if shard.input.input_mode == "Pipe":
                # S3 objects are streamed into the pipe by the host while the container runs
                # (agent/pipes.py); file:// ones travel now, to a folder the container does not see.
                if not is_s3_uri(shard.input.uri):
                    n, b = await state.session.push_files(pipe_staging_path(index), shard.files)
                    files, size = files + n, size + b
                continue
            if is_s3_uri(shard.input.uri):
                objects = []
                for f in shard.files:
                    bucket, key = f.source[len("s3://") :].split("/", 1)
                    objects.append({"bucket": bucket, "key": key, "size": f.size, "rel": f.relative_path})
                remote.append({"local_path": shard.input.local_path, "objects": objects})
            else:
                n, b = await state.session.push_files(shard.input.local_path, shard.files)
                files, size = files + n, size + b
        if remote:

            def progress(doc: StageProgress) -> None:
                self.recorder(StagingProgress(a.algo, doc.objects, doc.bytes))

            n, b = await state.session.stage_s3(remote, progress)
            files, size = files + n, size + b
        return files, size

    async def _ship(self, state: HostState) -> None:
        """Load this machine's image into the host's daemon, unless it has that image ID already."""
        image_id = self._ship_image_id
        assert image_id is not None, "taken by the runner before any host is prepared"
        if await state.session.image_id() == image_id:
            self.recorder.step(state.assignment.algo, "image_present", image_id=image_id)
            return
        saved = await self._saved()
        self.recorder.step(state.assignment.algo, "image_ship_started", bytes=saved.size)
        loaded = await state.session.load_image(saved.path)
        if loaded != saved.image_id:
            forget_saved(saved)
            raise AgentError(
                f"{state.assignment.host.name}: after loading the shipped image, {saved.image} is {loaded}, "
                f"not {saved.image_id}"
            )
        self.recorder.step(state.assignment.algo, "image_shipped", bytes=saved.size)

    async def _saved(self) -> SavedImage:
        """The image's tar, saved (or found saved by an earlier run) once, for every host that lacks it."""
        async with self._saving_image:
            if self._saved_image is None:
                assert self._ship_image_id is not None
                folder = self.store.home / "images"
                image, image_id = self.job.app.image_uri, self._ship_image_id
                self._saved_image = await asyncio.to_thread(saved_image, image, image_id, folder)
            return self._saved_image
