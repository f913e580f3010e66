"""distproc.sdk.processing: the SageMaker SDK's Processor API, building the same job document the CLI runs.

Unit tests need no cluster; the tests marked ``cluster`` run real jobs on the
namespace cluster (run them under /tmp/distproc-cluster.lock, see the brief).
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest

from distproc import (
    FrameworkProcessor,
    InventoryError,
    JobExistsError,
    ProcessingInput,
    ProcessingOutput,
    Processor,
    ScriptProcessor,
    SpecError,
    Store,
    UnexpectedStatusError,
    load_job,
)
from distproc.sdk.request import CodePlan, name_from_base, ship_code
from tests.cluster.jobs import PY, Env, running_everywhere, wait_until
from tests.sdk_snippets import published_script_snippet_compiles, script_snippet, seed_snippet

XL = "ml.m5.xlarge"
ROLE = "arn:aws:iam::123456789012:role/prep"
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
STAMP = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}"

# The SageMaker Python SDK's signatures (sagemaker/processing.py, v2), to mirror.
SDK_PROCESSOR = [
    "role",
    "image_uri",
    "instance_count",
    "instance_type",
    "entrypoint",
    "volume_size_in_gb",
    "volume_kms_key",
    "output_kms_key",
    "max_runtime_in_seconds",
    "base_job_name",
    "sagemaker_session",
    "env",
    "tags",
    "network_config",
]
SDK_SCRIPT_PROCESSOR = [p for p in SDK_PROCESSOR if p != "entrypoint"]
SDK_SCRIPT_PROCESSOR.insert(2, "command")
SDK_RUN = {
    "inputs": None,
    "outputs": None,
    "arguments": None,
    "wait": True,
    "logs": True,
    "job_name": None,
    "experiment_config": None,
    "kms_key": None,
}
SDK_INPUT = {
    "source": None,
    "destination": None,
    "input_name": None,
    "s3_data_type": "S3Prefix",
    "s3_input_mode": "File",
    "s3_data_distribution_type": "FullyReplicated",
    "s3_compression_type": "None",
    "s3_input": None,
    "dataset_definition": None,
    "app_managed": False,
}
SDK_OUTPUT = {
    "source": None,
    "destination": None,
    "output_name": None,
    "s3_upload_mode": "EndOfJob",
    "app_managed": False,
    "feature_store_output": None,
}


def positional(func: Any) -> dict[str, Any]:
    params = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}


def processor(tmp_path: Path, cls: type[Processor] = Processor, **kwargs: Any) -> Any:
    settings: dict[str, Any] = {"image_uri": PY, "instance_count": 3, "instance_type": XL}
    if cls is ScriptProcessor:
        settings["command"] = ["python3"]
    return cls(**{**settings, **kwargs}, inventory=tmp_path / "inventory.yaml", home=tmp_path / "home")


def s3_input(name: str, uri: str, local: str, distribution: str = "FullyReplicated") -> dict[str, Any]:
    return {
        "InputName": name,
        "AppManaged": False,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": distribution,
            "S3CompressionType": "None",
        },
    }


def s3_output(name: str, uri: str, local: str) -> dict[str, Any]:
    return {
        "OutputName": name,
        "AppManaged": False,
        "S3Output": {"S3Uri": uri, "LocalPath": local, "S3UploadMode": "EndOfJob"},
    }


def violations(exc: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return {v.path: v.rule for v in exc.value.violations}


# -- the SDK's surface ---------------------------------------------------------------------


def test_processors_take_the_sdks_parameters_in_its_order() -> None:
    """Positional calls written for the SDK mean the same here; only volume_size_in_gb's default differs."""
    assert list(positional(Processor.__init__)) == SDK_PROCESSOR
    assert list(positional(ScriptProcessor.__init__)) == SDK_SCRIPT_PROCESSOR
    defaults = positional(Processor.__init__)
    assert all(v is None for v in defaults.values())  # SDK: volume_size_in_gb=30, which hosts you own ignore
    assert inspect.signature(Processor.__init__).parameters["inventory"].kind is inspect.Parameter.KEYWORD_ONLY


