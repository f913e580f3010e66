"""FrameworkProcessor and its framework kinds (issue 17 part 2): the SDK's signatures, the request,
the bundle and the runner script it writes, and what it refuses.

No cluster: requests are built and checked, bundles written to a temporary
job store or to a real S3 endpoint (moto's server); the generated runproc.sh
is run by bash in a temporary folder. tests/test_processing_api.py runs a
FrameworkProcessor job on the cluster.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import distproc
from distproc import FrameworkProcessor, ProcessingInput, ScriptProcessor, SpecError
from distproc.sdk.bundle import runner_script
from distproc.sdk.request import CODE_LOCAL_PATH
from tests.s3server import REGION, MotoServer, start_moto_server
from tests.sdk_snippets import published_script_snippet_compiles, script_snippet

XL = "ml.m5.xlarge"
IMAGE = "registry:5000/torch:2.1"
STAMP = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}"
CODE = "/opt/ml/processing/input/code/"
RUNNER = "/opt/ml/processing/input/entrypoint"

# sagemaker/processing.py, FrameworkProcessor (SDK v2.257.6): __init__ and run, in order.
SDK_FRAMEWORK = [
    "estimator_cls",
    "framework_version",
    "role",
    "instance_count",
    "instance_type",
    "py_version",
    "image_uri",
    "command",
    "volume_size_in_gb",
    "volume_kms_key",
    "output_kms_key",
    "code_location",
    "max_runtime_in_seconds",
    "base_job_name",
    "sagemaker_session",
    "env",
    "tags",
    "network_config",
]
SDK_FRAMEWORK_RUN = {
    "code": inspect.Parameter.empty,
    "source_dir": None,
    "dependencies": None,
    "git_config": None,
    "inputs": None,
    "outputs": None,
    "arguments": None,
    "wait": True,
    "logs": True,
    "job_name": None,
    "experiment_config": None,
    "kms_key": None,
    "codeartifact_repo_arn": None,
}
# sagemaker/{pytorch,tensorflow,xgboost,mxnet}/processing.py: FrameworkProcessor's, less estimator_cls.
KINDS = {
    distproc.PyTorchProcessor: "pytorch",
    distproc.TensorFlowProcessor: "tensorflow",
    distproc.XGBoostProcessor: "xgboost",
    distproc.MXNetProcessor: "mxnet",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No defaults from the machine running the tests."""
    for name in ("DISTPROC_CONFIG", "DISTPROC_INVENTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DISTPROC_HOME", str(tmp_path / "home"))


def positional(func: Any) -> dict[str, Any]:
    params = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}


def keyword_only(func: Any) -> dict[str, Any]:
    return {p.name: p.default for p in inspect.signature(func).parameters.values() if p.kind is p.KEYWORD_ONLY}


def framework(tmp_path: Path, **kwargs: Any) -> FrameworkProcessor:
    settings: dict[str, Any] = {"image_uri": IMAGE, "instance_count": 2, "instance_type": XL, "command": ["python3"]}
    return FrameworkProcessor("pytorch", "2.1", **{**settings, **kwargs}, inventory=tmp_path / "inventory.yaml")


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "process.py").write_text("import lib.helper\n")
    (src / "lib" / "helper.py").write_text("X = 1\n")
    (src / "requirements.txt").write_text("tinypkg\n")
    return src


def code_input(name: str, uri: str, local: str) -> dict[str, Any]:
    s3 = {"S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix", "S3InputMode": "File"}
    return {
        "InputName": name,
        "AppManaged": False,
        "S3Input": {**s3, "S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"},
    }


