"""What `describe` and `list` show: DescribeProcessingJob-shaped documents
and their human-readable forms, built from job-store records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .store import JobRecord

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
)


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def describe_document(job: JobRecord) -> dict[str, Any]:
    """DescribeProcessingJob's response shape, plus distproc's per-host details."""
    doc: dict[str, Any] = {"ProcessingJobName": job.name, "ProcessingJobArn": job.arn}
    for key in _ECHOED:
        if key in job.request:
            doc[key] = job.request[key]
    doc.update(
        ProcessingJobStatus=job.status,
        ExitMessage=job.exit_message,
        FailureReason=job.failure_reason,
        CreationTime=iso(job.creation_time),
        ProcessingStartTime=iso(job.start_time),
        ProcessingEndTime=iso(job.end_time),
        LastModifiedTime=iso(job.last_modified),
    )
    doc["Distproc"] = {
        "StopReason": job.stop_reason,
        "StopRequested": job.stop_requested,
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
            }
            for h in job.hosts
        ],
    }
    return doc


def summary_document(job: JobRecord) -> dict[str, Any]:
    """One ProcessingJobSummary, as ListProcessingJobs gives it."""
    return {
        "ProcessingJobName": job.name,
        "ProcessingJobArn": job.arn,
        "CreationTime": iso(job.creation_time),
        "ProcessingEndTime": iso(job.end_time),
        "LastModifiedTime": iso(job.last_modified),
        "ProcessingJobStatus": job.status,
        "FailureReason": job.failure_reason,
        "ExitMessage": job.exit_message,
    }


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