def test_script_processor_takes_processors_parameters_with_command_for_entrypoint(tmp_path: Path) -> None:
    """One parameter list in two orders: same names, kinds, defaults and types, every one reaching the processor.

    ScriptProcessor forwards what it was given to Processor by name, so a
    parameter added to one and not the other fails here instead of being
    quietly dropped or defaulted.
    """
    ours = dict(inspect.signature(Processor.__init__).parameters)
    script = dict(inspect.signature(ScriptProcessor.__init__).parameters)
    assert ours.pop("entrypoint").default is None and script.pop("command").default is None
    assert sorted(script.values(), key=lambda p: p.name) == sorted(ours.values(), key=lambda p: p.name)
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in (*ours.values(), *script.values()))
    given = {
        "role": ROLE,
        "volume_size_in_gb": 5,
        "volume_kms_key": "k1",
        "output_kms_key": "k2",
        "max_runtime_in_seconds": 60,
        "base_job_name": "prep",
        "env": {"A": "1"},
        "tags": [{"Key": "t", "Value": "v"}],
        "network_config": {"EnableNetworkIsolation": True},
        "aws_credentials": "forward",
        "assume_role": True,
        "s3_endpoint_url": "http://s3.local",
        "stop_grace_seconds": 7.0,
        "fan_out": 3,
        "metrics_interval_seconds": 2.0,
        "ship_image": True,
    }
    made = processor(tmp_path, ScriptProcessor, **given)
    assert (made.command, made.entrypoint, made.image_uri, made.instance_count) == (["python3"], None, PY, 3)
    sdk_given = {k: v for k, v in given.items() if k in SDK_PROCESSOR}
    assert {k: getattr(made, k) for k in sdk_given} == sdk_given
    options = made._options
    assert (options.aws_credentials, options.assume_role) == ("forward", True)
    assert options.s3_endpoint_url == "http://s3.local"
    assert (options.stop_grace_seconds, options.fan_out, options.metrics_interval_seconds) == (7.0, 3, 2.0)
    assert options.ship_image is True and options.home == tmp_path / "home"


def test_ship_image_is_a_keyword_of_both_processors_and_reaches_the_run(tmp_path: Path) -> None:
    """ship_image=True is `run --ship-image`: distproc's own, keyword-only, off by default."""
    for cls in (Processor, ScriptProcessor):
        param = inspect.signature(cls.__init__).parameters["ship_image"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is False
    assert processor(tmp_path, ship_image=True)._options.run_options(live_logs=False).ship_image is True
    assert processor(tmp_path, ScriptProcessor, ship_image=True)._options.run_options(False).ship_image is True
    assert processor(tmp_path)._options.run_options(live_logs=False).ship_image is False


def test_run_takes_the_sdks_parameters_and_defaults() -> None:
    """Processor.run and ScriptProcessor.run (code first) have the SDK's names and defaults."""
    assert positional(Processor.run) == SDK_RUN
    script_run = positional(ScriptProcessor.run)
    assert next(iter(script_run)) == "code" and script_run["code"] is inspect.Parameter.empty
    assert {k: v for k, v in script_run.items() if k != "code"} == SDK_RUN


def test_inputs_and_outputs_have_the_sdks_fields_and_defaults() -> None:
    """ProcessingInput and ProcessingOutput take the SDK's parameters, in order, with its defaults."""
    assert positional(ProcessingInput) == SDK_INPUT
    assert positional(ProcessingOutput) == SDK_OUTPUT


# -- the request is the job document ---------------------------------------------------------


def test_processor_request_is_the_hand_written_job_document(tmp_path: Path) -> None:
    """Every SDK setting lands where CreateProcessingJob has it; local folders become file:// URIs."""
    data = tmp_path / "my data"
    data.mkdir()
    (data / "a.csv").write_text("1\n")
    proc = processor(
        tmp_path,
        role=ROLE,
        entrypoint=("python3", "/opt/ml/processing/input/code/prep.py"),
        volume_size_in_gb=50,
        max_runtime_in_seconds=600,
        env={"MODE": "fast"},
        tags={"team": "ml"},
        network_config={"EnableNetworkIsolation": False},
    )
    doc = proc.request(
        inputs=[
            ProcessingInput(str(data), "/opt/ml/processing/input/data", s3_data_distribution_type="ShardedByS3Key"),
            ProcessingInput("s3://bucket/ref/", "/opt/ml/processing/input/ref", input_name="ref"),
        ],
        outputs=[ProcessingOutput("/opt/ml/processing/output", "s3://bucket/out/")],
        arguments=["--rows", "10"],
        job_name="prep-1",
        experiment_config={"ExperimentName": "exp"},
    )
    assert doc == {
        "ProcessingJobName": "prep-1",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 3, "InstanceType": XL, "VolumeSizeInGB": 50}},
        "AppSpecification": {
            "ImageUri": PY,
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/prep.py"],
            "ContainerArguments": ["--rows", "10"],
        },
        "ProcessingInputs": [
            s3_input("input-1", f"file://{tmp_path}/my%20data/", "/opt/ml/processing/input/data", "ShardedByS3Key"),
            s3_input("ref", "s3://bucket/ref/", "/opt/ml/processing/input/ref"),
        ],
        "ProcessingOutputConfig": {"Outputs": [s3_output("output-1", "s3://bucket/out/", "/opt/ml/processing/output")]},
        "Environment": {"MODE": "fast"},
        "NetworkConfig": {"EnableNetworkIsolation": False},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "RoleArn": ROLE,
        "Tags": [{"Key": "team", "Value": "ml"}],
        "ExperimentConfig": {"ExperimentName": "exp"},
    }
    assert proc.arguments == ["--rows", "10"]


