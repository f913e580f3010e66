"""Inputs and outputs of a job on the Slurm test cluster: file:// and S3, as on the SSH fleet.

No shared filesystem is assumed: each node's work folder is its own, and
file:// inputs travel from this machine (the submit node) to each node as a
tar stream on the agent's srun step, file:// outputs come back the same way.
S3 inputs (FullyReplicated and ShardedByS3Key) are fetched by each node's
agent from a real S3 endpoint (moto's server on the Slurm cluster's bridge,
reached from inside every node's network namespace), and S3 outputs are
uploaded by the nodes. The payload has every byte value, CR/LF pairs and a
few MB of random data, so a step that mangled bytes (a pseudo-terminal, a
text decoding) or cut a stream would show. No mocks: Slurm, srun, dockerd,
the agent and the S3 endpoint are real.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from distproc.backends.slurm.backend import SlurmBackend
from distproc.backends.slurm.inventory import parse_slurm_inventory
from distproc.run.options import RunOptions
from distproc.run.outcome import JobStatus
from distproc.run.runner import JobRunner
from distproc.spec import parse_job
from distproc.store.db import Store
from tests.cluster.constants import BUSYBOX_IMAGE
from tests.cluster.jobs import TEST_CREDENTIALS, file_input, file_output, s3_input, s3_output
from tests.s3server import MotoServer, start_moto_server
from tests.slurm import SlurmCluster
from tests.slurm.docker import DOCKER_HOST_TEMPLATE

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]

IN = "/opt/ml/processing/input"
OUT = "/opt/ml/processing/output/out"
#: Each node lists what it was given (a checksum per file, by path under the input folder) and
#: sends back the binary file as it found it. Busybox: the container's hostname is its algo-K.
REPORT = (
    f"set -e; me=$(hostname); cd {IN}; find . -type f | sort | xargs md5sum > {OUT}/$me.md5; "
    f"cp {IN}/whole/blob.bin {OUT}/$me.bin"
)
#: Every byte value, line ends of both kinds, and random bytes past a few stream chunks.
BLOB = bytes(range(256)) * 16 + b"\r\n\n\r\r\n" + random.Random(16).randbytes(3 << 20)
SHARDS = {f"part-{i}.dat": f"shard {i}\r\n".encode() * (i + 1) for i in range(5)}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def job_doc(name: str, count: int, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count}},
        "AppSpecification": {"ImageUri": BUSYBOX_IMAGE, "ContainerEntrypoint": ["sh", "-c", 'eval "$REPORT"']},
        "Environment": {"REPORT": REPORT},
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {"Outputs": outputs},
    }


def backend_of(slurm: SlurmCluster, tmp_path: Path, **settings: Any) -> SlurmBackend:
    inv = parse_slurm_inventory(
        {
            "slurm": {
                "submit": {"ansible_connection": "local"},
                "instance_types": {"ml.m5.xlarge": slurm.partition},
                **settings,
            }
        },
        tmp_path / "slurm.yaml",
    )
    return SlurmBackend(
        inv,
        node_python="/usr/bin/python3",
        node_work_dir=str(slurm.local_dir / "work"),  # node-local: no shared filesystem assumed
        docker_host=DOCKER_HOST_TEMPLATE,
        poll_interval=0.2,
    )


def reports(files: Mapping[str, bytes], count: int) -> dict[str, dict[str, str]]:
    """Each algo's listing: path under the input folder -> md5."""
    out: dict[str, dict[str, str]] = {}
    for k in range(1, count + 1):
        text = files[f"algo-{k}.md5"].decode()
        out[f"algo-{k}"] = {path: digest for digest, path in (line.split() for line in text.splitlines())}
    return out


def check_listings(listed: dict[str, dict[str, str]]) -> None:
    """Replicated: the blob on every node, intact; sharded: every part once, on exactly one node, intact."""
    for algo, files in listed.items():
        assert files.get("./whole/blob.bin") == md5(BLOB), (algo, files)
    shards = [p for files in listed.values() for p in files if p.startswith("./parts/")]
    assert sorted(shards) == sorted(f"./parts/{n}" for n in SHARDS), listed  # disjoint and complete
    for files in listed.values():
        for path, digest in files.items():
            if path.startswith("./parts/"):
                assert digest == md5(SHARDS[path.removeprefix("./parts/")]), (path, files)
    # Sharding gives each node some of the parts (5 parts over 3 nodes: none left out).
    assert all(any(p.startswith("./parts/") for p in files) for files in listed.values()), listed


@pytest.fixture
def submit_here(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))  # the submit node (this machine) finds the cluster


@pytest.fixture
def moto_on_bridge(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """moto's S3 server on the Slurm cluster's bridge, where every node's namespace reaches it."""
    server = start_moto_server(slurm.controller_address)
    for key, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)  # the coordinator's credentials, forwarded to the nodes
    yield server
    server.stop()


