"""The job document: a SageMaker CreateProcessingJob request, parsed and validated.

    >>> from distproc.spec import load_job
    >>> job = load_job("job.json")                    # doctest: +SKIP
    >>> [i.local_path for i in job.inputs]            # doctest: +SKIP
    ['/opt/ml/processing/input']

Validation follows botocore's SageMaker model, pinned in schema.json (see
scripts/gen_schema.py), in full, plus distproc's own rules; see
docs/job-spec.md. Every problem is reported at once in one SpecError.
"""

from __future__ import annotations

from ._parse import load_job, parse_job
from ._rules import pipe_path
from .model import (
    AppSpecification,
    ClusterConfig,
    Compression,
    DataType,
    Distribution,
    InputMode,
    JobSpec,
    ProcessingInput,
    ProcessingJob,
    ProcessingOutput,
    UploadMode,
    job_arn,
    processing_job_config,
)
from .validate import validate_request

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
    "load_job",
    "parse_job",
    "pipe_path",
    "processing_job_config",
    "validate_request",
]