def test_the_request_is_a_job_json_the_cli_reads_unchanged(tmp_path: Path) -> None:
    """Written to job.json, `distproc run` reads back the same document: one code path, defaults already filled."""
    (tmp_path / "code.py").write_text("print('hi')\n")
    doc = processor(tmp_path, ScriptProcessor).request(
        tmp_path / "code.py", outputs=[ProcessingOutput("/opt/ml/processing/output")], job_name="same"
    )
    path = tmp_path / "job.json"
    path.write_text(json.dumps(doc))
    # The one member the service, not the SDK, fills in: SageMaker's one-day limit.
    assert "StoppingCondition" not in doc
    assert load_job(path).request_dict() == {**doc, "StoppingCondition": {"MaxRuntimeInSeconds": 86400}}


def test_script_processor_ships_the_script_as_the_code_input(tmp_path: Path) -> None:
    """The script travels as input "code" at /opt/ml/processing/input/code; entrypoint = command + script."""
    (tmp_path / "prep.py").write_text("print('hi')\n")
    proc = processor(tmp_path, ScriptProcessor, command=["python3", "-u"])
    doc = proc.request(str(tmp_path / "prep.py"), arguments=["a"], job_name="script-1")
    home = tmp_path / "home"
    assert doc == {
        "ProcessingJobName": "script-1",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 3, "InstanceType": XL}},
        "AppSpecification": {
            "ImageUri": PY,
            "ContainerEntrypoint": ["python3", "-u", "/opt/ml/processing/input/code/prep.py"],
            "ContainerArguments": ["a"],
        },
        "ProcessingInputs": [
            s3_input("code", f"file://{home}/data/script-1/input/code/", "/opt/ml/processing/input/code")
        ],
    }
    assert not (home / "data").exists()  # request() copies nothing


def test_script_processor_with_source_dir_runs_the_script_inside_it(tmp_path: Path) -> None:
    """As FrameworkProcessor: `code` is a path in source_dir, which is shipped whole."""
    src = tmp_path / "src"
    (src / "jobs").mkdir(parents=True)
    (src / "jobs" / "main.py").write_text("")
    proc = processor(tmp_path, ScriptProcessor)
    doc = proc.request("jobs/main.py", source_dir=src, job_name="framework")
    assert doc["AppSpecification"]["ContainerEntrypoint"] == ["python3", "/opt/ml/processing/input/code/jobs/main.py"]
    with pytest.raises(SpecError) as exc:
        proc.request("missing.py", source_dir=src)
    assert "code" in violations(exc)


def test_script_on_s3_is_staged_from_s3(tmp_path: Path) -> None:
    """An s3:// script is the code input's URI itself; the container runs it by its base name."""
    doc = processor(tmp_path, ScriptProcessor).request("s3://bucket/code/prep.py", job_name="s3code")
    assert doc["ProcessingInputs"] == [s3_input("code", "s3://bucket/code/prep.py", "/opt/ml/processing/input/code")]
    assert doc["AppSpecification"]["ContainerEntrypoint"] == ["python3", "/opt/ml/processing/input/code/prep.py"]


def test_code_is_copied_into_the_jobs_data_folder(tmp_path: Path) -> None:
    """ship_code puts the script (or the folder) where the code input's file:// URI points."""
    (tmp_path / "prep.py").write_text("print(1)\n")
    target = tmp_path / "home" / "data" / "j" / "input" / "code"
    ship_code(CodePlan("file:///unused/", "/x", tmp_path / "prep.py", target), tmp_path / "home")
    assert [p.name for p in target.iterdir()] == ["prep.py"]


# -- local paths, names, defaults ----------------------------------------------------------------