@pytest.mark.usefixtures("submit_here")
def test_file_inputs_reach_every_node_and_file_outputs_come_back(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    whole, parts, dest = tmp_path / "whole", tmp_path / "parts", tmp_path / "results"
    whole.mkdir()
    parts.mkdir()
    (whole / "blob.bin").write_bytes(BLOB)
    for name, data in SHARDS.items():
        (parts / name).write_bytes(data)
    doc = job_doc(
        "slurm-files",
        n,
        [
            file_input("whole", f"{whole}/", f"{IN}/whole"),
            file_input("parts", f"{parts}/", f"{IN}/parts", "ShardedByS3Key"),
        ],
        [file_output("out", str(dest), OUT)],
    )
    store = Store(tmp_path / "home")
    outcome = asyncio.run(JobRunner(parse_job(doc), (), store, backend=backend_of(slurm, tmp_path)).run())
    assert outcome.status is JobStatus.COMPLETED, outcome
    files = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert sorted(files) == sorted(f"algo-{k}.{ext}" for k in range(1, n + 1) for ext in ("md5", "bin"))
    check_listings(reports(files, n))
    # The node's copy of the blob, back through srun: every byte as sent.
    assert all(files[f"algo-{k}.bin"] == BLOB for k in range(1, n + 1))
    assert slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING", "--name", "slurm-files").stdout.strip() == ""


@pytest.mark.usefixtures("submit_here")
def test_s3_inputs_replicated_and_sharded_per_node_and_s3_outputs_uploaded(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], moto_on_bridge: MotoServer, tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    s3 = moto_on_bridge.client()
    s3.create_bucket(Bucket="slurm-data")
    s3.put_object(Bucket="slurm-data", Key="whole/blob.bin", Body=BLOB)
    for name, data in SHARDS.items():
        s3.put_object(Bucket="slurm-data", Key=f"parts/{name}", Body=data)
    doc = job_doc(
        "slurm-s3",
        n,
        [
            s3_input("whole", "s3://slurm-data/whole/", f"{IN}/whole"),
            s3_input("parts", "s3://slurm-data/parts/", f"{IN}/parts", "ShardedByS3Key"),
        ],
        [s3_output("out", "s3://slurm-data/results", OUT)],
    )
    # The endpoint and region come from the Slurm inventory, as distproc_s3_endpoint_url does on the fleet.
    backend = backend_of(slurm, tmp_path, s3_endpoint_url=moto_on_bridge.endpoint_url, aws_region="us-east-1")
    options = RunOptions(aws_credentials="forward")
    store = Store(tmp_path / "home")
    outcome = asyncio.run(JobRunner(parse_job(doc), (), store, options=options, backend=backend).run())
    assert outcome.status is JobStatus.COMPLETED, outcome
    listing = s3.list_objects_v2(Bucket="slurm-data", Prefix="results/").get("Contents", [])
    keys = sorted(o["Key"] for o in listing)
    assert keys == sorted(f"results/algo-{k}.{ext}" for k in range(1, n + 1) for ext in ("md5", "bin"))
    files = {k.removeprefix("results/"): s3.get_object(Bucket="slurm-data", Key=k)["Body"].read() for k in keys}
    check_listings(reports(files, n))
    assert all(files[f"algo-{k}.bin"] == BLOB for k in range(1, n + 1))
    record = store.get_job("slurm-s3")
    assert [h.host for h in record.hosts] == [node.name for node in slurm.nodes]


#: Besides the report: what is mounted at the input and output folders, and whether the input is writable.
MOUNTS = (
    f'awk \'$2 == "{IN}/whole" || $2 == "{OUT}" {{print $2, substr($4, 1, 2)}}\' /proc/mounts | sort '
    f"> {OUT}/$(hostname).mounts"
)


@pytest.mark.usefixtures("submit_here")
def test_file_data_in_the_shared_dir_is_bound_not_copied(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    """shared_dir names a folder every node sees (here: the nodes share this machine's filesystem).

    The input in it is bind-mounted read-only, the output in it read-write, on
    every node; the sharded input outside it is still copied through srun.
    """
    n = len(slurm.nodes)
    shared = tmp_path / "shared"
    whole, parts, dest = shared / "whole", tmp_path / "parts", shared / "results"
    whole.mkdir(parents=True)
    parts.mkdir()
    (whole / "blob.bin").write_bytes(BLOB)
    for name, data in SHARDS.items():
        (parts / name).write_bytes(data)
    doc = job_doc(
        "slurm-shared",
        n,
        [
            file_input("whole", f"{whole}/", f"{IN}/whole"),
            file_input("parts", f"{parts}/", f"{IN}/parts", "ShardedByS3Key"),
        ],
        [file_output("out", str(dest), OUT)],
    )
    doc["Environment"]["MOUNTS"] = MOUNTS
    doc["AppSpecification"]["ContainerEntrypoint"] = ["sh", "-c", 'eval "$MOUNTS"; eval "$REPORT"']
    store = Store(tmp_path / "home")
    backend = backend_of(slurm, tmp_path, shared_dir=str(shared))
    outcome = asyncio.run(JobRunner(parse_job(doc), (), store, backend=backend).run())
    assert outcome.status is JobStatus.COMPLETED, outcome
    files = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert sorted(files) == sorted(f"algo-{k}.{ext}" for k in range(1, n + 1) for ext in ("md5", "bin", "mounts"))
    check_listings(reports(files, n))
    for k in range(1, n + 1):
        # Bound on every node: the input read-only, the output read-write (the blob came back by the mount).
        assert files[f"algo-{k}.mounts"].decode().splitlines() == [f"{IN}/whole ro", f"{OUT} rw"]
        assert files[f"algo-{k}.bin"] == BLOB
