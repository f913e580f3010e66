"""The GPUs Slurm gives a job, as the agent on each node reads them, on the real Slurm test cluster.

The test cluster's nodes have stand-in GPUs (tests/slurm/layout.py: gres.conf
names four device files per node, types a = nvidia0-1 and b = nvidia2-3; no
GPU exists here, and nothing opens the files). A job whose instance type asks
for 2 GPUs of type b is submitted by SlurmBackend (--gres=gpu:b:2); on every
node, in an srun step beside the allocation's own (as the agent runs), the
agent's code reads Slurm's allocation and asks docker for exactly devices 2
and 3: not the node's first two, which a count (--gpus 2) would give. Docker
is not asked to start such a container (it has no GPUs to give); the argv is
the agent's, from the environment real Slurm set.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from distproc.backends.base import Shortage
from distproc.backends.slurm.backend import SlurmBackend
from distproc.backends.slurm.inventory import parse_slurm_inventory
from distproc.spec import parse_job
from tests.cluster.constants import BUSYBOX_IMAGE
from tests.slurm import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]

#: Run by the node's Python with the agent's own package (the bundle SlurmBackend installed).
PROBE = (
    "import json, os, sys; sys.path.insert(0, sys.argv[1]); "
    "from distproc_agent.container import gpu_argv, slurm_gpus; "
    "given = slurm_gpus(os.environ); "
    "print(json.dumps({'given': given, 'argv': gpu_argv(2, 'gpus', given), "
    "'runtime': gpu_argv(2, 'runtime', given)}))"
)


def test_the_container_is_given_the_gpus_slurm_allocated_on_each_node(
    slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    inv = parse_slurm_inventory(
        {
            "slurm": {
                "submit": {"ansible_connection": "local"},
                "instance_types": {"ml.g4dn.12xlarge": {"partition": slurm.partition, "gpus": 2, "gpu_type": "b"}},
            }
        },
        tmp_path / "slurm.yaml",
    )
    backend = SlurmBackend(
        inv, node_python="/usr/bin/python3", node_work_dir=str(slurm.local_dir / "work"), poll_interval=0.2
    )
    n = len(slurm.nodes)
    job = parse_job(
        {
            "ProcessingJobName": "slurm-gpus",
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.g4dn.12xlarge", "InstanceCount": n}},
            "AppSpecification": {"ImageUri": BUSYBOX_IMAGE},
        }
    )

    async def scenario() -> list[Mapping[str, object]]:
        claims = await backend.acquire(job)
        assert not isinstance(claims, Shortage), claims
        try:
            seen = []
            for claim in claims:
                assert claim.host.gpus == 2  # the instance type's count, for the plan and the agent
                session = claim.session
                result = await session.transport.run([session.python, "-c", PROBE, session.agent_path])
                seen.append(json.loads(result.stdout))
            return seen
        finally:
            for claim in claims:
                await backend.release(job.name, claim.session)
            await backend.close()

    seen = asyncio.run(scenario())
    assert len(seen) == n
    for found in seen:
        assert found["given"] == ["2", "3"], found
        assert found["argv"] == ["--gpus", '"device=2,3"']
        assert found["runtime"] == ["--runtime", "nvidia", "--env", "NVIDIA_VISIBLE_DEVICES=2,3"]
    assert slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING", "--name", job.name).stdout.strip() == ""


def test_the_coordinators_environment_does_not_reach_the_nodes_agents(
    slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """srun carries the environment it runs in: only PATH goes, and Slurm's own SLURM_* for the step."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "coordinator-secret")
    inv = parse_slurm_inventory(
        {"slurm": {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": slurm.partition}}},
        tmp_path / "slurm.yaml",
    )
    backend = SlurmBackend(
        inv, node_python="/usr/bin/python3", node_work_dir=str(slurm.local_dir / "work"), poll_interval=0.2
    )
    job = parse_job(
        {
            "ProcessingJobName": "slurm-env",
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}},
            "AppSpecification": {"ImageUri": BUSYBOX_IMAGE},
        }
    )
    probe = "import json, os; print(json.dumps(dict(os.environ)))"

    async def scenario() -> dict[str, str]:
        claims = await backend.acquire(job)
        assert not isinstance(claims, Shortage), claims
        try:
            session = claims[0].session
            result = await session.transport.run([session.python, "-c", probe])
            env: dict[str, str] = json.loads(result.stdout)
            return env
        finally:
            await backend.release(job.name, claims[0].session)
            await backend.close()

    env = asyncio.run(scenario())
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "coordinator-secret" not in json.dumps(env)
    assert env["SLURM_JOB_ID"].isdigit() and env["PATH"]  # Slurm's own, and what finds the node's tools
