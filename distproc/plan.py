"""The plan of a job: which host is algo-K, what data each gets, what it is told.

Pure functions over typed values: no I/O, so the rules (names, shard
assignment, the documents each container sees) are tested with plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

from .agent.protocol import PIPE_STAGING_ROOT, DockerAccess, HostTask, OutputSpec, PipeSpec
from .inventory import Host
from .spec import JobSpec, ProcessingInput, pipe_path, processing_job_config
from .staging import is_s3_uri
from .userfiles import inside

T = TypeVar("T")

DEFAULT_STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input object: where it is read from and where it lands under LocalPath."""

    source: str
    relative_path: str
    size: int


@dataclass(frozen=True, slots=True)
class InputShard:
    """The part of one input that one host receives."""

    input: ProcessingInput
    files: tuple[SourceFile, ...]


@dataclass(frozen=True, slots=True)
class HostAssignment:
    algo: str
    host: Host
    job_dir: str
    inputs: tuple[InputShard, ...]


@dataclass(frozen=True, slots=True)
class JobPlan:
    job: JobSpec
    arn: str
    assignments: tuple[HostAssignment, ...]

    @property
    def algos(self) -> tuple[str, ...]:
        return tuple(a.algo for a in self.assignments)


def algo_names(count: int) -> tuple[str, ...]:
    """algo-1 .. algo-N, in numeric order (not string order: algo-10 comes after algo-9)."""
    return tuple(f"algo-{k}" for k in range(1, count + 1))


def shard(items: Sequence[T], count: int, key: Any = None) -> tuple[tuple[T, ...], ...]:
    """Deal items to `count` hosts, sorted by key, round robin.

    Host k (0-based) gets items k, k+n, k+2n, ... of the sorted list: every
    host gets floor or ceil of len/n items, the rule is easy to predict, and
    with fewer items than hosts the last hosts get none (an empty folder).
    """
    ordered = sorted(items, key=key) if key is not None else sorted(items)  # type: ignore[type-var]
    return tuple(tuple(ordered[k::count]) for k in range(count))


def job_dir(host: Host, job_name: str, algo: str) -> str:
    """``<work_dir>/jobs/<job>/<algo-K>`` on the host; a job name that is no plain name is refused."""
    inside(PurePosixPath(host.work_dir, "jobs"), job_name, algo, what="job or host name")
    return f"{host.work_dir.rstrip('/')}/jobs/{job_name}/{algo}"


def build_plan(
    job: JobSpec,
    arn: str,
    hosts: Sequence[Host],
    listings: Mapping[str, Sequence[SourceFile]],
) -> JobPlan:
    """Assign algo-K names to the selected hosts and each host its input files."""
    names = algo_names(len(hosts))
    per_host: list[list[InputShard]] = [[] for _ in hosts]
    for item in job.inputs:
        files = tuple(listings.get(item.name, ()))
        if item.distribution == "ShardedByS3Key":
            parts = shard(files, len(hosts), key=lambda f: f.relative_path)
        else:
            parts = tuple(files for _ in hosts)
        for index, part in enumerate(parts):
            per_host[index].append(InputShard(input=item, files=part))
    assignments = tuple(
        HostAssignment(
            algo=name,
            host=host,
            job_dir=job_dir(host, job.name, name),
            inputs=tuple(per_host[index]),
        )
        for index, (name, host) in enumerate(zip(names, hosts, strict=True))
    )
    return JobPlan(job=job, arn=arn, assignments=assignments)


def resource_config(plan: JobPlan, assignment: HostAssignment) -> dict[str, Any]:
    """/opt/ml/config/resourceconfig.json for one host."""
    return {
        "current_host": assignment.algo,
        "hosts": list(plan.algos),
        # Read by the SageMaker training toolkit; harmless elsewhere. The agent
        # fills in the interface, since only the host knows its names.
        "current_instance_type": plan.job.cluster.instance_type,
        "network_interface_name": None,
    }


def pipe_staging_path(index: int) -> str:
    """Where the file:// files of the job's input number `index` (Pipe mode) are unpacked on a host."""
    return f"{PIPE_STAGING_ROOT}/{index}"


def pipe_specs(assignment: HostAssignment) -> tuple[PipeSpec, ...]:
    """The host's Pipe inputs: each named pipe and its objects, in key order (docs/staging.md)."""
    out = []
    for index, part in enumerate(assignment.inputs):
        item = part.input
        if item.input_mode != "Pipe":
            continue
        files = sorted(part.files, key=lambda f: f.relative_path)
        s3 = is_s3_uri(item.uri)
        out.append(
            PipeSpec(
                name=item.name,
                path=pipe_path(item.local_path),
                gzip=item.compression == "Gzip",
                staged=None if s3 else pipe_staging_path(index),
                # S3 objects are fetched by the host; file:// ones were unpacked under their relative path.
                objects=tuple((f.source if s3 else f.relative_path, f.size) for f in files),
            )
        )
    return tuple(out)


def host_task(
    plan: JobPlan,
    assignment: HostAssignment,
    stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
    s3: dict[str, Any] | None = None,
    deps_dir: str | None = None,
    metrics_interval_seconds: float = 5.0,
    orphan_timeout_seconds: float = 0.0,
) -> HostTask:
    """The task the agent on this host runs (agent/protocol.py; `to_doc()` is what travels).

    `s3` (region, endpoint_url, forwarded credentials) is why the document
    is written 0600 and removed at cleanup.
    """
    job = plan.job
    host = assignment.host
    local_paths = [i.local_path for i in job.inputs] + [o.local_path for o in job.outputs]
    return HostTask(
        job_name=job.name,
        algo=assignment.algo,
        hosts=plan.algos,
        add_hosts=tuple((a.algo, a.host.private_address or a.host.address) for a in plan.assignments),
        image=job.app.image_uri,
        entrypoint=tuple(job.app.entrypoint) if job.app.entrypoint else None,
        arguments=tuple(job.app.arguments) if job.app.arguments else None,
        environment=tuple((k, v) for k, v in job.environment),
        resource_config=resource_config(plan, assignment),
        processing_job_config=processing_job_config(job, plan.arn),
        local_paths=tuple(local_paths),
        docker=DockerAccess(tuple(host.docker_command), host.docker_host),
        gpus=host.gpus,
        gpu_mode=host.gpu_mode,
        memory_limit_bytes=host.memory_limit_bytes,
        max_runtime_seconds=job.max_runtime_seconds,
        stop_grace_seconds=stop_grace_seconds,
        outputs=tuple(OutputSpec(o.name, o.local_path, o.uri, o.upload_mode) for o in job.outputs),
        s3=s3,
        deps_dir=deps_dir,
        metrics_interval_seconds=metrics_interval_seconds,
        orphan_timeout_seconds=orphan_timeout_seconds,
        pipes=pipe_specs(assignment),
    )
