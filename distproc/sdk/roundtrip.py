"""The round trip with SageMaker, as documents: a distproc job's request made
ready for CreateProcessingJob (`distproc export`), and a DescribeProcessingJob
answer turned back into a request distproc runs (`distproc import`).

Pure functions on dicts: the API call itself is in sagemaker_api, the only
place boto3 enters for this.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..spec import _schema
from ..spec._rules import READ_ONLY

#: What the SageMaker Python SDK sends when a Processor is given no volume size;
#: SageMaker requires VolumeSizeInGB, distproc does not (hosts bring their own disks).
SDK_VOLUME_SIZE_GB = 30


@dataclass(frozen=True, slots=True)
class Exported:
    """A CreateProcessingJob request, and what is left for the user to do before sending it.

    `needs`: what SageMaker would refuse as it is (a file:// URI, no RoleArn);
    `notes`: what was filled in or dropped, for the user to know.
    """

    request: dict[str, Any]
    needs: tuple[str, ...]
    notes: tuple[str, ...]


def _create_members() -> tuple[str, ...]:
    return tuple(_schema.shape(_schema.root_shape())["members"])


def _drop_read_only(request: dict[str, Any]) -> None:
    for *parents, last in READ_ONLY:
        node: Any = request
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)


def _uris(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, URI) of every input and output."""
    found = []
    for i, item in enumerate(request.get("ProcessingInputs", [])):
        uri = item.get("S3Input", {}).get("S3Uri")
        if isinstance(uri, str):
            found.append((f"ProcessingInputs[{i}].S3Input.S3Uri", uri))
    for i, item in enumerate(request.get("ProcessingOutputConfig", {}).get("Outputs", [])):
        uri = item.get("S3Output", {}).get("S3Uri")
        if isinstance(uri, str):
            found.append((f"ProcessingOutputConfig.Outputs[{i}].S3Output.S3Uri", uri))
    return found


def export_request(stored: dict[str, Any], role_arn: str | None = None) -> Exported:
    """A stored (normalized) distproc request as CreateProcessingJob takes it.

    Only CreateProcessingJob's members are kept; VolumeSizeInGB, which
    SageMaker requires, gets the SDK's default when the job had none; `role_arn`
    fills RoleArn when the job had none. file:// URIs are kept (the user knows
    which bucket they stand for) and each is listed in `needs`.
    """
    members = _create_members()
    request = {k: copy.deepcopy(v) for k, v in stored.items() if k in members}
    _drop_read_only(request)
    needs: list[str] = []
    notes: list[str] = [f"{k}: left out (CreateProcessingJob has no such member)" for k in stored if k not in members]
    cluster = request.get("ProcessingResources", {}).get("ClusterConfig", {})
    if "VolumeSizeInGB" not in cluster:
        cluster["VolumeSizeInGB"] = SDK_VOLUME_SIZE_GB
        notes.append(
            f"ProcessingResources.ClusterConfig.VolumeSizeInGB: set to {SDK_VOLUME_SIZE_GB} "
            "(SageMaker requires it; the SDK's default)"
        )
    if "RoleArn" not in request:
        if role_arn:
            request["RoleArn"] = role_arn
        else:
            needs.append("RoleArn: SageMaker requires an IAM role ARN (give one with --role-arn)")
    for field, uri in _uris(request):
        if uri[:5].lower() == "file:":
            needs.append(f"{field}: {uri} is a file:// URI; SageMaker needs an s3:// URI")
    return Exported(request, tuple(needs), tuple(notes))


def request_from_description(described: dict[str, Any]) -> dict[str, Any]:
    """A DescribeProcessingJob answer as the CreateProcessingJob request that would start the job again.

    The answer echoes the request's members, except Tags (it has none), next to
    output-only ones (ProcessingJobArn, ProcessingJobStatus, the times,
    FailureReason, ExitMessage, the ARNs of what started it) and read-only ones
    inside ClusterConfig (SelectedInstanceType...): those are left out.
    """
    members = _create_members()
    request = {k: copy.deepcopy(v) for k, v in described.items() if k in members}
    _drop_read_only(request)
    return request
