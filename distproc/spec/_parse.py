"""From a JSON document (or file) to a JobSpec, or a SpecError listing every problem."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..errors import SpecError, Violation
from ..userfiles import read_bounded
from . import _rules
from .model import AppSpecification, ClusterConfig, JobSpec, ProcessingInput, ProcessingOutput
from .validate import validate_request


def parse_job(doc: object) -> JobSpec:
    """Validate a CreateProcessingJob request and return the typed job.

    Raises SpecError carrying every violation at once.

    >>> job = parse_job({
    ...     "ProcessingJobName": "demo",
    ...     "ProcessingResources": {"ClusterConfig": {"InstanceCount": 2,
    ...                                               "InstanceType": "ml.m5.xlarge"}},
    ...     "AppSpecification": {"ImageUri": "busybox"},
    ... })
    >>> job.cluster.instance_count
    2
    """
    return _parse(doc, source="job")


#: The most bytes a job file may have. The largest valid request is about
#: 150,000 characters (100 arguments, 100 entrypoint strings and 100 Environment
#: entries of 256 characters, 50 tags, 10 inputs and outputs); even written all
#: in \uXXXX escapes it stays under 1 MiB. AWS takes CreateProcessingJob
#: requests far smaller than this. A bigger file is not a job: it is refused
#: after reading this much, so /dev/zero or a FIFO that never ends cannot
#: exhaust memory first.
MAX_JOB_BYTES = 1 << 20

#: The job path that means standard input, and the name errors give it.
STDIN_PATH = "-"
STDIN_NAME = "<stdin>"


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read a job file (JSON, UTF-8) and parse it with :func:`parse_job`.

    ``-`` reads standard input, named ``<stdin>`` in errors. At most
    :data:`MAX_JOB_BYTES` are read. A missing, unreadable, oversized or
    malformed file is a SpecError too, whose one violation has the file name
    as its path (and line and column for bad JSON).
    """
    stdin = os.fspath(path) == STDIN_PATH
    name = STDIN_NAME if stdin else os.fspath(path)
    source = f"job file {name}"
    try:
        if stdin and sys.stdin is None:
            raise OSError(0, "there is no standard input")
        data = read_bounded(sys.stdin.buffer if stdin else path, MAX_JOB_BYTES)
    except FileNotFoundError as exc:
        raise _file_error(name, source, "file not found") from exc
    except IsADirectoryError as exc:
        raise _file_error(name, source, "is a folder, not a file") from exc
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _file_error(name, source, f"cannot be read: {reason}") from exc
    if len(data) > MAX_JOB_BYTES:
        rule = f"is larger than {MAX_JOB_BYTES} bytes (1 MiB), the most a job file may be"
        raise _file_error(name, source, rule)
    try:
        # utf-8-sig: editors on Windows save JSON with a byte order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _file_error(name, source, f"is not UTF-8 text (byte {exc.start})") from exc
    try:
        doc = json.loads(text, object_pairs_hook=_object_without_duplicates)
    except json.JSONDecodeError as exc:
        rule = f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise _file_error(name, source, rule) from exc
    except _DuplicateKeyError as exc:
        rule = f"is not valid JSON for a job: key {exc.key!r} appears twice in one object"
        raise _file_error(name, source, rule) from exc
    except (ValueError, RecursionError) as exc:
        raise _file_error(name, source, f"is not valid JSON: {exc}") from exc
    return _parse(doc, source=source)


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys; a silently dropped block of a job
    # (a second "Environment", say) is worse than an error.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKeyError(key)
        obj[key] = value
    return obj


def _file_error(name: str, source: str, rule: str) -> SpecError:
    return SpecError([Violation(name, rule)], source=source)


def _parse(doc: object, source: str) -> JobSpec:
    violations = validate_request(doc)
    if violations:
        raise SpecError(violations, source=source)
    assert isinstance(doc, dict)  # a non-object document is a violation above
    request = _rules.with_defaults(doc)
    return _build(request, _rules.warnings_for(request))


def _optional_tuple(obj: dict[str, Any], key: str) -> tuple[str, ...] | None:
    return tuple(obj[key]) if key in obj else None


def _build(request: dict[str, Any], warnings: tuple[str, ...]) -> JobSpec:
    cluster = request["ProcessingResources"]["ClusterConfig"]
    app = request["AppSpecification"]
    inputs = tuple(
        ProcessingInput(
            name=item["InputName"],
            local_path=s3["LocalPath"],
            uri=s3["S3Uri"],
            data_type=s3["S3DataType"],
            input_mode=s3["S3InputMode"],
            distribution=s3["S3DataDistributionType"],
            compression=s3["S3CompressionType"],
        )
        for item in request.get("ProcessingInputs", [])
        for s3 in [item["S3Input"]]
    )
    outputs = tuple(
        ProcessingOutput(
            name=item["OutputName"],
            local_path=s3["LocalPath"],
            uri=s3["S3Uri"],
            upload_mode=s3["S3UploadMode"],
        )
        for item in request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for s3 in [item["S3Output"]]
    )
    return JobSpec(
        name=request["ProcessingJobName"],
        inputs=inputs,
        outputs=outputs,
        cluster=ClusterConfig(
            instance_count=cluster["InstanceCount"],
            instance_type=cluster["InstanceType"],
            volume_size_gb=cluster.get("VolumeSizeInGB"),
        ),
        app=AppSpecification(
            image_uri=app["ImageUri"],
            entrypoint=_optional_tuple(app, "ContainerEntrypoint"),
            arguments=_optional_tuple(app, "ContainerArguments"),
        ),
        environment=tuple(request.get("Environment", {}).items()),
        max_runtime_seconds=request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds"),
        role_arn=request.get("RoleArn"),
        tags=tuple((tag["Key"], tag["Value"]) for tag in request.get("Tags", [])),
        warnings=warnings,
        request_json=json.dumps(request, ensure_ascii=False),
    )
