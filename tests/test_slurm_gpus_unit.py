"""The container gets exactly the GPUs Slurm gave the job's step on its node, not the node's first N.

A stated mock: no GPU exists here, so Slurm's allocation is given as the
environment Slurm's gres/gpu plugin sets for a step: SLURM_STEP_GPUS (and
SLURM_JOB_GPUS) with the node's own indices, CUDA_VISIBLE_DEVICES renumbered
when cgroups confine the devices (cases the test Slurm, without cgroups,
cannot show). What the agent does with it (docker's argv, the API's create
body) is real code, checked as docker reads it. tests/test_slurm_gpus_e2e.py
reads a real Slurm allocation of the test cluster's stand-in GPUs.
"""

from __future__ import annotations

import csv
from typing import Any

import pytest

from distproc.agent.container import gpu_argv, run_argv, slurm_gpus
from distproc.agent.engine import create_body
from distproc.agent.task import parse_task
from tests.task_docs import task_doc

#: A step given the node's GPUs 2 and 3 of 4 (another job has 0 and 1), cgroup-confined.
STEP_2_3 = {"SLURM_JOB_ID": "41", "SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}


def test_slurms_own_indices_are_preferred_to_the_renumbered_cuda_ones() -> None:
    assert slurm_gpus(STEP_2_3) == ["2", "3"]
    assert slurm_gpus({"SLURM_JOB_ID": "41", "SLURM_JOB_GPUS": "1"}) == ["1"]
    # Only CUDA_VISIBLE_DEVICES (no device confinement, so it holds the node's indices).
    assert slurm_gpus({"SLURM_JOB_ID": "41", "CUDA_VISIBLE_DEVICES": "3"}) == ["3"]


def test_outside_slurm_or_without_named_devices_there_is_no_allocation() -> None:
    # An SSH host's login environment: its CUDA_VISIBLE_DEVICES narrows nothing.
    assert slurm_gpus({"CUDA_VISIBLE_DEVICES": "0"}) is None
    # gres configured without device files: Slurm says so, and names none.
    assert slurm_gpus({"SLURM_JOB_ID": "41", "CUDA_VISIBLE_DEVICES": "NoDevFiles"}) is None
    assert slurm_gpus({"SLURM_JOB_ID": "41"}) is None


def test_nothing_but_device_ids_reaches_docker() -> None:
    assert slurm_gpus({"SLURM_JOB_ID": "1", "SLURM_STEP_GPUS": "0,1 --privileged"}) is None
    assert slurm_gpus({"SLURM_JOB_ID": "1", "SLURM_STEP_GPUS": 'all"'}) is None
    assert slurm_gpus({"SLURM_JOB_ID": "1", "SLURM_STEP_GPUS": "GPU-8c5b2a1e-0000-1111-2222-333344445555"}) == [
        "GPU-8c5b2a1e-0000-1111-2222-333344445555"
    ]


def test_the_allocated_devices_are_passed_as_docker_reads_them() -> None:
    flag, value = gpu_argv(2, "gpus", ["2", "3"])
    assert flag == "--gpus"
    # docker parses --gpus as one CSV record: the quotes keep "device=2,3" one field.
    assert next(csv.reader([value])) == ["device=2,3"]
    assert gpu_argv(2, "runtime", ["2", "3"])[-1] == "NVIDIA_VISIBLE_DEVICES=2,3"
    # A CPU host gets no GPUs, whatever the environment says.
    assert gpu_argv(0, "gpus", ["2", "3"]) == []
    # No allocation named: the inventory's count, as on the fleet.
    assert gpu_argv(2, "gpus", None) == ["--gpus", "2"]


def gpu_task(**over: Any) -> Any:
    return parse_task(task_doc(gpus=2, **over))


def test_run_argv_in_a_slurm_step_asks_for_the_steps_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in STEP_2_3.items():
        monkeypatch.setenv(key, value)
    argv = run_argv(gpu_task(), "/ml", None, [])
    assert argv[argv.index("--gpus") + 1] == '"device=2,3"'
    body = create_body(gpu_task(), "/ml")
    assert body["HostConfig"]["DeviceRequests"] == [{"Driver": "", "DeviceIDs": ["2", "3"], "Capabilities": [["gpu"]]}]
    runtime = create_body(gpu_task(gpu_mode="runtime"), "/ml")
    assert "NVIDIA_VISIBLE_DEVICES=2,3" in runtime["Env"]


def test_run_argv_outside_slurm_keeps_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in STEP_2_3:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    argv = run_argv(gpu_task(), "/ml", None, [])
    assert argv[argv.index("--gpus") + 1] == "2"
    body = create_body(gpu_task(), "/ml")
    assert body["HostConfig"]["DeviceRequests"] == [{"Driver": "", "Count": 2, "Capabilities": [["gpu"]]}]