def violations(exc: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return {v.path: v.rule for v in exc.value.violations}


def members(tarball: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}  # type: ignore[union-attr]


# -- the SDK's surface ---------------------------------------------------------------------------


def test_framework_processor_takes_the_sdks_parameters_in_its_order() -> None:
    """__init__ and run as the SDK's; distproc's own keywords are ScriptProcessor's, keyword-only."""
    assert list(positional(FrameworkProcessor.__init__)) == SDK_FRAMEWORK
    assert positional(FrameworkProcessor.run) == SDK_FRAMEWORK_RUN
    assert positional(FrameworkProcessor.__init__)["py_version"] == "py3"
    assert keyword_only(FrameworkProcessor.__init__) == keyword_only(ScriptProcessor.__init__)
    assert issubclass(FrameworkProcessor, ScriptProcessor)


@pytest.mark.parametrize("kind", list(KINDS))
def test_framework_kinds_take_framework_processors_parameters_less_the_estimator(kind: type) -> None:
    assert list(positional(kind.__init__)) == SDK_FRAMEWORK[1:]
    assert keyword_only(kind.__init__) == keyword_only(FrameworkProcessor.__init__)
    assert positional(kind.run) == SDK_FRAMEWORK_RUN


# -- the request -----------------------------------------------------------------------------------


def test_request_ships_the_bundle_and_the_runner_as_the_sdk_does(tmp_path: Path) -> None:
    """User inputs, then `code` (sourcedir.tar.gz) and `entrypoint` (runproc.sh); bash runs the runner."""
    data = tmp_path / "data"
    data.mkdir()
    proc = framework(tmp_path)
    doc = proc.request(
        "process.py",
        source_dir=source(tmp_path),
        inputs=[ProcessingInput(str(data), "/opt/ml/processing/input/data")],
        arguments=["--rows", "3"],
        job_name="fw-1",
    )
    where = f"file://{tmp_path}/home/data/fw-1/source/"
    assert doc["ProcessingInputs"] == [
        code_input("input-1", f"file://{data}/", "/opt/ml/processing/input/data"),
        code_input("code", where + "sourcedir.tar.gz", CODE),
        code_input("entrypoint", where + "runproc.sh", RUNNER),
    ]
    assert doc["AppSpecification"] == {
        "ImageUri": IMAGE,
        "ContainerEntrypoint": ["/bin/bash", f"{RUNNER}/runproc.sh"],
        "ContainerArguments": ["--rows", "3"],
    }
    assert not (tmp_path / "home" / "data").exists()  # request() packs and writes nothing


def test_image_comes_from_the_defaults_file_and_the_job_name_from_the_framework(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No image_uri: `images: pytorch: "2.1"` of the defaults file; jobs are named pytorch-<timestamp>."""
    config = tmp_path / "config.yaml"
    config.write_text('images:\n  pytorch:\n    "2.1": registry:5000/pt:2.1\n  xgboost:\n    "1.7-1": xgb:1\n')
    monkeypatch.setenv("DISTPROC_CONFIG", str(config))
    (tmp_path / "one.py").write_text("")
    proc = distproc.PyTorchProcessor("2.1", instance_count=1, instance_type=XL)
    assert (proc.image_uri, proc.estimator_cls, proc.framework_version, proc.command) == (
        "registry:5000/pt:2.1",
        "pytorch",
        "2.1",
        ["python"],  # the SDK's default command
    )
    assert re.fullmatch(f"pytorch-{STAMP}", proc.request(str(tmp_path / "one.py"))["ProcessingJobName"])
    assert distproc.XGBoostProcessor("1.7-1", instance_type=XL, base_job_name="nightly").image_uri == "xgb:1"
    assert distproc.XGBoostProcessor("1.7-1", instance_type=XL, base_job_name="nightly").base_job_name == "nightly"


@pytest.mark.parametrize(("kind", "name"), list(KINDS.items()))
def test_a_framework_with_no_image_configured_is_refused_saying_where_to_name_one(kind: type, name: str) -> None:
    with pytest.raises(SpecError) as exc:
        kind("9.9", instance_count=1, instance_type=XL)
    rule = violations(exc)["image_uri"]
    assert f"no image for {name} 9.9" in rule and f"'images: {name}:'" in rule and "image_uri=" in rule
    assert kind("9.9", image_uri="mine:1", instance_type=XL).image_uri == "mine:1"


def test_an_sdk_estimator_class_names_its_framework(tmp_path: Path) -> None:
    """estimator_cls may be the SDK's estimator class: its _framework_name picks the image (scikit-learn: sklearn)."""

    class SKLearn:  # stands in for sagemaker.sklearn.SKLearn, which this environment does not install
        _framework_name = "scikit-learn"

    proc = FrameworkProcessor(SKLearn, "1.2-1", instance_count=1, instance_type=XL)
    assert proc.image_uri == "distproc-example:sklearn" and proc.base_job_name == "scikit-learn"
    with pytest.raises(SpecError) as exc:
        FrameworkProcessor(object, "1.0", instance_count=1, instance_type=XL)
    assert "estimator_cls" in violations(exc)


def test_code_location_s3_and_folder(tmp_path: Path) -> None:
    """code_location: <prefix>/<job>/source/ on S3 or in a local folder, a trailing "/" dropped as the SDK does."""
    (tmp_path / "one.py").write_text("")
    as_uri = framework(tmp_path).request((tmp_path / "one.py").as_uri(), job_name="u")
    assert as_uri["AppSpecification"]["ContainerEntrypoint"] == ["/bin/bash", f"{RUNNER}/runproc.sh"]
    on_s3 = framework(tmp_path, code_location="s3://bucket/code/").request(str(tmp_path / "one.py"), job_name="j")
    assert [i["S3Input"]["S3Uri"] for i in on_s3["ProcessingInputs"]] == [
        "s3://bucket/code/j/source/sourcedir.tar.gz",
        "s3://bucket/code/j/source/runproc.sh",
    ]
    local = framework(tmp_path, code_location=str(tmp_path / "bundles")).request(str(tmp_path / "one.py"), job_name="j")
    assert local["ProcessingInputs"][0]["S3Input"]["S3Uri"] == f"file://{tmp_path}/bundles/j/source/sourcedir.tar.gz"
    with pytest.raises(SpecError) as exc:
        framework(tmp_path, code_location="https://example.com/x").request(str(tmp_path / "one.py"))
    assert "code_location" in violations(exc)


def test_code_on_s3_is_run_by_bash_as_the_sdk_runs_it(tmp_path: Path) -> None:
    doc = framework(tmp_path).request("s3://bucket/code/runproc.sh", source_dir=tmp_path, job_name="s3")
    assert doc["ProcessingInputs"] == [code_input("entrypoint", "s3://bucket/code/runproc.sh", RUNNER)]
    assert doc["AppSpecification"]["ContainerEntrypoint"] == ["/bin/bash", f"{RUNNER}/runproc.sh"]


# -- refused -----------------------------------------------------------------------------------------


def test_what_it_cannot_do_is_refused_naming_the_argument(tmp_path: Path) -> None:
    src = source(tmp_path)
    (tmp_path / "lib").mkdir()
    proc = framework(tmp_path)
    with pytest.raises(SpecError) as exc:
        proc.request("process.py", source_dir=src, git_config={"repo": "https://example.com/r.git"})
    assert "clone" in violations(exc)["git_config"]
    with pytest.raises(SpecError) as exc:
        proc.request("process.py", source_dir=src, codeartifact_repo_arn="arn:aws:codeartifact:r:1:repository/d/r")
    assert set(violations(exc)) == {"codeartifact_repo_arn"}
    with pytest.raises(SpecError) as exc:
        proc.request("../outside.py", source_dir=src)
    assert "inside source_dir" in violations(exc)["code"]
    with pytest.raises(SpecError) as exc:
        proc.request("missing.py", source_dir=src)
    assert "not a file in source_dir" in violations(exc)["code"]
    with pytest.raises(SpecError) as exc:
        proc.request("process.py", source_dir=src, dependencies=[tmp_path / "lib", tmp_path / "nope"])
    found = violations(exc)
    assert "would both be 'lib'" in found["dependencies"] and "no such file" in found["dependencies[1]"]
    with pytest.raises(SpecError) as exc:
        proc.request("process.py", source_dir=src, dependencies=str(tmp_path / "lib"))  # type: ignore[arg-type]
    assert "must be a list of paths" in violations(exc)["dependencies"]
    with pytest.raises(SpecError) as exc:
        proc.request("process.py", source_dir=tmp_path / "absent")
    assert set(violations(exc)) == {"source_dir"}


# -- what run() writes ---------------------------------------------------------------------------------


def test_the_bundle_holds_source_dir_and_dependencies_at_its_root(tmp_path: Path) -> None:
    """sourcedir.tar.gz as the SDK's tar: source_dir's entries and each dependency at the root, links followed."""
    src = source(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "util.py").write_text("Y = 2\n")
    (tmp_path / "real.txt").write_text("linked")
    (src / "link.txt").symlink_to(tmp_path / "real.txt")
    proc = framework(tmp_path, command=["python3", "-u"])
    plan, _ = proc._bundle("process.py", src, [tmp_path / "shared"], None, None, "packed")
    plan.ship(tmp_path / "home")
    folder = tmp_path / "home" / "data" / "packed" / "source"
    got = members((folder / "sourcedir.tar.gz").read_bytes())
    files = {name: body for name, body in got.items() if body is not None}
    assert files == {
        "process.py": b"import lib.helper\n",
        "lib/helper.py": b"X = 1\n",
        "requirements.txt": b"tinypkg\n",
        "link.txt": b"linked",
        "shared/util.py": b"Y = 2\n",
    }
    runner = (folder / "runproc.sh").read_text()
    assert runner == runner_script(["python3", "-u"], "process.py")
    assert "python3 -m pip install -r requirements.txt" in runner
    assert runner.splitlines()[-1] == 'exec python3 -u process.py "$@"'


def test_the_runner_quotes_every_value_it_is_given(tmp_path: Path) -> None:
    """A script name and command words with quotes, spaces and $(...) reach the program as they are."""
    hostile = "it's $(touch pwned) `touch pwned2`; x.py"
    (tmp_path / hostile).write_text("import sys, json\nprint(json.dumps(sys.argv))\n")
    with tarfile.open(tmp_path / "sourcedir.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / hostile, arcname=hostile)
    text = runner_script([sys.executable, "-u"], hostile)
    # The runner's one fixed path made this folder, so it runs here unchanged otherwise.
    assert text.count(f"cd {CODE_LOCAL_PATH}/\n") == 1
    (tmp_path / "runproc.sh").write_text(text.replace(f"cd {CODE_LOCAL_PATH}/", f"cd {shlex.quote(str(tmp_path))}/"))
    done = subprocess.run(
        ["bash", str(tmp_path / "runproc.sh"), "a b", "$(touch pwned3)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == [hostile, "a b", "$(touch pwned3)"]
    assert not list(tmp_path.glob("pwned*"))


def test_the_runner_stops_when_requirements_cannot_be_installed(tmp_path: Path) -> None:
    """requirements.txt present and pip failing: set -e ends the runner with pip's status; the script never runs."""
    with tarfile.open(tmp_path / "sourcedir.tar.gz", "w:gz") as tar:
        for name, body in (("requirements.txt", b"--no-index\nnot-a-package-here\n"), ("run.py", b"print('ran')\n")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    text = runner_script([sys.executable], "run.py").replace(f"cd {CODE_LOCAL_PATH}/", f"cd {tmp_path}/")
    (tmp_path / "runproc.sh").write_text(text)
    done = subprocess.run(["bash", str(tmp_path / "runproc.sh")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "ran" not in done.stdout


# -- code_location on S3: a real endpoint -----------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = start_moto_server("127.0.0.1")
    yield server
    server.stop()


def test_code_location_on_s3_uploads_the_bundle_and_the_runner(
    tmp_path: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    client = moto.client()
    client.create_bucket(Bucket="code")
    (tmp_path / "one.py").write_text("print(1)\n")
    proc = framework(tmp_path, code_location="s3://code/team", s3_endpoint_url=moto.endpoint_url)
    plan, _ = proc._bundle(str(tmp_path / "one.py"), None, None, None, None, "up")
    plan.ship(tmp_path / "home", moto.endpoint_url)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="code")["Contents"])
    assert keys == ["team/up/source/runproc.sh", "team/up/source/sourcedir.tar.gz"]
    bundle = client.get_object(Bucket="code", Key="team/up/source/sourcedir.tar.gz")["Body"].read()
    assert members(bundle) == {"one.py": b"print(1)\n"}
    assert not (tmp_path / "home" / "data").exists()


# -- AWS's ScriptProcessor snippet, without a cluster ------------------------------------------------------


def test_aws_script_processor_snippet_reaches_the_hosts_with_the_import_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's snippet as published (bar the import and its missing ")") gets as far as choosing hosts."""
    assert not published_script_snippet_compiles()
    inventory = tmp_path / "small.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    h1:\n      ansible_connection: local\n      distproc_instance_type: ml.t3.medium\n"
    )
    monkeypatch.setenv("DISTPROC_INVENTORY", str(inventory))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "preprocessing.py").write_text("print(1)\n")
    (tmp_path / "input-data.csv").write_text("a\n")
    code = script_snippet("img:1", "arn:aws:iam::123456789012:role/r", tmp_path / "input-data.csv")
    with pytest.raises(distproc.InventoryError) as exc:
        exec(compile(code, "script-snippet", "exec"), {})
    assert "small.yaml" in str(exc.value)
