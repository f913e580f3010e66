"""The srun step that reaches one node of an allocation (distproc/backends/slurm/transport.py): its words."""

from __future__ import annotations

import pytest

from distproc.backends.slurm.transport import SrunTransport, step_argv
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
        "--export=ALL",
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
