"""Names from a job that become paths: refused at validation, and again where the path is made.

Each guard is also called directly with a bad name, to show it holds even if
validation were bypassed. No cluster: the agent's side is its own code, run here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from distproc import ProcessingInput, ProcessingOutput, Processor, ScriptProcessor, Store
from distproc.agent import staging as agent_staging
from distproc.agent.task import JobDir, OutputSpec, TaskError, parse_task
from distproc.errors import SpecError, UnsafePathError, Violation
from distproc.inventory import Host
from distproc.plan import job_dir
from distproc.sdk.request import output_request, plan_code
from distproc.spec import parse_job
from distproc.userfiles import inside

XL = "ml.m5.xlarge"

BAD_NAMES = {
    "slash": ("a/b", 'must not contain "/"'),
    "climb": ("../../../../../tmp/evil", 'must not contain "/"'),
    "empty": ("", "must not be empty"),
    "dotdot": ("..", 'must not be "." or ".."'),
    "dot": (".", 'must not be "." or ".."'),
    "nul": ("a\x00b", "must not contain control characters (U+0000 at position 1)"),
    "newline": ("a\nb", "must not contain control characters (U+000A at position 1)"),
    "surrogate": ("a\ud800", "must be valid Unicode text (U+D800 at position 1)"),
    "long": ("é" * 101, "must be at most 200 bytes in UTF-8 (got 202)"),
}


def request(input_name: str = "data", output_name: str = "out") -> dict[str, Any]:
    return {
        "ProcessingJobName": "names",
        "ProcessingResources": {"ClusterConfig": {"InstanceType": XL}},
        "AppSpecification": {"ImageUri": "busybox"},
        "ProcessingInputs": [
            {"InputName": "code", "S3Input": {"S3Uri": "file:///srv/code/", "LocalPath": "/opt/ml/processing/code"}},
            {"InputName": input_name, "S3Input": {"S3Uri": "file:///srv/in/", "LocalPath": "/opt/ml/processing/in"}},
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {"OutputName": output_name, "S3Output": {"S3Uri": "s3://b/o/", "LocalPath": "/opt/ml/processing/out"}}
            ]
        },
    }


def violations(doc: dict[str, Any]) -> list[Violation]:
    with pytest.raises(SpecError) as info:
        parse_job(doc)
    return list(info.value.violations)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, rule", BAD_NAMES.values(), ids=list(BAD_NAMES))
def test_bad_input_name_is_a_field_error(name: str, rule: str) -> None:
    [violation] = violations(request(input_name=name))
    assert violation.path == "ProcessingInputs[1].InputName"
    assert violation.rule.startswith(rule), violation.rule


@pytest.mark.parametrize("name, rule", BAD_NAMES.values(), ids=list(BAD_NAMES))
def test_bad_output_name_is_a_field_error(name: str, rule: str) -> None:
    [violation] = violations(request(output_name=name))
    assert violation.path == "ProcessingOutputConfig.Outputs[0].OutputName"
    assert violation.rule.startswith(rule), violation.rule


@pytest.mark.parametrize("name", ["a..b", "..a", "train data", "données", "x" * 200, "-", "a\\b"])
def test_plain_names_are_accepted(name: str) -> None:
    job = parse_job(request(input_name=name, output_name=name))
    assert job.inputs[1].name == name and job.outputs[0].name == name


def test_job_name_is_limited_by_the_models_pattern() -> None:
    [violation] = violations({**request(), "ProcessingJobName": "../x"})
    assert violation.path == "ProcessingJobName"


# --- the Python API: refused before any path is made or anything runs ---------------------


def processor(home: Path, cls: type[Processor] = Processor, **kw: Any) -> Processor:
    return cls(  # type: ignore[call-arg]
        role=None,
        image_uri="busybox",
        instance_count=1,
        instance_type=XL,
        inventory=home / "no-such-inventory.yaml",
        home=home / "store",
        **kw,
    )


def test_sdk_output_name_that_climbs_is_refused_before_running(tmp_path: Path) -> None:
    """The reported defect: the default destination was data/<job>/output/../../../../../tmp/evil/."""
    out = ProcessingOutput(source="/opt/ml/processing/output", output_name="../../../../../tmp/evil")
    # run(): the SpecError comes before the (missing) inventory is even read.
    with pytest.raises(SpecError) as info:
        processor(tmp_path).run(outputs=[out], job_name="prep", wait=False, logs=False)
    assert [str(v) for v in info.value.violations] == [
        'outputs[0].output_name: must not contain "/" (got "../../../../../tmp/evil")'
    ]
    assert not (tmp_path / "store" / "data").exists()


# An empty name is no name to the SDK: it gets input-1 / output-1 (tested below).
SDK_BAD_NAMES = {k: v for k, v in BAD_NAMES.items() if k != "empty"}


@pytest.mark.parametrize("name, rule", SDK_BAD_NAMES.values(), ids=list(SDK_BAD_NAMES))
def test_sdk_names_give_the_specs_message_naming_the_argument(tmp_path: Path, name: str, rule: str) -> None:
    sdk_in = ProcessingInput(source=str(tmp_path), destination="/opt/ml/processing/in", input_name=name)
    sdk_out = ProcessingOutput(source="/opt/ml/processing/out", output_name=name)
    with pytest.raises(SpecError) as info:
        processor(tmp_path).request(inputs=[sdk_in], outputs=[sdk_out], job_name="prep")
    found = {v.path: v.rule for v in info.value.violations}
    assert list(found) == ["inputs[0].input_name", "outputs[0].output_name"]
    assert all(r.startswith(rule) for r in found.values()), found


def test_sdk_empty_names_get_the_sdks_default_names(tmp_path: Path) -> None:
    out = ProcessingOutput(source="/opt/ml/processing/out", output_name="")
    doc = processor(tmp_path).request(outputs=[out], job_name="prep")
    assert doc["ProcessingOutputConfig"]["Outputs"][0]["OutputName"] == "output-1"


def test_sdk_bad_job_name_makes_no_folder_and_is_reported_with_the_rest(tmp_path: Path) -> None:
    """The code would be copied to data/<job>/input/code/: a job name that climbs places nothing."""
    script = tmp_path / "prep.py"
    script.write_text("print('hi')\n")
    out = ProcessingOutput(source="/opt/ml/processing/out")  # default destination: data/<job>/output/output-1/
    with pytest.raises(SpecError) as info:
        processor(tmp_path, ScriptProcessor, command=["python3"]).run(
            code=str(script), outputs=[out], job_name="../../escaped", wait=False, logs=False
        )
    [violation] = info.value.violations  # no S3Uri problem follows from it
    assert violation.path == "ProcessingJobName" and "letters, digits and hyphens" in violation.rule
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "store" / "data").exists()


# --- the guards, called directly with a bad name --------------------------------------------


def test_default_output_destination_guard(tmp_path: Path) -> None:
    """output_request with a job name validation never saw: the default destination is refused."""
    problems: list[Violation] = []
    item = ProcessingOutput(source="/opt/ml/processing/out", output_name="out")
    with pytest.raises(UnsafePathError, match=r"job name '\.\./\.\./evil'"):
        output_request(0, item, tmp_path, "../../evil", problems)
    good = output_request(0, item, tmp_path, "prep", problems)
    assert good["S3Output"]["S3Uri"] == (tmp_path / "data" / "prep" / "output" / "out").as_uri() + "/"


def test_code_folder_guard(tmp_path: Path) -> None:
    script = tmp_path / "prep.py"
    script.write_text("print('hi')\n")
    with pytest.raises(UnsafePathError, match="job name"):
        plan_code(str(script), None, tmp_path / "store", "..")


def test_store_log_folder_guard(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    try:
        with pytest.raises(UnsafePathError):
            store.create_job("../../evil", "arn:x", {}, None)
        assert store.list_jobs() == []  # refused before it was recorded
        store.create_job("ok", "arn:x", {}, None)
        assert store.log_path("ok", "algo-1").parent == tmp_path / "store" / "logs" / "ok"
        with pytest.raises(UnsafePathError):
            store.log_path("ok", "../../../evil")
    finally:
        store.close()
    assert not (tmp_path / "evil").exists()


def test_host_job_folder_guard() -> None:
    host = Host(name="h1", address="10.0.0.1", work_dir="/var/tmp/distproc")
    assert job_dir(host, "prep", "algo-1") == "/var/tmp/distproc/jobs/prep/algo-1"
    with pytest.raises(UnsafePathError, match="/var/tmp/distproc/jobs"):
        job_dir(host, "../../etc", "algo-1")


def test_inside_refuses_names_and_links_that_lead_out(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    assert inside(folder, "a..b", "c") == folder / "a..b" / "c"
    for name in ("", ".", "..", "a/b", "/abs", "a\x00b"):
        with pytest.raises(UnsafePathError):
            inside(folder, name)
    (folder / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="through a link"):
        inside(folder, "link", "x")
    assert inside(PurePosixPath("/w/jobs"), "prep") == PurePosixPath("/w/jobs/prep")


# --- the agent's side -----------------------------------------------------------------------


def output(name: str) -> OutputSpec:
    return OutputSpec(name, "/opt/ml/processing/out", "s3://b/o/", "EndOfJob")


def test_agent_uploaded_map_guard(tmp_path: Path) -> None:
    """uploaded-<name>.json: a name with a / was a path into another folder."""
    jobdir = JobDir(str(tmp_path / "job"))
    assert agent_staging._uploaded_map_path(jobdir, output("out")) == str(tmp_path / "job" / "uploaded-out.json")
    for name in ("../../x", "a/b", "a\x00b"):
        with pytest.raises(agent_staging.StagingFailed) as info:
            agent_staging._uploaded_map_path(jobdir, output(name))
        assert info.value.client_error


def test_agent_job_folder_guard(tmp_path: Path) -> None:
    jobdir = JobDir(str(tmp_path / "job"))
    for name in ("..", "../task.json", ""):
        with pytest.raises(TaskError):
            jobdir.path(name)
    os.makedirs(jobdir.root)
    os.symlink(str(tmp_path), os.path.join(jobdir.root, "uploaded-out.json"))
    with pytest.raises(TaskError, match="through a link"):
        jobdir.path("uploaded-out.json")
    # A link that stays in the folder is fine, as is a job folder reached through a link.
    os.symlink("result.json", os.path.join(jobdir.root, "inner"))
    assert jobdir.path("inner") == os.path.join(jobdir.root, "inner")
    os.symlink(jobdir.root, str(tmp_path / "alias"))
    aliased = JobDir(str(tmp_path / "alias"))
    assert aliased.path("task.json") == str(tmp_path / "alias" / "task.json")
    with pytest.raises(TaskError, match="through a link"):
        aliased.path("uploaded-out.json")


def test_agent_task_refuses_an_output_name_that_is_no_file_name() -> None:
    """The agent refuses such a task when it is prepared, not after the container ran."""
    doc = {
        "version": 1,
        "job_name": "prep",
        "algo": "algo-1",
        "image": "busybox",
        "gpu_mode": "none",
        "resource_config": {},
        "processing_job_config": {},
        "docker": {"command": ["docker"]},
        "hosts": ["algo-1"],
        "add_hosts": [],
        "environment": [],
        "local_paths": ["/opt/ml/processing/out"],
        "outputs": [
            {"name": "../up", "local_path": "/opt/ml/processing/out", "uri": "s3://b/o/", "upload_mode": "EndOfJob"}
        ],
    }
    with pytest.raises(TaskError, match=r"output name '\.\./up'"):
        parse_task(json.loads(json.dumps(doc)))
    doc["outputs"][0]["name"] = "up"  # type: ignore[index]
    assert parse_task(doc).outputs[0].name == "up"
