"""One processing job to one sbatch command line and batch script (distproc/backends/slurm/submit.py)."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from distproc.backends.slurm.inventory import SlurmInventory, parse_slurm_inventory
from distproc.backends.slurm.submit import batch_script, sbatch_argv, shell_command, submission, time_limit_minutes
from distproc.errors import InventoryError
from distproc.spec import ProcessingJob, parse_job


def job(instance_type: str = "ml.m5.xlarge", count: int = 3, runtime: int | None = None, **env: str) -> ProcessingJob:
    doc: dict[str, Any] = {
        "ProcessingJobName": "nightly-etl-7",
        "ProcessingResources": {"ClusterConfig": {"InstanceType": instance_type, "InstanceCount": count}},
        "AppSpecification": {"ImageUri": "busybox"},
        "Environment": env,
    }
    if runtime is not None:
        doc["StoppingCondition"] = {"MaxRuntimeInSeconds": runtime}
    return parse_job(doc)


def inventory(**extra: Any) -> SlurmInventory:
    body = {
        "submit": {"ansible_connection": "local"},
        "instance_types": {
            "ml.m5.xlarge": "cpu",
            "ml.g4dn.12xlarge": {"partition": "gpu", "gpus": 4, "gpu_type": "t4", "account": "ml", "qos": "high"},
            "ml.p3.8xlarge": {"partition": "v100", "gpus": 2, "gpu_flag": "gpus-per-node"},
        },
        **extra,
    }
    return parse_slurm_inventory({"slurm": body}, Path("/inv/slurm.yaml"))


def test_n_nodes_one_task_each_whole_nodes_named_after_the_job() -> None:
    assert sbatch_argv(job(), inventory()) == (
        "sbatch",
        "--parsable",
        "--job-name=nightly-etl-7",
        "--nodes=3",
        "--ntasks-per-node=1",
        "--partition=cpu",
        "--export=NONE",
        "--no-requeue",  # a node failure fails the job, naming the node
        "--chdir=/tmp",
        "--output=/dev/null",
        "--exclusive",
        "--time=1440",  # SageMaker's default MaxRuntimeInSeconds, a day
    )


def test_not_exclusive_when_the_inventory_says_so_and_the_shared_dir_is_the_work_dir() -> None:
    argv = sbatch_argv(job(count=1), inventory(exclusive=False, shared_dir="/shared/dp"))
    assert "--exclusive" not in argv
    assert "--nodes=1" in argv
    assert "--chdir=/shared/dp" in argv


@pytest.mark.parametrize(("seconds", "minutes"), [(1, 1), (59, 1), (60, 1), (61, 2), (3600, 60), (86401, 1441)])
def test_time_limit_is_max_runtime_rounded_up_to_minutes(seconds: int, minutes: int) -> None:
    assert time_limit_minutes(seconds) == minutes
    assert f"--time={minutes}" in sbatch_argv(job(runtime=seconds), inventory())


def test_no_time_limit_without_max_runtime() -> None:
    assert time_limit_minutes(None) is None
    unlimited = dataclasses.replace(job(), max_runtime_seconds=None)
    assert not [a for a in sbatch_argv(unlimited, inventory()) if a.startswith("--time")]
    with pytest.raises(ValueError, match="positive"):
        time_limit_minutes(0)


def test_gpus_account_and_qos_come_from_the_instance_types_mapping() -> None:
    argv = sbatch_argv(job("ml.g4dn.12xlarge"), inventory(account="proj", qos="normal"))
    assert argv[-3:] == ("--gres=gpu:t4:4", "--account=ml", "--qos=high")
    argv = sbatch_argv(job("ml.p3.8xlarge"), inventory(account="proj", qos="normal"))
    assert argv[-3:] == ("--gpus-per-node=2", "--account=proj", "--qos=normal")
    assert "--partition=v100" in argv


def test_an_unmapped_instance_type_names_the_field() -> None:
    with pytest.raises(InventoryError, match=r"slurm\.instance_types has no 'ml\.t3\.medium'"):
        sbatch_argv(job("ml.t3.medium"), inventory())


def test_no_job_environment_value_is_in_argv() -> None:
    secret = "AKIA-not-for-argv"
    sub = submission(job(AWS_SECRET_ACCESS_KEY=secret, MODE="x"), inventory(), ["/opt/agent", "run"])
    assert not [a for a in sub.argv if secret in a]
    assert secret not in sub.script


def test_the_script_runs_the_node_command_once_per_node_and_quotes_every_word(tmp_path: Path) -> None:
    hostile = ["printf", "%s|", "a b", "$(touch pwned)", "'; touch pwned2; '", "`id`", "*"]
    script = batch_script(hostile)
    assert script.startswith("#!/bin/sh\n")
    line = script.splitlines()[-1]
    prefix = "exec srun --export=ALL --ntasks-per-node=1 --kill-on-bad-exit=1 -- "
    assert line.startswith(prefix)
    assert shlex.split(line[len(prefix) :]) == hostile
    # Run through a real sh with srun replaced by a function printing its words:
    # every hostile word arrives as itself, and nothing was executed.
    fake = script.replace("exec srun", 'srun() { shift 4; "$@"; }; srun', 1)
    out = subprocess.run(["sh", "-c", fake], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out == "a b|$(touch pwned)|'; touch pwned2; '|`id`|*|"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="empty"):
        batch_script([])


def test_shell_command_survives_the_submit_nodes_shell() -> None:
    argv = sbatch_argv(job(), inventory(shared_dir="/shared/a dir"))
    assert shlex.split(shell_command(argv)) == list(argv)
