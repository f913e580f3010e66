"""The srun step that reaches one node of an allocation (distproc/backends/slurm/transport.py): its words."""

from __future__ import annotations

import pytest

from distproc.backends.slurm.transport import AfterTransport, SrunTransport, after_argv, step_argv
from distproc.hosts.transport import LocalTransport


def test_one_task_on_the_named_node_beside_the_holding_step_with_the_command_as_words() -> None:
    argv = step_argv("42", "gpu-07", ["python3", "-c", "print('a b')"])
    assert argv[: argv.index("--")] == [
        "srun",
        "--jobid=42",
        "--nodelist=gpu-07",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "--unbuffered",
        "--quiet",
        "--export=PATH",
    ]
    assert argv[argv.index("--") + 1 :] == ["python3", "-c", "print('a b')"]


@pytest.mark.parametrize(
    ("job_id", "node"), [("42;id", "n1"), ("", "n1"), ("42", "n1,n2"), ("42", "-w"), ("42", "a b")]
)
def test_a_job_id_or_node_name_that_is_not_one_is_refused(job_id: str, node: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm"):
        step_argv(job_id, node, ["true"])
    with pytest.raises(ValueError, match="not a Slurm"):
        SrunTransport(LocalTransport("submit"), job_id, node)


def test_after_the_allocation_a_node_is_reached_by_a_short_job_of_its_own_that_waits_little() -> None:
    """Once Slurm ended a job's allocation (time limit, failed node), cleanup reaches each well node this way."""
    argv = after_argv("gpu-07", ["python3", "agent.py", "cleanup", "/w/jobs/j/algo-1"], job_name="j-cleanup")
    head = argv[: argv.index("--")]
    assert head[:4] == ["srun", "--nodelist=gpu-07", "--nodes=1", "--ntasks=1"]
    assert "--time=1" in head and "--job-name=j-cleanup" in head and "--immediate=30" in head
    # No --jobid (the allocation is over); nothing of this process's environment but PATH.
    assert not any(w.startswith("--jobid") for w in head) and "--export=PATH" in head
    assert argv[argv.index("--") + 1 :] == ["python3", "agent.py", "cleanup", "/w/jobs/j/algo-1"]
    for bad in ("n1,n2", "-w", "a b"):
        with pytest.raises(ValueError, match="not a Slurm node name"):
            AfterTransport(LocalTransport("submit"), bad, "j-cleanup")
