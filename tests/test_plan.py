"""Planning: algo names, sharding, file:// prefix listing, the documents each host gets."""

from __future__ import annotations

from pathlib import Path

from distproc.inventory import Host
from distproc.plan import SourceFile, algo_names, build_plan, host_task, shard
from distproc.spec import job_arn, parse_job
from distproc.staging.local_files import list_prefix


def make_job(count: int = 3, distribution: str = "ShardedByS3Key") -> object:
    return parse_job(
        {
            "ProcessingJobName": "plan-test",
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.xlarge"}},
            "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": ["python3", "x.py"]},
            "Environment": {"A": "1"},
            "ProcessingInputs": [
                {
                    "InputName": "data",
                    "S3Input": {
                        "S3Uri": "file:///data/",
                        "LocalPath": "/opt/ml/processing/input",
                        "S3DataDistributionType": distribution,
                    },
                }
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "out",
                        "S3Output": {"S3Uri": "file:///out/", "LocalPath": "/opt/ml/processing/output"},
                    }
                ]
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        }
    )


def hosts(n: int) -> list[Host]:
    return [Host(name=f"h{i}", address=f"10.0.0.{i}", work_dir=f"/w{i}") for i in range(1, n + 1)]


def test_algo_names_are_numeric_order() -> None:
    """algo-1..algo-N in numeric order: algo-10 comes after algo-9."""
    names = algo_names(11)
    assert names[0] == "algo-1" and names[8:] == ("algo-9", "algo-10", "algo-11")


def test_shard_is_round_robin_disjoint_and_complete() -> None:
    """Each host gets floor/ceil of n/N items, deterministically, together all of them."""
    parts = shard(list("gfedcba"), 3)
    assert parts == (("a", "d", "g"), ("b", "e"), ("c", "f"))
    assert shard(["x"], 3) == (("x",), (), ())


def test_plan_assigns_shards_and_replicas() -> None:
    """ShardedByS3Key splits files across hosts; FullyReplicated gives every host all."""
    files = [SourceFile(f"/data/{i}", f"{i}.csv", 1) for i in range(5)]
    job = make_job()
    plan = build_plan(job, job_arn(job.name), hosts(3), {"data": files})  # type: ignore[arg-type]
    got = [[f.relative_path for f in a.inputs[0].files] for a in plan.assignments]
    assert got == [["0.csv", "3.csv"], ["1.csv", "4.csv"], ["2.csv"]]
    replicated = make_job(distribution="FullyReplicated")
    plan = build_plan(replicated, "arn", hosts(3), {"data": files})  # type: ignore[arg-type]
    assert all(len(a.inputs[0].files) == 5 for a in plan.assignments)


def test_host_task_carries_the_contract() -> None:
    """The task names the host, lists every algo with its address, and carries both config documents."""
    job = make_job()
    plan = build_plan(job, job_arn(job.name), hosts(3), {"data": []})  # type: ignore[arg-type]
    task = host_task(plan, plan.assignments[1], 4.0).to_doc()  # the document as it travels
    assert task["algo"] == "algo-2"
    assert task["add_hosts"] == [["algo-1", "10.0.0.1"], ["algo-2", "10.0.0.2"], ["algo-3", "10.0.0.3"]]
    assert task["resource_config"]["current_host"] == "algo-2"
    assert task["resource_config"]["hosts"] == ["algo-1", "algo-2", "algo-3"]
    assert task["processing_job_config"]["ProcessingJobArn"] == job_arn("plan-test")
    assert task["entrypoint"] == ["python3", "x.py"] and task["arguments"] is None
    assert task["local_paths"] == ["/opt/ml/processing/input", "/opt/ml/processing/output"]
    assert task["max_runtime_seconds"] == 60 and task["stop_grace_seconds"] == 4.0
    assert plan.assignments[1].job_dir == "/w2/jobs/plan-test/algo-2"


def test_without_stopping_condition_hosts_enforce_sagemakers_one_day() -> None:
    """No StoppingCondition: as SageMaker, the job is limited to 86400 s, and says so.

    The task each agent enforces carries the limit, and the processingjobconfig.json
    it writes into the container shows it, as SageMaker's does: no job runs forever.
    """
    request = make_job().request_dict()  # type: ignore[attr-defined]
    del request["StoppingCondition"]
    job = parse_job(request)
    plan = build_plan(job, job_arn(job.name), hosts(2), {"data": []})
    for assignment in plan.assignments:
        task = host_task(plan, assignment).to_doc()
        assert task["max_runtime_seconds"] == 86400
        assert task["processing_job_config"]["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert job.request_dict()["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}  # what describe echoes


def test_file_prefix_is_a_string_prefix_not_a_folder(tmp_path: Path) -> None:
    """file:///d/a matches /d/a/x and /d/ab/x; the rest of the path is the name under LocalPath."""
    (tmp_path / "a").mkdir()
    (tmp_path / "ab").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    (tmp_path / "ab" / "x").write_text("22")
    (tmp_path / "b" / "x").write_text("3")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "b" / "x")
    found = {f.relative_path: f.size for f in list_prefix(f"file://{tmp_path}/a")}
    assert found == {"x": 1, "b/x": 2}
    assert {f.relative_path for f in list_prefix(f"file://{tmp_path}/a/")} == {"x"}
    single = list_prefix(f"file://{tmp_path}/b/x")
    assert [(f.relative_path, f.size) for f in single] == [("x", 1)]
    assert list_prefix(f"file://{tmp_path}/nothing-here") == []


def test_pipe_inputs_become_the_hosts_named_pipes_with_their_shard_in_key_order() -> None:
    """Pipe mode: each host's task names <LocalPath>_0 and its own objects, sorted by key; the task travels whole."""
    from distproc.agent.protocol import HostTask

    doc = make_job().request_dict()  # type: ignore[attr-defined]
    doc["ProcessingInputs"][0]["S3Input"].update(S3InputMode="Pipe", S3CompressionType="Gzip")
    doc["ProcessingInputs"].append(
        {
            "InputName": "s3data",
            "S3Input": {
                "S3Uri": "s3://b/p/",
                "LocalPath": "/opt/ml/processing/s3data/",
                "S3InputMode": "Pipe",
                "S3DataDistributionType": "FullyReplicated",
            },
        }
    )
    job = parse_job(doc)
    files = [SourceFile(f"/data/{i}.gz", f"{i}.gz", i) for i in (4, 0, 3, 1, 2)]
    objects = [SourceFile(f"s3://b/p/{k}", k, 7) for k in ("z", "a b", "m")]
    plan = build_plan(job, "arn", hosts(2), {"data": files, "s3data": objects})
    pipes = [host_task(plan, a).pipes for a in plan.assignments]
    first = pipes[0][0]
    assert (first.name, first.path, first.gzip, first.staged) == (
        "data",
        "/opt/ml/processing/input_0",
        True,
        "/opt/ml/.distproc-pipe/0",
    )
    assert [p[0].objects for p in pipes] == [(("0.gz", 0), ("2.gz", 2), ("4.gz", 4)), (("1.gz", 1), ("3.gz", 3))]
    s3 = pipes[1][1]
    assert (s3.path, s3.gzip, s3.staged) == ("/opt/ml/processing/s3data_0", False, None)
    assert s3.objects == (("s3://b/p/a b", 7), ("s3://b/p/m", 7), ("s3://b/p/z", 7))
    task = host_task(plan, plan.assignments[1])
    assert HostTask.from_doc(task.to_doc()) == task
