"""Which file:// data is bound from a shared folder (run/shared.py), and how the agent binds it.

Only what a copy would give the same way, and only what stays in the shared
folder once links are resolved. Real folders and links under tmp_path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distproc.agent.container import run_argv
from distproc.agent.engine import create_body
from distproc.agent.task import TaskError, parse_task
from distproc.run.shared import shared_binds
from distproc.spec import parse_job
from tests.task_docs import task_doc

IN = "/opt/ml/processing/input"


def job(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None) -> Any:
    return parse_job(
        {
            "ProcessingJobName": "j",
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}},
            "AppSpecification": {"ImageUri": "busybox"},
            "ProcessingInputs": inputs,
            "ProcessingOutputConfig": {"Outputs": outputs or []},
        }
    )


def file_in(name: str, path: str, distribution: str = "FullyReplicated", **extra: str) -> dict[str, Any]:
    s3 = {"S3Uri": f"file://{path}", "LocalPath": f"{IN}/{name}", "S3DataType": "S3Prefix"}
    return {"InputName": name, "S3Input": {**s3, "S3DataDistributionType": distribution, **extra}}


def file_out(name: str, path: str) -> dict[str, Any]:
    return {"OutputName": name, "S3Output": {"S3Uri": f"file://{path}", "LocalPath": f"/opt/ml/processing/{name}"}}


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    (root / "data").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    (root / "escape").symlink_to(tmp_path / "private")
    return root


def test_a_replicated_folder_in_the_shared_dir_is_bound_read_only(shared: Path) -> None:
    binds = shared_binds(job([file_in("a", f"{shared}/data/")], [file_out("out", f"{shared}/results")]), str(shared))
    assert [(b.name, b.source, b.target, b.read_only) for b in binds.inputs] == [
        ("a", str(shared / "data"), f"{IN}/a", True)
    ]
    assert [(b.name, b.source, b.read_only) for b in binds.outputs] == [("out", str(shared / "results"), False)]


def test_what_a_bind_would_not_give_as_a_copy_does_is_copied(shared: Path, tmp_path: Path) -> None:
    inputs = [
        file_in("prefix", f"{shared}/data"),  # a prefix: also data2/, dataset.csv ... a copy's matches
        file_in("sharded", f"{shared}/data/", "ShardedByS3Key"),
        file_in("gz", f"{shared}/data/", S3CompressionType="Gzip", S3InputMode="Pipe"),
        file_in("outside", f"{tmp_path}/private/"),
        file_in("link", f"{shared}/escape/"),  # in the shared folder by name, not once resolved
        {"InputName": "s3", "S3Input": {"S3Uri": "s3://b/k/", "LocalPath": f"{IN}/s3", "S3DataType": "S3Prefix"}},
    ]
    outputs = [file_out("out", f"{tmp_path}/private/out"), file_out("o2", f"{shared}/escape/o")]
    binds = shared_binds(job(inputs, outputs), str(shared))
    assert (binds.inputs, binds.outputs) == ((), ())


def test_nothing_is_bound_without_a_shared_dir(shared: Path) -> None:
    binds = shared_binds(job([file_in("a", f"{shared}/data/")], [file_out("out", f"{shared}/r")]), None)
    assert (binds.inputs, binds.outputs) == ((), ())


def test_the_agent_binds_them_over_their_local_paths() -> None:
    binds = [["/shared/data", f"{IN}/a", True], ["/shared/results", "/opt/ml/processing/out", False]]
    task = parse_task(task_doc(binds=binds))
    argv = run_argv(task, "/ml", None, [])
    volumes = [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]
    assert volumes == ["/ml:/opt/ml", f"/shared/data:{IN}/a:ro", "/shared/results:/opt/ml/processing/out"]
    assert create_body(task, "/ml")["HostConfig"]["Binds"] == volumes


@pytest.mark.parametrize(
    ("bind", "what"),
    [
        (["/shared/d", "/etc", True], "outside /opt/ml/processing/"),
        (["relative", f"{IN}/a", True], "absolute path"),
        (["/shared/a:b", f"{IN}/a", True], "absolute path"),
        (["/shared/../etc", f"{IN}/a", True], "absolute path"),
        (["/shared/d", f"{IN}/a"], "triple"),
    ],
)
def test_the_agent_refuses_a_bind_it_cannot_make_safely(bind: list[Any], what: str) -> None:
    with pytest.raises(TaskError, match=what):
        parse_task(task_doc(binds=[bind]))


def test_an_output_folder_is_made_once_bound_and_one_that_cannot_be_is_fetched_instead(shared: Path) -> None:
    (shared / "taken").write_text("a file where the output folder would go")
    outputs = [file_out("out", f"{shared}/results/run1"), file_out("bad", f"{shared}/taken/x")]
    binds = shared_binds(job([], outputs), str(shared))
    assert [b.name for b in binds.outputs] == ["out"]
    assert (shared / "results" / "run1").is_dir()
    # The same answer the second time (EndOfJob asks again, after Prepare).
    assert shared_binds(job([], outputs), str(shared)) == binds