def test_local_paths_become_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative folder, a file and a local output folder become file:// URIs; URIs pass untouched."""
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("single").mkdir()
    Path("single/one.csv").write_text("1")
    doc = processor(tmp_path).request(
        inputs=[
            ProcessingInput("in", "/opt/ml/processing/a"),
            ProcessingInput(Path("single/one.csv"), "/opt/ml/processing/b"),
            ProcessingInput("file:///srv/x", "/opt/ml/processing/c"),
        ],
        outputs=[ProcessingOutput("/opt/ml/processing/out", "results")],
        job_name="paths",
    )
    uris = [i["S3Input"]["S3Uri"] for i in doc["ProcessingInputs"]]
    assert uris == [f"file://{tmp_path}/in/", f"file://{tmp_path}/single/one.csv", "file:///srv/x"]
    assert doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == f"file://{tmp_path}/results/"


def test_a_file_that_prefixes_other_files_is_refused(tmp_path: Path) -> None:
    """data.csv would also stage data.csv.bak (prefix semantics), so it is refused, naming the argument."""
    (tmp_path / "data.csv").write_text("1")
    (tmp_path / "data.csv.bak").write_text("0")
    with pytest.raises(SpecError) as exc:
        processor(tmp_path).request(inputs=[ProcessingInput(tmp_path / "data.csv", "/opt/ml/processing/in")])
    assert "data.csv.bak" in violations(exc)["inputs[0].source"]


def test_default_names_and_destinations_are_the_sdks(tmp_path: Path) -> None:
    """input-1, output-1... where unnamed; outputs without destination go to the job store's data folder."""
    (tmp_path / "d").mkdir()
    given = [
        ProcessingInput(tmp_path / "d", "/opt/ml/processing/a"),
        ProcessingInput("s3://b/k", "/opt/ml/processing/b"),
    ]
    outputs = [ProcessingOutput("/opt/ml/processing/o1"), ProcessingOutput("/opt/ml/processing/o2", output_name="two")]
    doc = processor(tmp_path).request(inputs=given, outputs=outputs, job_name="names")
    assert [i["InputName"] for i in doc["ProcessingInputs"]] == ["input-1", "input-2"]
    outs = doc["ProcessingOutputConfig"]["Outputs"]
    assert [(o["OutputName"], o["S3Output"]["S3Uri"]) for o in outs] == [
        ("output-1", f"file://{tmp_path}/home/data/names/output/output-1/"),
        ("two", f"file://{tmp_path}/home/data/names/output/two/"),
    ]
    assert given[0].input_name is None and outputs[0].output_name is None  # the caller's objects are not changed


def test_job_names_are_base_and_timestamp(tmp_path: Path) -> None:
    """base_job_name (else the image's name) + UTC timestamp with ms; at most 63 characters; a valid name."""
    assert name_from_base("prep", 1_700_000_000.5) == "prep-2023-11-14-22-13-20-500"
    named = processor(tmp_path, base_job_name="nightly").request()["ProcessingJobName"]
    assert re.fullmatch(f"nightly-{STAMP}", named)
    from_image = processor(tmp_path, image_uri="registry:5000/team/my_prep.v2:1").request()["ProcessingJobName"]
    assert re.fullmatch(f"my-prep-v2-{STAMP}", from_image)
    long = processor(tmp_path, base_job_name="x" * 80).request()["ProcessingJobName"]
    assert len(long) == 63 and NAME.fullmatch(long) and NAME.fullmatch(from_image)


