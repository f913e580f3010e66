"""What `describe` and `list` show: DescribeProcessingJob-shaped documents
and their human-readable forms, built from job-store records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .db import JobRecord
from .metrics import summarize
from .timeline import PHASE_NAMES, Phase, timeline_document

#: algo-K -> (the agent's GPU note, metric samples), as Store.metrics gives it.
MetricsByHost = dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]]

# The request's members that DescribeProcessingJob echoes back.
_ECHOED = (
    "ProcessingInputs",
    "ProcessingOutputConfig",
    "ProcessingResources",
    "StoppingCondition",
    "AppSpecification",
    "Environment",
    "NetworkConfig",
    "RoleArn",
    "ExperimentConfig",
    # Set by SageMaker when a monitoring schedule, an AutoML job or a training job (Debugger rules)
    # started the processing job. No distproc job is started that way, so these appear only when a
    # stored request carries them (a job brought over from SageMaker).
    "MonitoringScheduleArn",
    "AutoMLJobArn",
    "TrainingJobArn",
)


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _set_only(members: dict[str, Any]) -> dict[str, Any]:
    """AWS leaves unset members out of its answers (no nulls): so do describe and list."""
    return {k: v for k, v in members.items() if v is not None}


def gpu_note(gpu: dict[str, Any] | None) -> str | None:
    """Why a host has no GPU metrics (None when it has them)."""
    if gpu is None:
        return "no metrics were fetched from this host"
    if gpu.get("available"):
        return None
    return str(gpu.get("reason") or "no GPUs")


def describe_document(
    job: JobRecord,
    timeline: dict[str, list[Phase]] | None = None,
    metrics: MetricsByHost | None = None,
    queued: Phase | None = None,
) -> dict[str, Any]:
    """DescribeProcessingJob's response shape, plus distproc's per-host details.

    ``queued``: the job's wait in its backend's queue (timeline.queue_phase), if it had one.
    """
    timeline = timeline or {}
    metrics = metrics or {}
    doc: dict[str, Any] = {"ProcessingJobName": job.name, "ProcessingJobArn": job.arn}
    for key in _ECHOED:
        if key in job.request:
            doc[key] = job.request[key]
    doc.update(
        _set_only(
            dict(
                ProcessingJobStatus=job.status,
                ExitMessage=job.exit_message,
                FailureReason=job.failure_reason,
                CreationTime=iso(job.creation_time),
                ProcessingStartTime=iso(job.start_time),
                ProcessingEndTime=iso(job.end_time),
                LastModifiedTime=iso(job.last_modified),
            )
        )
    )
    doc["Distproc"] = {
        "StopReason": job.stop_reason,
        "StopRequested": job.stop_requested,
        # While `run --wait-for-hosts` waits: what for ("waiting for 2 hosts of ...: h1 busy with job X");
        # while the job waits in Slurm's queue, Slurm's reason ("waiting for 3 nodes in partition gpu: Resources").
        "WaitingFor": job.waiting_for,
        "Backend": job.backend.get("backend", "fleet"),
        # From submission to a backend's queue (Slurm's) until the allocation (End None: still queued).
        "Queued": timeline_document([queued])[0] if queued is not None else None,
        "Inventory": job.inventory,
        "Warnings": list(job.warnings),
        "Hosts": [
            {
                "Host": h.algo,
                "InventoryHost": h.host,
                "Address": h.endpoint.get("address"),
                "Status": h.status,
                "ExitCode": h.exit_code,
                "StartTime": iso(h.start_time),
                "EndTime": iso(h.end_time),
                "ExitMessage": h.message,
                "Error": h.error,
                "JobDir": h.job_dir,
                "Timeline": timeline_document(timeline.get(h.algo, [])),
                "Metrics": summarize(metrics[h.algo][1]) if h.algo in metrics else None,
                "GpuNote": gpu_note(metrics[h.algo][0]) if h.algo in metrics else None,
            }
            for h in job.hosts
        ],
    }
    return doc


def report_document(job: JobRecord, timeline: dict[str, list[Phase]], metrics: MetricsByHost) -> dict[str, Any]:
    """What `distproc report` draws: the job, and each host's phases and raw samples."""
    return {
        "ProcessingJobName": job.name,
        "ProcessingJobStatus": job.status,
        "FailureReason": job.failure_reason,
        "ExitMessage": job.exit_message,
        "CreationTime": iso(job.creation_time),
        "ProcessingStartTime": iso(job.start_time),
        "ProcessingEndTime": iso(job.end_time),
        "Hosts": [
            {
                "Host": h.algo,
                "InventoryHost": h.host,
                "Status": h.status,
                "ExitCode": h.exit_code,
                "Timeline": timeline_document(timeline.get(h.algo, [])),
                "Metrics": metrics[h.algo][1] if h.algo in metrics else [],
                "GpuNote": gpu_note(metrics[h.algo][0] if h.algo in metrics else None),
            }
            for h in job.hosts
        ],
    }


