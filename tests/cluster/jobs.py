"""What end-to-end tests share: a test's own distproc home and inventory on the
cluster (:class:`Env`, :class:`S3Env` with the S3 endpoint), job documents
and their inputs and outputs, and waiting for a condition.

The fixtures that build these (``env``, ``s3env``) are in tests/cluster/plugin.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.cluster.model import Cluster

if TYPE_CHECKING:  # boto3 is imported only by the sessions that start the S3 endpoint
    from tests.s3server import MotoServer

PY = "distproc-test:py"


@dataclass
class Env:
    cluster: Cluster
    home: Path
    data: Path
    inventory: Path

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distproc", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "DISTPROC_HOME": str(self.home)},
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "distproc", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DISTPROC_HOME": str(self.home)},
        )

    def write_job(self, doc: dict[str, Any]) -> Path:
        path = self.data / f"{doc['ProcessingJobName']}.json"
        path.write_text(json.dumps(doc))
        return path

    def run_job(self, doc: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("run", "--inventory", str(self.inventory), *extra, str(self.write_job(doc)))

    def script(self, name: str, code: str) -> tuple[list[str], dict[str, Any]]:
        """Ship code as a file:// input (SageMaker's entrypoint items cannot hold newlines)."""
        folder = self.data / f"code-{name}"
        folder.mkdir()
        (folder / "main.py").write_text(code)
        local = "/opt/ml/processing/input/code"
        return ["python3", f"{local}/main.py"], file_input("code", f"{folder}/", local)

    def describe(self, name: str) -> dict[str, Any]:
        out = self.cli("describe", name, "--json")
        assert out.returncode == 0, out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc


def job_doc(
    name: str,
    *,
    count: int = 3,
    image: str = PY,
    entrypoint: list[str] | None = None,
    arguments: list[str] | None = None,
    environment: dict[str, str] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    max_runtime: int | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ProcessingJobName": name,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.xlarge"}},
        "AppSpecification": {"ImageUri": image},
    }
    if entrypoint is not None:
        doc["AppSpecification"]["ContainerEntrypoint"] = entrypoint
    if arguments is not None:
        doc["AppSpecification"]["ContainerArguments"] = arguments
    if environment:
        doc["Environment"] = environment
    if inputs:
        doc["ProcessingInputs"] = inputs
    if outputs:
        doc["ProcessingOutputConfig"] = {"Outputs": outputs}
    if max_runtime:
        doc["StoppingCondition"] = {"MaxRuntimeInSeconds": max_runtime}
    return doc


def file_input(name: str, source: str, local: str, distribution: str = "FullyReplicated") -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": f"file://{source}",
            "LocalPath": local,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": distribution,
        },
    }


def file_output(name: str, dest: str, local: str) -> dict[str, Any]:
    return {"OutputName": name, "S3Output": {"S3Uri": f"file://{dest}", "LocalPath": local, "S3UploadMode": "EndOfJob"}}


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 60, process: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"{process.args!r} ended (exit {process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def running_everywhere(cluster: Cluster, job: str) -> Callable[[], bool]:
    def check() -> bool:
        return all(
            f"distproc-{job}-algo-{k}" in cluster.containers(h, all=False) for k, h in enumerate(cluster.hosts, 1)
        )

    return check


TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Env(Env):
    moto: MotoServer

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distproc", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **TEST_CREDENTIALS, "DISTPROC_HOME": str(self.home)},
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "distproc", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **TEST_CREDENTIALS, "DISTPROC_HOME": str(self.home)},
        )

    def run_job(self, doc: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "run", "--inventory", str(self.inventory), "--aws-credentials", "forward", *extra, str(self.write_job(doc))
        )


def s3_input(
    name: str, uri: str, local: str, distribution: str = "FullyReplicated", data_type: str = "S3Prefix"
) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local,
            "S3DataType": data_type,
            "S3InputMode": "File",
            "S3DataDistributionType": distribution,
        },
    }


def s3_output(name: str, uri: str, local: str, mode: str = "EndOfJob") -> dict[str, Any]:
    return {"OutputName": name, "S3Output": {"S3Uri": uri, "LocalPath": local, "S3UploadMode": mode}}
