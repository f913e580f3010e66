"""`distproc attach NAME`: finish the bookkeeping of a job whose `run` died.

A coordinator killed mid-job (SIGKILL, a lost laptop) leaves the job
InProgress in the store while its agents carry on. `attach` takes the job
over, reconnects to every host, follows it to its end, uploads the outputs,
cleans up, and records the outcome, as `run` would have. The hosts are
reached through the backend the job ran on (the job store's record of it):
a Slurm job's nodes through srun steps, and its allocation is cancelled at
the end, as `run` would have. A Slurm job whose `run` died while it was still
queued is waited for (Slurm's reason shown as `run` shows it) and then run
from its allocation on, as `run` would have; one Slurm ended meanwhile is
recorded Failed with Slurm's word for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SpecError, Violation
from ..spec import parse_job
from ..store.db import JobRecord, Store

if TYPE_CHECKING:
    # Loaded by attach() only: `distproc describe` asks coordinator_alive() and
    # must not pay for the coordinator (asyncssh, boto3) to do so.
    from .options import RunOptions
    from .outcome import JobOutcome
    from .runner import JobRunner


def coordinator_alive(pid: int | None) -> bool:
    """Whether a distproc process with this pid still runs on this machine."""
    if pid is None or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"distproc" in cmdline


def check_attachable(job: JobRecord) -> None:
    if job.status not in ("InProgress", "Stopping"):
        raise SpecError(
            [Violation("ProcessingJobName", f"job {job.name!r} is {job.status}: there is nothing to attach to")],
            source="attach request",
        )
    if coordinator_alive(job.coordinator_pid):
        raise SpecError(
            [
                Violation(
                    "ProcessingJobName",
                    f"job {job.name!r} is still run by distproc pid {job.coordinator_pid}; "
                    "use `distproc logs --follow` to watch it",
                )
            ],
            source="attach request",
        )


async def attach(store: Store, name: str, options: RunOptions) -> tuple[JobRunner, JobOutcome]:
    from ..backends.records import backend_from_record
    from .runner import JobRunner

    job = store.get_job(name)
    check_attachable(job)
    backend = backend_from_record(job.backend, name)  # a damaged record: refused before the job is taken over
    # As its `run` was asked to run it (grace, windows, credentials, ...); where output goes is attach's own.
    options = options.with_recorded(job.run_options)
    # Its `run` died in the backend's queue (a Slurm job recorded, no node yet): wait for it as `run` would have.
    queued = not job.hosts and backend.queues and bool((job.backend or {}).get("slurm_job_id"))
    if not job.hosts and not queued:
        # Its `run` died before the job had hosts and before any queue held it (waiting for busy hosts,
        # or before sbatch answered): nothing waits or runs to follow.
        why = f"job {name!r} never had its hosts (its run died while waiting for them); `distproc stop {name}` ends it"
        raise SpecError([Violation("ProcessingJobName", why)], source="attach request")
    if not store.take_over(name, job.coordinator_pid):
        raise SpecError(
            [Violation("ProcessingJobName", f"another process took over job {name!r} just now")],
            source="attach request",
        )
    runner = JobRunner(parse_job(dict(job.request)), (), store, job.inventory, options, backend)
    return runner, await (runner.resume_queued() if queued else runner.resume(job))
