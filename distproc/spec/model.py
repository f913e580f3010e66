"""The parsed job: frozen, typed values, and the documents derived from them.

Nothing past the spec package handles the raw request dict: planning, the
agent and the store read these dataclasses. The normalized request is kept as
JSON text (``request_json``) so the value stays immutable; ``request_dict()``
gives a fresh copy to whoever needs the document itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from . import _rules, _schema

__all__ = [
    "AppSpecification",
    "ClusterConfig",
    "Compression",
    "DataType",
    "Distribution",
    "InputMode",
    "JobSpec",
    "ProcessingInput",
    "ProcessingJob",
    "ProcessingOutput",
    "UploadMode",
    "job_arn",
    "processing_job_config",
]

# Refused values are in these types too: the refusals are temporary (see
# _unsupported), the vocabulary is SageMaker's.
DataType = Literal["S3Prefix", "ManifestFile"]
InputMode = Literal["File", "Pipe"]
Distribution = Literal["FullyReplicated", "ShardedByS3Key"]
Compression = Literal["None", "Gzip"]
UploadMode = Literal["EndOfJob", "Continuous"]


@dataclass(frozen=True, slots=True)
class ProcessingInput:
    """One item of ProcessingInputs: where its data comes from and goes."""

    name: str
    local_path: str
    uri: str
    data_type: DataType = "S3Prefix"
    input_mode: InputMode = "File"
    distribution: Distribution = "FullyReplicated"
    compression: Compression = "None"


@dataclass(frozen=True, slots=True)
class ProcessingOutput:
    """One item of ProcessingOutputConfig.Outputs."""

    name: str
    local_path: str
    uri: str
    upload_mode: UploadMode = "EndOfJob"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """ProcessingResources.ClusterConfig: how many hosts of which type."""

    instance_count: int
    instance_type: str
    volume_size_gb: int | None = None


@dataclass(frozen=True, slots=True)
class AppSpecification:
    """The image and how to start it; None means the image's own default."""

    image_uri: str
    entrypoint: tuple[str, ...] | None = None
    arguments: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """A valid job, defaults filled. Build it with ``parse_job`` or ``load_job``.

    >>> job = parse_job(request)                       # doctest: +SKIP
    >>> job.cluster.instance_count, job.environment_dict()["MODE"]  # doctest: +SKIP
    (3, 'fast')
    """

    name: str
    inputs: tuple[ProcessingInput, ...]
    outputs: tuple[ProcessingOutput, ...]
    cluster: ClusterConfig
    app: AppSpecification
    environment: tuple[tuple[str, str], ...]
    max_runtime_seconds: int | None
    role_arn: str | None
    tags: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    request_json: str
    """The normalized request (defaults filled) as JSON text."""

    def environment_dict(self) -> dict[str, str]:
        """Environment as a dict, in the order the request gave it."""
        return dict(self.environment)

    def request_dict(self) -> dict[str, Any]:
        """A fresh copy of the normalized request; changing it changes nothing."""
        request: dict[str, Any] = json.loads(self.request_json)
        return request


def job_arn(name: str, region: str = "local", account: str = "000000000000") -> str:
    """The ARN SageMaker would give the job; SageMaker lowercases the name in it.

    >>> job_arn("My-Job")
    'arn:aws:sagemaker:local:000000000000:processing-job/my-job'
    """
    return f"arn:aws:sagemaker:{region}:{account}:processing-job/{name.lower()}"


#: The parsed model's former name, kept for code written against it. ``distproc.ProcessingJob``
#: is the SDK's job handle (distproc.sdk.handle), as ``sagemaker.processing.ProcessingJob`` is.
ProcessingJob = JobSpec


def processing_job_config(job: JobSpec, arn: str) -> dict[str, Any]:
    """The document a container reads from /opt/ml/config/processingjobconfig.json.

    The request echoed back with defaults filled and ``ProcessingJobArn`` added.
    Containers written for SageMaker index into it without ``.get``, so every
    member of every object the request has is present, null when unset
    (``NetworkConfig: null``, ``AppSpecification.ContainerArguments: null``...).
    """
    config: dict[str, Any] = {"ProcessingJobArn": arn}
    config.update(job.request_dict())
    _fill_nulls(_schema.root_shape(), config, ())
    return config


def _fill_nulls(shape_name: str, value: object, path: tuple[str, ...]) -> None:
    shape = _schema.shape(shape_name)
    if shape["type"] == "structure" and isinstance(value, dict):
        for member, ref in shape["members"].items():
            member_path = (*path, member)
            if member in value:
                _fill_nulls(ref["shape"], value[member], member_path)
            elif member_path not in _rules.READ_ONLY:
                value[member] = None
    elif shape["type"] == "list" and isinstance(value, list):
        for item in value:
            _fill_nulls(shape["member"]["shape"], item, path)
