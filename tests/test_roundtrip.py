"""The round trip with SageMaker (issue 17 part 6): `distproc export` prints a
job's CreateProcessingJob request as SageMaker takes it (checked against
botocore's CreateProcessingJobRequest input shape), and `distproc import`
fetches a job that ran on SageMaker (DescribeProcessingJob, from moto's
SageMaker API over real HTTP: SageMaker itself cannot be reached from here)
and prints the request that runs it here."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distproc import cli
from distproc.sdk.roundtrip import request_from_description
from distproc.spec import parse_job
from distproc.spec.model import job_arn
from distproc.store.db import Store
from tests.aws_shapes import shape_problems
from tests.s3server import MotoServer
from tests.sagemaker_server import start_sagemaker_server

ROLE = "arn:aws:iam::123456789012:role/processing"
CREATE = "CreateProcessingJobRequest"


def _request(name: str, uri: str = "s3://bucket/data", **extra: Any) -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 50}
        },
        "AppSpecification": {"ImageUri": "alpine:3.20", "ContainerEntrypoint": ["sh", "-c", "ls /opt/ml/processing"]},
        "ProcessingInputs": [
            {
                "InputName": "data",
                "S3Input": {
                    "S3Uri": f"{uri}/in",
                    "LocalPath": "/opt/ml/processing/input",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "ShardedByS3Key",
                    "S3CompressionType": "None",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "result",
                    "S3Output": {
                        "S3Uri": f"{uri}/out",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "Environment": {"MODE": "full"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "RoleArn": ROLE,
        **extra,
    }


def _store_job(home: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Record a job as `run` does: its request parsed and normalized (defaults filled) first."""
    normalized = parse_job(request).request_dict()
    Store(home).create_job(request["ProcessingJobName"], job_arn(request["ProcessingJobName"]), normalized, None)
    return normalized


def _cli(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["--home", str(home), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_export_prints_the_stored_request_as_create_processing_job_takes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = _store_job(tmp_path, _request("exp-1"))
    rc, out, err = _cli(tmp_path, capsys, "export", "exp-1", "--strict")
    assert rc == 0, err
    exported = json.loads(out)
    assert shape_problems(exported, CREATE) == []
    assert exported == stored  # nothing to change: the stored request is already SageMaker's
    assert "needs changing" not in err


def test_export_flags_file_uris_and_a_missing_role_and_fills_the_volume_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = _request("exp-2", uri="file:///srv/data")
    del request["RoleArn"]
    del request["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"]
    _store_job(tmp_path, request)

    rc, out, err = _cli(tmp_path, capsys, "export", "exp-2")
    assert rc == 0  # still printed: the user changes the URIs, then sends it
    exported = json.loads(out)
    assert exported["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"] == 30  # the SDK's default
    assert "ProcessingInputs[0].S3Input.S3Uri: file:///srv/data/in" in err
    assert "ProcessingOutputConfig.Outputs[0].S3Output.S3Uri: file:///srv/data/out" in err
    assert "RoleArn" in err
    # What is flagged is exactly what SageMaker's input shape refuses.
    problems = "\n".join(shape_problems(exported, CREATE))
    assert "RoleArn" in problems and "file:///srv/data/in" in problems and "file:///srv/data/out" in problems

    rc, out, err = _cli(tmp_path, capsys, "export", "exp-2", "--strict", "--role-arn", ROLE)
    assert rc == cli.EXIT_INVALID
    exported = json.loads(out)  # --strict prints the document too
    assert exported["RoleArn"] == ROLE
    assert "RoleArn" not in err and "2 thing(s) to change" in err
    # With S3 URIs in place of the file:// ones, SageMaker's shape takes it.
    exported["ProcessingInputs"][0]["S3Input"]["S3Uri"] = "s3://bucket/in"
    exported["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = "s3://bucket/out"
    assert shape_problems(exported, CREATE) == []


def test_export_of_an_unknown_job_is_job_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _cli(tmp_path, capsys, "export", "no-such-job")
    assert rc == cli.EXIT_INVALID and out == ""
    assert "no job named 'no-such-job' in the job store" in err


def test_request_from_description_drops_what_only_describe_answers() -> None:
    request = _request("sm-1")
    described = copy.deepcopy(request)
    described["ProcessingResources"]["ClusterConfig"] |= {"SelectedInstanceType": "ml.m5.xlarge"}
    described |= {
        "ProcessingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/sm-1",
        "ProcessingJobStatus": "Failed",
        "FailureReason": "AlgorithmError: exit 1",
        "ExitMessage": "boom",
        "CreationTime": "2026-01-01T00:00:00Z",
        "ProcessingStartTime": "2026-01-01T00:01:00Z",
        "ProcessingEndTime": "2026-01-01T00:02:00Z",
        "LastModifiedTime": "2026-01-01T00:02:00Z",
        "MonitoringScheduleArn": "arn:aws:sagemaker:us-east-1:123456789012:monitoring-schedule/m",
    }
    assert request_from_description(described) == request


@pytest.fixture(scope="module")
def sagemaker() -> Iterator[MotoServer]:
    server = start_sagemaker_server()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, sagemaker: MotoServer) -> None:
    # `distproc import` finds credentials as boto3 does: here, moto's test ones in the environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", sagemaker.credentials["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", sagemaker.credentials["secret"])
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.mark.usefixtures("aws_env")
def test_import_prints_the_request_of_a_sagemaker_job_and_it_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sagemaker: MotoServer
) -> None:
    created = _request("sm-imported")
    sagemaker.client("sagemaker").create_processing_job(**created)

    argv = ["import", "sm-imported", "--region", "us-east-1", "--endpoint-url", sagemaker.endpoint_url]
    rc, out, err = _cli(tmp_path, capsys, *argv)
    assert rc == 0, err
    assert json.loads(out) == created
    assert shape_problems(json.loads(out), CREATE) == []

    job_file = tmp_path / "job.json"
    rc, _, err = _cli(tmp_path, capsys, *argv, "-o", str(job_file))
    assert rc == 0, err
    assert json.loads(job_file.read_text()) == created
    rc, out, err = _cli(tmp_path, capsys, "validate", str(job_file))
    assert rc == 0, err
    assert "job sm-imported is valid: 2 x ml.m5.xlarge" in out


@pytest.mark.usefixtures("aws_env")
def test_export_then_create_on_sagemaker_then_import_gives_the_request_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sagemaker: MotoServer
) -> None:
    _store_job(tmp_path, _request("round-trip"))
    rc, out, err = _cli(tmp_path, capsys, "export", "round-trip", "--strict")
    assert rc == 0, err
    exported = json.loads(out)
    sagemaker.client("sagemaker").create_processing_job(**exported)  # as `aws sagemaker create-processing-job` would

    argv = ["import", "round-trip", "--region", "us-east-1", "--endpoint-url", sagemaker.endpoint_url]
    rc, out, err = _cli(tmp_path, capsys, *argv)
    assert rc == 0, err
    assert json.loads(out) == exported


@pytest.mark.usefixtures("aws_env")
def test_import_of_a_job_sagemaker_does_not_have_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sagemaker: MotoServer
) -> None:
    argv = ["import", "never-ran", "--region", "us-east-1", "--endpoint-url", sagemaker.endpoint_url]
    rc, out, err = _cli(tmp_path, capsys, *argv)
    assert rc == cli.EXIT_INVALID and out == ""
    assert "DescribeProcessingJob 'never-ran': ValidationException: Could not find processing job" in err
    assert "Traceback" not in err