def test_script_processor_accepts_an_sdk_style_s3_input_and_network_object(tmp_path: Path) -> None:
    """The SDK's other spellings: ProcessingInput(s3_input=...) and objects with _to_request_dict."""

    class NetworkConfig:
        def _to_request_dict(self) -> dict[str, Any]:
            return {"EnableNetworkIsolation": False, "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["s-1"]}}

    inp = ProcessingInput(s3_input={"S3Uri": "s3://b/p/", "LocalPath": "/opt/ml/processing/p"})
    doc = processor(tmp_path, network_config=NetworkConfig()).request(inputs=[inp], job_name="spellings")
    assert doc["ProcessingInputs"] == [s3_input("input-1", "s3://b/p/", "/opt/ml/processing/p")]
    assert doc["NetworkConfig"]["VpcConfig"]["Subnets"] == ["s-1"]


# -- refused, naming the field -------------------------------------------------------------------


def test_what_the_job_document_refuses_is_a_spec_error_naming_its_field(tmp_path: Path) -> None:
    """Gzip without Pipe, a bad job name, a missing LocalPath: the spec's own violations, by request path."""
    (tmp_path / "d").mkdir()
    inputs = [
        ProcessingInput(tmp_path / "d", "/opt/ml/processing/a", s3_compression_type="Gzip"),
        ProcessingInput("s3://b/k", "/opt/ml/processing/b", s3_input_mode="Pipe"),
    ]
    with pytest.raises(SpecError) as exc:
        processor(tmp_path).request(inputs=inputs, outputs=[ProcessingOutput()], job_name="bad_name")
    found = violations(exc)
    assert set(found) == {
        "ProcessingJobName",
        "ProcessingInputs[0].S3Input.S3CompressionType",
        "ProcessingOutputConfig.Outputs[0].S3Output.LocalPath",
    }
    assert "Gzip" in found["ProcessingInputs[0].S3Input.S3CompressionType"]


def test_what_the_api_cannot_honour_is_refused_naming_the_argument(tmp_path: Path) -> None:
    """sagemaker_session, kms_key, a missing source, a wrong type, logs without wait: SpecError, not ignored."""
    with pytest.raises(SpecError) as exc:
        processor(tmp_path, sagemaker_session=object(), aws_credentials="mine")
    assert set(violations(exc)) == {"sagemaker_session", "aws_credentials"}
    proc = processor(tmp_path)
    with pytest.raises(SpecError) as exc:
        proc.request(inputs=[ProcessingInput(tmp_path / "nope", "/opt/ml/processing/a"), "s3://x"], kms_key="k")
    assert set(violations(exc)) == {"kms_key", "inputs[0].source", "inputs[1]"}
    with pytest.raises(SpecError) as exc:
        proc.run(wait=False)
    assert set(violations(exc)) == {"logs"}
    with pytest.raises(SpecError) as exc:
        processor(tmp_path, ScriptProcessor, command=None).request("prep.py")
    assert set(violations(exc)) == {"command"}
    with pytest.raises(SpecError) as exc:
        processor(tmp_path, ScriptProcessor).request(tmp_path / "missing.py")
    assert set(violations(exc)) == {"code"}


def test_run_refuses_before_touching_a_host(tmp_path: Path) -> None:
    """Too few hosts in the inventory, or a job name in use: refused before any code is copied."""
    (tmp_path / "inventory.yaml").write_text(
        "all:\n  hosts:\n    h1:\n      ansible_connection: local\n      distproc_instance_type: ml.m5.xlarge\n"
    )
    (tmp_path / "prep.py").write_text("")
    proc = processor(tmp_path, ScriptProcessor)
    with pytest.raises(InventoryError):
        proc.run(tmp_path / "prep.py", job_name="too-many")
    store = Store(tmp_path / "home")
    store.create_job("taken", "arn", {}, None)
    store.close()
    with pytest.raises(JobExistsError):
        processor(tmp_path, ScriptProcessor, instance_count=1).run(tmp_path / "prep.py", job_name="taken")
    assert not (tmp_path / "home" / "data").exists()
    assert proc.latest_job is None


# -- on the cluster --------------------------------------------------------------------------------

REPORT = """
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
host = json.load(open("/opt/ml/config/resourceconfig.json"))["current_host"]
helper = os.path.join(here, "helper.txt")
report = {"host": host, "files": sorted(os.listdir("/opt/ml/processing/input/data")), "argv": sys.argv[1:],
          "script": os.path.abspath(__file__), "helper": open(helper).read() if os.path.exists(helper) else None}
for folder in ("/opt/ml/processing/output/report", "/opt/ml/processing/output/default"):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, host + ".json"), "w") as fh:
        json.dump(report, fh)
print("hello from " + host, flush=True)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


def cluster_processor(where: Env, **kwargs: Any) -> ScriptProcessor:
    return ScriptProcessor(
        image_uri=PY,
        command=["python3"],
        instance_count=3,
        instance_type=XL,
        inventory=where.inventory,
        home=where.home,
        **kwargs,
    )


def data_folder(env: Env) -> Path:
    data = env.data / "input"
    data.mkdir()
    for i in range(3):
        (data / f"part-{i}.csv").write_text(f"{i}\n")
    return data


def reports(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("algo-*.json"))}


@pytest.mark.cluster
def test_script_processor_runs_a_local_script_on_three_hosts(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A local script and folder reach all 3 hosts; file:// and default outputs come back; Completed."""
    (env.data / "report.py").write_text(REPORT)
    out = env.data / "out"
    proc = cluster_processor(env)
    proc.run(
        code=str(env.data / "report.py"),
        inputs=[ProcessingInput(source=str(data_folder(env)), destination="/opt/ml/processing/input/data")],
        outputs=[
            ProcessingOutput(source="/opt/ml/processing/output/report", destination=f"file://{out}/"),
            ProcessingOutput(source="/opt/ml/processing/output/default", output_name="default"),
        ],
        arguments=["--rows", "3"],
    )
    job = proc.latest_job
    assert job is not None and job.describe()["ProcessingJobStatus"] == "Completed"
    got = reports(out)
    assert sorted(got) == ["algo-1", "algo-2", "algo-3"]
    for host, report in got.items():
        assert report["host"] == host and report["argv"] == ["--rows", "3"]
        assert report["files"] == ["part-0.csv", "part-1.csv", "part-2.csv"]
        assert report["script"] == "/opt/ml/processing/input/code/report.py"
    default = env.home / "data" / job.job_name / "output" / "default"
    assert sorted(reports(default)) == ["algo-1", "algo-2", "algo-3"]
    assert (env.home / "data" / job.job_name / "input" / "code" / "report.py").read_text() == REPORT
    printed = capsys.readouterr().out
    assert all(f"[algo-{k}] hello from algo-{k}" in printed for k in (1, 2, 3))


@pytest.mark.cluster
def test_wait_false_returns_at_once_and_wait_joins_the_job(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """run(wait=False) returns while the job runs; latest_job.wait() ends it; logs() and describe() read the store."""
    src = env.data / "src"
    src.mkdir()
    (src / "report.py").write_text(REPORT + "import time\ntime.sleep(2)\n")
    (src / "helper.txt").write_text("beside the script")
    proc = cluster_processor(env, base_job_name="later")
    proc.run(
        "report.py",
        source_dir=src,
        inputs=[ProcessingInput(source=data_folder(env), destination="/opt/ml/processing/input/data")],
        outputs=[ProcessingOutput(source="/opt/ml/processing/output/report", destination=env.data / "out")],
        wait=False,
        logs=False,
    )
    job = proc.latest_job
    assert job is not None and job.describe()["ProcessingJobStatus"] == "InProgress"
    assert job.wait(logs=False).status.value == "Completed"
    assert job.describe()["ProcessingJobStatus"] == "Completed"
    assert {r["helper"] for r in reports(env.data / "out").values()} == {"beside the script"}
    capsys.readouterr()
    job.logs(host="algo-2")
    assert capsys.readouterr().out == "[algo-2] hello from algo-2\n"


@pytest.mark.cluster
def test_a_failed_job_raises_on_wait_as_the_sdk_does(env: Env) -> None:
    """A container exiting 1 fails the job; wait() raises UnexpectedStatusError with the FailureReason."""
    (env.data / "report.py").write_text(REPORT)
    proc = cluster_processor(env, env={"EXIT_CODE": "1"})
    with pytest.raises(UnexpectedStatusError) as exc:
        proc.run(
            env.data / "report.py",
            inputs=[ProcessingInput(source=data_folder(env), destination="/opt/ml/processing/input/data")],
            logs=False,
        )
    assert exc.value.actual_status == "Failed" and "algo-" in str(exc.value.failure_reason)
    assert proc.latest_job is not None and proc.latest_job.describe()["ProcessingJobStatus"] == "Failed"


@pytest.mark.cluster
def test_stop_ends_a_running_job_as_stopped(env: Env) -> None:
    """latest_job.stop() stops every host; wait() then returns (a Stopped job does not raise) and the store says why."""
    (env.data / "sleep.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    proc = cluster_processor(env)
    proc.run(env.data / "sleep.py", wait=False, logs=False)
    job = proc.latest_job
    assert job is not None
    wait_until(running_everywhere(env.cluster, job.job_name), "containers running on every host")
    job.stop()
    assert job.wait(logs=False).status.value == "Stopped"
    described = job.describe()
    assert described["ProcessingJobStatus"] == "Stopped"
    assert described["Distproc"]["StopReason"] == "stopped by request (ProcessingJob.stop)"


# -- issue 17: SDK snippets with only the import changed ----------------------------------------

PREPROCESSING = """
import os
rows = open("/opt/ml/processing/input/input-data.csv").read().splitlines()
for split in ("train", "validation", "test"):
    os.makedirs(f"/opt/ml/processing/output/{split}", exist_ok=True)
    with open(f"/opt/ml/processing/output/{split}/{split}.csv", "w") as fh:
        fh.write(split + ":" + ",".join(rows))
"""


def defaults_for(env: Env, monkeypatch: pytest.MonkeyPatch, where: str, tmp: Path) -> None:
    """A defaults file naming the hosts (this machine's Docker, or the 3-host cluster) and the account."""
    inventory = env.cluster.write_inventory(tmp / "local.yaml", local=True) if where == "local" else env.inventory
    config = tmp / "config.yaml"
    config.write_text(f'inventory: {inventory}\naccount_id: "123456789012"\n')
    monkeypatch.setenv("DISTPROC_CONFIG", str(config))
    monkeypatch.setenv("DISTPROC_HOME", str(env.home))
    monkeypatch.delenv("DISTPROC_INVENTORY", raising=False)


@pytest.mark.cluster
@pytest.mark.parametrize("where", ["local", "cluster"])
def test_seed_snippet_runs_with_only_the_import_changed(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    """The seed documents' Processor snippet: no inventory=, a role name; the job Completes as the SDK's would."""
    defaults_for(env, monkeypatch, where, tmp_path)
    source = env.data / "in"
    source.mkdir()
    (source / "rows.csv").write_text("1\n2\n")
    namespace: dict[str, Any] = {"role": "MyProcessingRole"}
    exec(compile(seed_snippet(PY, source, env.data / "out"), "seed-snippet", "exec"), namespace)
    described = namespace["processor"].latest_job.describe()
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["RoleArn"] == "arn:aws:iam::123456789012:role/MyProcessingRole"
    assert described["ProcessingInputs"][0]["S3Input"]["S3Uri"] == source.as_uri() + "/"
    assert described["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == (env.data / "out").as_uri() + "/"


@pytest.mark.cluster
def test_aws_script_processor_snippet_runs_with_only_the_import_changed(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """AWS's ScriptProcessor example on the 3-host cluster: the script's three outputs land in the job store."""
    defaults_for(env, monkeypatch, "cluster", tmp_path)
    data = env.data / "input"
    data.mkdir()
    (data / "input-data.csv").write_text("a\nb\n")
    monkeypatch.chdir(env.data)
    (env.data / "preprocessing.py").write_text(PREPROCESSING)
    assert not published_script_snippet_compiles()  # the page's run(...) lacks its ")": added, nothing else
    code = script_snippet(PY, ROLE, data / "input-data.csv")
    assert code.count("from distproc import") == 1 and "sagemaker" not in code
    namespace: dict[str, Any] = {}
    exec(compile(code, "script-snippet", "exec"), namespace)
    job = namespace["script_processor"].latest_job
    assert job.describe()["ProcessingJobStatus"] == "Completed"
    for i, split in enumerate(("train", "validation", "test"), start=1):
        produced = env.home / "data" / job.job_name / "output" / f"output-{i}" / f"{split}.csv"
        assert produced.read_text() == f"{split}:a,b"


# -- issue 17 part 2: FrameworkProcessor and SKLearnProcessor on the cluster ------------------------

PROCESS = """
import json, os, sys
import helpers, tinypkg
host = json.load(open("/opt/ml/config/resourceconfig.json"))["current_host"]
os.makedirs("/opt/ml/processing/output/result", exist_ok=True)
with open(f"/opt/ml/processing/output/result/{host}.json", "w") as fh:
    json.dump({"host": host, "tinypkg": tinypkg.VALUE, "where": tinypkg.__file__, "helper": helpers.X,
               "argv": sys.argv[1:], "cwd": os.getcwd()}, fh)
print("processed on " + host, flush=True)
"""


def tiny_wheel(folder: Path) -> Path:
    """tinypkg 0.1 as a pure-Python wheel, made by hand: the hosts have no index to fetch from."""
    import base64
    import hashlib
    import zipfile

    files = {
        "tinypkg/__init__.py": b"VALUE = 'installed from the local wheel'\n",
        "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: distproc-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = ""
    for name, body in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(body)}\n"
    files["tinypkg-0.1.dist-info/RECORD"] = (record + "tinypkg-0.1.dist-info/RECORD,,\n").encode()
    folder.mkdir(parents=True)
    wheel = folder / "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return wheel


def pip_wheel(folder: Path) -> Path:
    """A pip wheel for the test image, which has python3 but no pip (a real framework image has one).

    Taken from this interpreter's ensurepip (or Debian's python3-pip-whl); the job
    puts it on PYTHONPATH, the way pip runs from a wheel.
    """
    import ensurepip

    bundled = Path(ensurepip.__file__).parent / "_bundled"
    found = sorted(bundled.glob("pip-*.whl")) or sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
    assert found, f"no pip wheel in {bundled} or /usr/share/python-wheels to give the test image"
    folder.mkdir(parents=True)
    target = folder / found[-1].name
    target.write_bytes(found[-1].read_bytes())
    return target


@pytest.mark.cluster
def test_framework_processor_installs_requirements_then_runs_the_code(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """source_dir (a module, a local wheel, requirements.txt) is packed, unpacked, pip-installed and run on 3 hosts."""
    src = env.data / "src"
    src.mkdir()
    (src / "process.py").write_text(PROCESS)
    (src / "helpers.py").write_text("X = 42\n")
    tiny_wheel(src / "wheels")
    (src / "requirements.txt").write_text("--no-index\n--find-links wheels\ntinypkg==0.1\n")
    pip = pip_wheel(env.data / "tools")
    out = env.data / "out"
    proc = FrameworkProcessor(
        "pytorch",
        "2.1",
        instance_count=3,
        instance_type=XL,
        image_uri=PY,
        command=["python3"],
        env={
            "PYTHONPATH": f"/opt/ml/processing/input/tools/{pip.name}",
            "PIP_BREAK_SYSTEM_PACKAGES": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        },
        inventory=env.inventory,
        home=env.home,
    )
    proc.run(
        "process.py",
        source_dir=src,
        inputs=[ProcessingInput(source=pip.parent, destination="/opt/ml/processing/input/tools")],
        outputs=[ProcessingOutput(source="/opt/ml/processing/output/result", destination=out)],
        arguments=["--mode", "it's quoted"],
    )
    job = proc.latest_job
    assert job is not None and job.describe()["ProcessingJobStatus"] == "Completed"
    assert job.job_name.startswith("pytorch-")
    got = reports(out)
    assert sorted(got) == ["algo-1", "algo-2", "algo-3"]
    for host, report in got.items():
        assert report["host"] == host and report["helper"] == 42
        assert report["tinypkg"] == "installed from the local wheel"
        assert "dist-packages/tinypkg" in report["where"]  # installed, not imported from the bundle
        assert report["argv"] == ["--mode", "it's quoted"] and report["cwd"] == "/opt/ml/processing/input/code"
    bundle = env.home / "data" / job.job_name / "source"
    assert sorted(p.name for p in bundle.iterdir()) == ["runproc.sh", "sourcedir.tar.gz"]
    printed = capsys.readouterr().out
    assert all(f"[algo-{k}] processed on algo-{k}" in printed for k in (1, 2, 3))
    assert "Successfully installed tinypkg-0.1" in printed


@pytest.fixture(scope="module")
def sklearn_image(cluster: Any) -> str:
    """The sklearn example's image (SKLearnProcessor's default) in every host's daemon; built once, cached."""
    from tests.example_image import ensure_sklearn_image

    return ensure_sklearn_image(cluster).name


SKLEARN_SCRIPT = """
import json, os, sklearn, sklearn.preprocessing
host = json.load(open("/opt/ml/config/resourceconfig.json"))["current_host"]
rows = [[float(v)] for v in open("/opt/ml/processing/input/rows.csv").read().split()]
scaled = sklearn.preprocessing.StandardScaler().fit_transform(rows)
os.makedirs("/opt/ml/processing/output", exist_ok=True)
with open(f"/opt/ml/processing/output/{host}.json", "w") as fh:
    json.dump({"version": sklearn.__version__, "scaled": [round(float(r[0]), 6) for r in scaled]}, fh)
"""


@pytest.mark.cluster
@pytest.mark.timeout(2700)  # a cold image build (debootstrap of scikit-learn) and its imports
def test_sklearn_processor_runs_in_its_default_image_on_three_hosts(env: Env, sklearn_image: str) -> None:
    """SKLearnProcessor with no image named: the examples' scikit-learn image, python3, the script's output."""
    from distproc import SKLearnProcessor

    (env.data / "scale.py").write_text(SKLEARN_SCRIPT)
    data = env.data / "rows"
    data.mkdir()
    (data / "rows.csv").write_text("1\n2\n3\n")
    proc = SKLearnProcessor("1.2-1", ROLE, 3, XL, inventory=env.inventory, home=env.home)
    assert proc.image_uri == sklearn_image
    proc.run(
        str(env.data / "scale.py"),
        inputs=[ProcessingInput(source=data, destination="/opt/ml/processing/input")],
        outputs=[ProcessingOutput(source="/opt/ml/processing/output", destination=env.data / "out")],
        logs=False,
    )
    assert proc.latest_job is not None and proc.latest_job.describe()["ProcessingJobStatus"] == "Completed"
    got = reports(env.data / "out")
    assert sorted(got) == ["algo-1", "algo-2", "algo-3"]
    assert {r["version"].split(".")[0] for r in got.values()} == {"1"}
    assert all(r["scaled"] == [-1.224745, 0.0, 1.224745] for r in got.values())
