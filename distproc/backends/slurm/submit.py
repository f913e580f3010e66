"""One processing job to one Slurm batch job: the sbatch command line and its script (pure).

- N nodes (InstanceCount), one task per node, whole nodes unless the inventory
  says ``exclusive: false``;
- ``--time`` is MaxRuntimeInSeconds rounded up to whole minutes (Slurm's unit;
  the agents still end the job at the exact second), none without it;
- ``--job-name`` is the ProcessingJobName; partition, GPUs, account and QoS
  come from the inventory's mapping of the job's InstanceType;
- ``--no-requeue``: a node failure fails the job, naming the node; Slurm
  does not start it again on other nodes behind the coordinator's back;
- ``--export=NONE``: the submitting shell's environment (AWS keys, tokens)
  does not travel into the job; the job's own Environment reaches the
  container by the config files, as on the SSH fleet.

The script goes to sbatch on its standard input, not as a file or an
argument: nothing of it is in any process's argv. Every word is quoted with
shlex.quote, so :func:`shell_command` is safe to run through the submit node's
shell (over SSH), and :func:`batch_script` puts nothing unquoted in sh.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ...spec import ProcessingJob
from .inventory import PartitionMapping, SlurmInventory

__all__ = ["Submission", "batch_script", "sbatch_argv", "shell_command", "submission", "time_limit_minutes"]


@dataclass(frozen=True, slots=True)
class Submission:
    """What the backend runs on the submit node: ``argv``, with ``script`` on its standard input."""

    argv: tuple[str, ...]
    script: str


def time_limit_minutes(max_runtime_seconds: int | None) -> int | None:
    """MaxRuntimeInSeconds as Slurm's --time, whole minutes rounded up (61 s is 2 min); None for none."""
    if max_runtime_seconds is None:
        return None
    if max_runtime_seconds <= 0:
        raise ValueError(f"MaxRuntimeInSeconds must be positive, not {max_runtime_seconds}")
    return -(-max_runtime_seconds // 60)


def sbatch_argv(
    job: ProcessingJob, inventory: SlurmInventory, *, sbatch: str = "sbatch", output: str = "/dev/null"
) -> tuple[str, ...]:
    """The sbatch command line for ``job`` (no shell: a list of words); the batch step's output to ``output``."""
    mapping = inventory.mapping_for(job.cluster.instance_type)
    nodes = job.cluster.instance_count
    argv = [
        sbatch,
        "--parsable",  # prints "jobid[;cluster]": the one thing we read back
        f"--job-name={job.name}",
        f"--nodes={nodes}",  # one number is both the least and the most
        "--ntasks-per-node=1",
        f"--partition={mapping.partition}",
        "--export=NONE",
        # A node failure ends the job (Failed, naming the node) rather than queueing it again.
        "--no-requeue",
        # The submit node's current folder need not exist on the nodes.
        f"--chdir={inventory.shared_dir or '/tmp'}",
        f"--output={output}",
    ]
    if inventory.exclusive:
        argv.append("--exclusive")
    minutes = time_limit_minutes(job.max_runtime_seconds)
    if minutes is not None:
        argv.append(f"--time={minutes}")
    argv += _gpu_options(mapping)
    if mapping.account is not None:
        argv.append(f"--account={mapping.account}")
    if mapping.qos is not None:
        argv.append(f"--qos={mapping.qos}")
    return tuple(argv)


def _gpu_options(mapping: PartitionMapping) -> list[str]:
    if mapping.gpus == 0:
        return []
    typed = f"{mapping.gpu_type}:" if mapping.gpu_type else ""
    if mapping.gpu_flag == "gres":
        return [f"--gres=gpu:{typed}{mapping.gpus}"]
    return [f"--gpus-per-node={typed}{mapping.gpus}"]


def batch_script(node_command: Sequence[str]) -> str:
    """The batch script: one task per node runs ``node_command``; the first to fail ends the others.

    ``--export=ALL`` for the step: sbatch's ``--export=NONE`` would otherwise
    carry over to srun and leave the task without Slurm's own variables.
    """
    if not node_command:
        raise ValueError("node_command is empty")
    return (
        "#!/bin/sh\n"
        "# written by distproc: one task per node\n"
        "exec srun --export=ALL --ntasks-per-node=1 --kill-on-bad-exit=1 -- " + shlex.join(node_command) + "\n"
    )


def submission(
    job: ProcessingJob,
    inventory: SlurmInventory,
    node_command: Sequence[str],
    *,
    sbatch: str = "sbatch",
    output: str = "/dev/null",
) -> Submission:
    """sbatch's argv and the script to feed it, for ``job`` running ``node_command`` on each node."""
    return Submission(sbatch_argv(job, inventory, sbatch=sbatch, output=output), batch_script(node_command))


def shell_command(argv: Sequence[str]) -> str:
    """``argv`` as one command line for the submit node's shell (SSH runs commands through it)."""
    return shlex.join(argv)
