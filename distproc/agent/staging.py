"""S3 staging on the host: inputs down, outputs up, continuous uploads.

boto3 is not part of the agent: the coordinator ships it (depsbundle) into a
folder on the host, named in the task, which is put on sys.path only here.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict, List, Tuple

from .files import EventLog, read_json, write_json_atomic
from .task import HostTask, JobDir, OutputSpec, TaskError

Progress = Callable[[Dict[str, Any]], None]


class StagingFailed(Exception):
    def __init__(self, message: str, client_error: bool) -> None:
        self.client_error = client_error
        super().__init__(message)


def _s3(task: HostTask) -> Any:
    if task.deps_dir and task.deps_dir not in sys.path:
        sys.path.insert(0, task.deps_dir)
    from . import s3

    return s3


def _client(task: HostTask) -> Any:
    return _s3(task).make_client(dict(task.s3 or {}))


def _uploaded_map_path(jobdir: JobDir, output: OutputSpec) -> str:
    try:
        return jobdir.path("uploaded-{}.json".format(output.name))
    except TaskError as exc:  # the job's fault: its OutputName is no file name
        raise StagingFailed("output {!r}: {}".format(output.name, exc), client_error=True) from exc


def stage_inputs(jobdir: JobDir, task: HostTask, plan: Dict[str, Any], progress: Progress) -> Tuple[int, int]:
    """Download each input's objects under its LocalPath; progress as it goes."""
    s3 = _s3(task)
    client = _client(task)
    events = EventLog(jobdir.events)
    total_files = 0
    total_bytes = 0
    for item in plan.get("inputs", []):
        local_path = str(item["local_path"])
        objects = list(item["objects"])
        base_files, base_bytes = total_files, total_bytes

        def report(
            files: int, size: int, local_path: str = local_path, base: Tuple[int, int] = (base_files, base_bytes)
        ) -> None:
            progress({"input": local_path, "objects": base[0] + files, "bytes": base[1] + size})

        try:
            files, size = s3.download_objects(client, objects, jobdir.host_path(local_path), progress=report)
        except s3.S3TransferError as exc:
            raise StagingFailed(str(exc), exc.client_error) from exc
        total_files += files
        total_bytes += size
    events.emit("inputs_staged", objects=total_files, bytes=total_bytes)
    return total_files, total_bytes


def _target(task: HostTask, output: OutputSpec) -> Tuple[str, str]:
    bucket, key = _s3(task).parse_s3_uri(output.uri)
    return bucket, (key.rstrip("/") + "/") if key else ""


def upload_outputs(jobdir: JobDir, task: HostTask) -> Dict[str, Any]:
    """Upload every S3 output (EndOfJob, and the last pass of Continuous ones)."""
    s3 = _s3(task)
    client = _client(task)
    report: Dict[str, Any] = {}
    for output in task.outputs:
        if not output.is_s3:
            continue
        bucket, prefix = _target(task, output)
        path = _uploaded_map_path(jobdir, output)
        before = read_json(path) or {}
        already = {k: (int(v[0]), int(v[1])) for k, v in before.items()}
        try:
            done = s3.upload_tree(client, jobdir.host_path(output.local_path), bucket, prefix, already=already)
        except s3.S3TransferError as exc:
            raise StagingFailed("output {}: {}".format(output.name, exc), exc.client_error) from exc
        write_json_atomic(path, {k: list(v) for k, v in done.items()})
        report[output.name] = {"files": len(done), "bytes": sum(v[0] for v in done.values())}
    EventLog(jobdir.events).emit("outputs_uploaded", outputs=report)
    return report


class Continuous:
    """The Continuous outputs' uploaders, for the life of the container."""

    def __init__(self, jobdir: JobDir, task: HostTask) -> None:
        self.jobdir = jobdir
        self.task = task
        self.uploaders: List[Tuple[OutputSpec, Any]] = []

    def start(self) -> None:
        wanted = [o for o in self.task.outputs if o.is_s3 and o.upload_mode == "Continuous"]
        if not wanted:
            return
        s3 = _s3(self.task)
        client = _client(self.task)
        for output in wanted:
            bucket, prefix = _target(self.task, output)
            root = self.jobdir.host_path(output.local_path)
            uploader = s3.ContinuousUploader(client, root, bucket, prefix)
            uploader.start()
            self.uploaders.append((output, uploader))

    def stop(self) -> List[str]:
        """Stop, with a final pass; keep what was uploaded so `upload` skips it. Returns errors."""
        errors: List[str] = []
        for output, uploader in self.uploaders:
            try:
                done = uploader.stop()
                path = _uploaded_map_path(self.jobdir, output)
            except Exception as exc:
                errors.append("output {}: {}".format(output.name, exc))
                continue
            write_json_atomic(path, {k: list(v) for k, v in done.items()})
            errors.extend("output {}: {}".format(output.name, e) for e in uploader.errors)
        return errors


def print_progress(doc: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"progress": doc}, sort_keys=True) + "\n")
    sys.stdout.flush()


def jobdir_exists(jobdir: JobDir) -> bool:
    return os.path.isdir(jobdir.root)