def timeline_text(job: JobRecord, timeline: dict[str, list[Phase]]) -> str:
    """One row per host, one column per phase: seconds from the job's creation to the phase's start, and its length."""
    origin = job.creation_time
    header = f"{'HOST':<8} " + " ".join(f"{name:>20}" for name in PHASE_NAMES)
    rows = [header, " " * 9 + " ".join(f"{'start+length (s)':>20}" for _ in PHASE_NAMES)]
    for h in job.hosts:
        by_name = {p.name: p for p in timeline.get(h.algo, [])}
        cells = []
        for name in PHASE_NAMES:
            p = by_name.get(name)
            if p is None:
                cells.append(f"{'-':>20}")
            else:
                length = "…" if p.seconds is None else f"{p.seconds:.2f}"
                cells.append(f"{f'{p.start - origin:.2f}+{length}':>20}")
        rows.append(f"{h.algo:<8} " + " ".join(cells))
    return "\n".join(rows)


def summary_document(job: JobRecord) -> dict[str, Any]:
    """One ProcessingJobSummary, as ListProcessingJobs gives it (unset members left out)."""
    return _set_only(
        {
            "ProcessingJobName": job.name,
            "ProcessingJobArn": job.arn,
            "CreationTime": iso(job.creation_time),
            "ProcessingEndTime": iso(job.end_time),
            "LastModifiedTime": iso(job.last_modified),
            "ProcessingJobStatus": job.status,
            "FailureReason": job.failure_reason,
            "ExitMessage": job.exit_message,
        }
    )


def list_document(jobs: list[JobRecord], next_token: str | None) -> dict[str, Any]:
    """ListProcessingJobs' answer: the summaries, and NextToken when there are more."""
    doc: dict[str, Any] = {"ProcessingJobSummaries": [summary_document(j) for j in jobs]}
    if next_token is not None:
        doc["NextToken"] = next_token
    return doc


def _duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{end - start:.1f}s"


def describe_text(job: JobRecord) -> str:
    lines = [
        f"Job:            {job.name}",
        f"ARN:            {job.arn}",
        f"Status:         {job.status}",
    ]
    if job.failure_reason:
        lines.append(f"FailureReason:  {job.failure_reason}")
    if job.waiting_for:
        lines.append(f"WaitingFor:     {job.waiting_for}")
    if job.stop_reason:
        lines.append(f"StopReason:     {job.stop_reason}")
    if job.exit_message:
        lines.append(f"ExitMessage:    {job.exit_message}")
    lines += [
        f"Created:        {iso(job.creation_time)}",
        f"Started:        {iso(job.start_time) or '-'}",
        f"Ended:          {iso(job.end_time) or '-'}",
        f"Image:          {job.request.get('AppSpecification', {}).get('ImageUri', '-')}",
    ]
    for warning in job.warnings:
        lines.append(f"Warning:        {warning}")
    if job.hosts:
        lines.append("Hosts:")
        width = max(len(h.host) for h in job.hosts)
        for h in job.hosts:
            code = "-" if h.exit_code is None else str(h.exit_code)
            line = (
                f"  {h.algo:<8} {h.host:<{width}}  {h.status:<10} exit {code:<4}"
                f" {_duration(h.start_time, h.end_time):>8}"
            )
            if h.error:
                line += f"  {h.error}"
            lines.append(line)
    return "\n".join(lines)


def list_text(jobs: list[JobRecord]) -> str:
    if not jobs:
        return "no jobs"
    width = max(len(j.name) for j in jobs)
    rows = [f"{'NAME':<{width}}  {'STATUS':<10}  {'HOSTS':>5}  CREATED"]
    for j in jobs:
        rows.append(f"{j.name:<{width}}  {j.status:<10}  {len(j.hosts):>5}  {iso(j.creation_time)}")
    return "\n".join(rows)
