"""distproc.Session, the defaults file, role names and the SDK's job handle (issue 17, parts 1 and 3).

No cluster: jobs here are refused before any host is touched, or are rows
written straight into a real job store (SQLite).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import pytest

import distproc
from distproc import (
    InventoryError,
    JobNotFoundError,
    JobSpec,
    ProcessingJob,
    Processor,
    Session,
    SpecError,
    Store,
    UnexpectedStatusError,
)
from distproc.spec import job_arn, load_job
from tests.sdk_snippets import seed_snippet

XL = "ml.m5.xlarge"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/prep"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No defaults from the machine running the tests: each test sets what it uses."""
    for name in ("DISTPROC_CONFIG", "DISTPROC_INVENTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DISTPROC_HOME", str(tmp_path / "home"))


def write_inventory(path: Path, instance_type: str = XL) -> Path:
    path.write_text(
        f"all:\n  hosts:\n    h1:\n      ansible_connection: local\n      distproc_instance_type: {instance_type}\n"
    )
    return path


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(text)
    return path


def violations(exc: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return {v.path: v.rule for v in exc.value.violations}


# -- part 1: one changed import ----------------------------------------------------------------


def test_seed_snippet_gets_to_the_hosts_of_distproc_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed snippet, import changed, needs no inventory=: DISTPROC_INVENTORY's hosts are the ones asked.

    The inventory has no ml.m5.xlarge host, so the run stops at choosing hosts,
    naming that file: the request was built, the role name accepted.
    """
    inventory = write_inventory(tmp_path / "other.yaml", instance_type="ml.m5.large")
    monkeypatch.setenv("DISTPROC_INVENTORY", str(inventory))
    (tmp_path / "in").mkdir()
    code = seed_snippet("distproc-test:py", tmp_path / "in", tmp_path / "out")
    with pytest.raises(InventoryError) as exc:
        exec(compile(code, "seed-snippet", "exec"), {"role": "MyProcessingRole"})
    assert "other.yaml" in str(exc.value) and XL in str(exc.value)


def test_without_any_inventory_the_run_says_the_three_ways_to_name_one(tmp_path: Path) -> None:
    """No argument, no DISTPROC_INVENTORY, no defaults file: a SpecError on inventory, not a TypeError."""
    processor = Processor(image_uri="prep:1", instance_count=1, instance_type=XL, entrypoint=["true"])
    assert processor.request(job_name="no-hosts")["ProcessingJobName"] == "no-hosts"  # requests need no hosts
    with pytest.raises(SpecError) as exc:
        processor.run(job_name="no-hosts", logs=False)
    rule = violations(exc)["inventory"]
    assert "DISTPROC_INVENTORY" in rule and "inventory=" in rule and str(tmp_path / "xdg") in rule


def test_defaults_file_supplies_inventory_home_credentials_and_account(tmp_path: Path) -> None:
    """~/.config/distproc/config.yaml (XDG): paths relative to the file; every setting reaches the processor."""
    write_config(
        tmp_path / "xdg" / "distproc",
        f"inventory: hosts.yaml\nhome: jobs\naws_credentials: forward\nassume_role: true\n"
        f's3_endpoint_url: http://s3.local\naccount_id: "{ACCOUNT}"\n',
    )
    write_inventory(tmp_path / "xdg" / "distproc" / "hosts.yaml")
    os.environ.pop("DISTPROC_HOME")  # the file's home applies where the environment names none
    processor = Processor(role="prep", image_uri="prep:1", instance_count=1, instance_type=XL)
    options = processor._options
    assert options.inventory == tmp_path / "xdg" / "distproc" / "hosts.yaml"
    assert options.home == tmp_path / "xdg" / "distproc" / "jobs"
    assert (options.aws_credentials, options.assume_role, options.s3_endpoint_url) == (
        "forward",
        True,
        "http://s3.local",
    )
    assert processor.request(job_name="j")["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/prep"


def test_arguments_beat_the_environment_which_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "cfg", "inventory: from-file.yaml\nhome: file-home\n")
    monkeypatch.setenv("DISTPROC_CONFIG", str(config))
    assert Session().inventory == tmp_path / "cfg" / "from-file.yaml"
    assert Session().home == tmp_path / "home"  # DISTPROC_HOME over the file's home
    monkeypatch.setenv("DISTPROC_INVENTORY", "from-env.yaml")
    assert Session().inventory == "from-env.yaml"
    session = Session(inventory="from-arg.yaml", home=tmp_path / "arg-home")
    assert (session.inventory, session.home) == ("from-arg.yaml", tmp_path / "arg-home")
    processor = Processor(image_uri="p:1", sagemaker_session=session, inventory="mine.yaml")
    assert (processor._options.inventory, processor.home) == ("mine.yaml", tmp_path / "arg-home")


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("inventroy: x.yaml\n", "inventroy", "unknown setting"),
        ("aws_credentials: mine\n", "aws_credentials", "'host' or 'forward'"),
        ("account_id: 123456789012\n", "account_id", "quoted 12-digit"),
        ("assume_role: maybe\n", "assume_role", "true or false"),
        ("images: {sklearn: [a]}\n", "images.sklearn", "version"),
        ("- a list\n", "(file)", "mapping"),
        ("inventory: [unclosed\n", "(file)", "YAML"),
    ],
)
def test_a_bad_defaults_file_is_a_clear_error_naming_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, field: str, words: str
) -> None:
    config = write_config(tmp_path / "cfg", text)
    monkeypatch.setenv("DISTPROC_CONFIG", str(config))
    with pytest.raises(SpecError) as exc:
        Processor(image_uri="p:1")
    assert str(config) in str(exc.value)
    assert words in violations(exc)[field]


def test_defaults_file_reads_are_bounded_and_a_named_file_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = write_config(tmp_path / "cfg", "# " + "x" * (1024 * 1024) + "\n")
    monkeypatch.setenv("DISTPROC_CONFIG", str(big))
    with pytest.raises(SpecError, match="larger than"):
        Session()
    monkeypatch.setenv("DISTPROC_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(SpecError) as exc:
        Session()
    assert "no such file" in violations(exc)["DISTPROC_CONFIG"]


def test_sagemaker_session_takes_a_distproc_session_and_refuses_anything_else(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml")
    session = Session(inventory=inventory, home=tmp_path / "jobs", aws_credentials="forward")
    processor = Processor(image_uri="p:1", sagemaker_session=session)
    assert processor.sagemaker_session is session
    assert (processor._options.inventory, processor.home, processor._options.aws_credentials) == (
        inventory,
        tmp_path / "jobs",
        "forward",
    )

    class FakeSageMakerSession:
        pass

    with pytest.raises(SpecError) as exc:
        Processor(image_uri="p:1", sagemaker_session=FakeSageMakerSession())
    assert "distproc.Session" in violations(exc)["sagemaker_session"]


def test_role_arn_is_kept_and_a_name_becomes_the_accounts_arn(tmp_path: Path) -> None:
    """As the SDK's expand_role: an ARN as given; a name with the account id (here from the Session)."""
    arn = f"arn:aws:iam::{ACCOUNT}:role/service-role/prep"
    session = Session(inventory="x.yaml", account_id=ACCOUNT)
    assert Processor(arn, "p:1", 1, XL, sagemaker_session=session).request(job_name="a")["RoleArn"] == arn
    named = Processor("prep", "p:1", 1, XL, sagemaker_session=session)
    assert named.request(job_name="b")["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/prep"
    assert named.role == "prep"  # as the SDK: the processor keeps what it was given


def test_a_role_name_without_an_account_is_kept_out_of_the_job_unless_assume_role(tmp_path: Path) -> None:
    """No account id: the job has no RoleArn (no ARN can be made); assume_role, which needs it, is refused."""
    write_inventory(tmp_path / "hosts.yaml")
    plain = Processor("prep", "p:1", 1, XL, inventory=tmp_path / "hosts.yaml")
    assert "RoleArn" not in plain.request(job_name="c")
    assuming = Processor(
        role="prep",
        image_uri="p:1",
        instance_count=1,
        instance_type=XL,
        entrypoint=["true"],
        inventory=tmp_path / "hosts.yaml",
        aws_credentials="forward",
        assume_role=True,
    )
    with pytest.raises(SpecError) as exc:
        assuming.run(job_name="d", logs=False)
    assert "account_id" in violations(exc)["role"]


@pytest.mark.parametrize(
    ("role", "words"),
    [
        ("arn:aws:iam::12345:role/prep", "not an IAM role ARN"),
        ("arn:aws:s3:::bucket", "not an IAM role ARN"),
        ("my role", "neither a role name"),
        ("x" * 65, "neither a role name"),
    ],
)
def test_what_is_neither_a_role_name_nor_a_role_arn_is_refused_naming_role(role: str, words: str) -> None:
    """Not the job document's raw pattern error: the argument, and what it must be."""
    with pytest.raises(SpecError) as exc:
        Processor(role=role, image_uri="p:1", inventory="x.yaml").request(job_name="e")
    assert set(violations(exc)) == {"role"} and words in violations(exc)["role"]


# -- part 3: the job handle ------------------------------------------------------------------------


def test_processing_job_is_the_sdks_handle_and_the_model_is_job_spec() -> None:
    """distproc.ProcessingJob is the handle (the SDK's name); the parsed job is JobSpec."""
    for method in ("describe", "wait", "stop", "logs", "from_processing_name", "from_processing_arn"):
        assert callable(getattr(ProcessingJob, method)), method
    assert distproc.JobHandle is ProcessingJob
    assert load_job.__annotations__["return"] in ("JobSpec", JobSpec)
    assert list(inspect.signature(ProcessingJob.from_processing_name).parameters) == [
        "sagemaker_session",
        "processing_job_name",
    ]
    assert list(inspect.signature(ProcessingJob.from_processing_arn).parameters) == [
        "sagemaker_session",
        "processing_job_arn",
    ]


def record_job(home: Path, name: str, **fields: Any) -> None:
    store = Store(home)
    try:
        store.create_job(name, job_arn(name), {}, None)
        if fields:
            store.update_job(name, **fields)
    finally:
        store.close()


def test_from_processing_name_and_arn_find_a_job_in_the_sessions_store(tmp_path: Path) -> None:
    session = Session(home=tmp_path / "jobs")
    record_job(session.home, "Prep-1")
    by_name = ProcessingJob.from_processing_name(session, "Prep-1")
    by_arn = ProcessingJob.from_processing_arn(session, job_arn("Prep-1"))
    assert (by_name.job_name, by_arn.job_name) == ("Prep-1", "Prep-1")
    assert by_name.home == by_arn.home == tmp_path / "jobs"
    with pytest.raises(JobNotFoundError):
        ProcessingJob.from_processing_name(session, "other")
    with pytest.raises(JobNotFoundError):
        ProcessingJob.from_processing_arn(session, job_arn("other"))
    with pytest.raises(SpecError) as exc:
        ProcessingJob.from_processing_arn(session, "arn:aws:sagemaker:local:000000000000:training-job/x")
    assert "processing_job_arn" in violations(exc)
    with pytest.raises(SpecError) as exc:
        ProcessingJob.from_processing_name(object(), "Prep-1")
    assert "sagemaker_session" in violations(exc)


def test_wait_on_a_found_job_raises_the_sdks_error_when_it_failed(tmp_path: Path) -> None:
    """wait() on a job another process ran: Failed raises UnexpectedStatusError with the SDK's message."""
    session = Session(home=tmp_path / "jobs")
    record_job(session.home, "bad", status="Failed", failure_reason="AlgorithmError: exit 3")
    record_job(session.home, "good", status="Completed")
    record_job(session.home, "halted", status="Stopped")
    with pytest.raises(UnexpectedStatusError) as exc:
        ProcessingJob.from_processing_name(session, "bad").wait(logs=False)
    assert str(exc.value) == "Error for Processing job bad: Failed. Reason: AlgorithmError: exit 3"
    assert exc.value.allowed_statuses == ["Completed", "Stopped"] and exc.value.actual_status == "Failed"
    assert ProcessingJob.from_processing_name(session, "good").wait(logs=False) is None
    assert ProcessingJob.from_processing_name(session, "halted").wait(logs=False) is None


def test_unexpected_status_error_is_a_value_error_as_the_sdks_is(tmp_path: Path) -> None:
    """SDK code catches UnexpectedStatusException, a ValueError: both names and ValueError catch ours.

    sagemaker.exceptions.UnexpectedStatusException(ValueError) carries allowed_statuses
    and actual_status; a reason-less failure reads "(No reason provided)" as there.
    """
    from distproc.errors import UnexpectedStatusException

    session = Session(home=tmp_path / "jobs")
    record_job(session.home, "quiet", status="Failed", failure_reason=None)
    assert issubclass(UnexpectedStatusError, ValueError) and issubclass(UnexpectedStatusError, distproc.DistprocError)
    assert UnexpectedStatusException is UnexpectedStatusError
    with pytest.raises(ValueError) as exc:
        ProcessingJob.from_processing_name(session, "quiet").wait(logs=False)
    assert isinstance(exc.value, UnexpectedStatusException)
    assert (exc.value.allowed_statuses, exc.value.actual_status) == (["Completed", "Stopped"], "Failed")
    assert str(exc.value) == "Error for Processing job quiet: Failed. Reason: (No reason provided)"


# -- part 2: the SDK's framework processors ------------------------------------------------------

# sagemaker/sklearn/processing.py as of SDK v2.109.0 (2022) to 2.257: instance_count before
# instance_type (v2.0-v2.108 had them the other way round).
SDK_SKLEARN = [
    "framework_version",
    "role",
    "instance_count",
    "instance_type",
    "command",
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


def test_sklearn_processor_takes_the_sdks_parameters_in_its_order() -> None:
    params = inspect.signature(distproc.SKLearnProcessor.__init__).parameters.values()
    assert [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"] == SDK_SKLEARN
    script = inspect.signature(distproc.ScriptProcessor.__init__).parameters
    ours = inspect.signature(distproc.SKLearnProcessor.__init__).parameters
    assert {n: p.default for n, p in ours.items() if p.kind is p.KEYWORD_ONLY} == {
        n: p.default for n, p in script.items() if p.kind is p.KEYWORD_ONLY
    }


def test_sklearn_processor_runs_python3_in_the_examples_image_by_default(tmp_path: Path) -> None:
    (tmp_path / "prep.py").write_text("print(1)\n")
    proc = distproc.SKLearnProcessor("1.2-1", ROLE_ARN, 2, XL, inventory="x.yaml")
    request = proc.request(tmp_path / "prep.py", job_name="sk")
    assert request["AppSpecification"]["ImageUri"] == "distproc-example:sklearn"
    assert request["AppSpecification"]["ContainerEntrypoint"] == ["python3", "/opt/ml/processing/input/code/prep.py"]
    assert request["ProcessingResources"]["ClusterConfig"] == {"InstanceCount": 2, "InstanceType": XL}
    assert proc.framework_version == "1.2-1"


def test_sklearn_image_comes_from_the_defaults_file_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "cfg", 'images:\n  sklearn:\n    "1.2-1": registry:5000/sklearn:1.2-1\n')
    monkeypatch.setenv("DISTPROC_CONFIG", str(config))
    assert distproc.SKLearnProcessor("1.2-1", instance_type=XL).image_uri == "registry:5000/sklearn:1.2-1"
    assert distproc.SKLearnProcessor("0.23-1", instance_type=XL).image_uri == "distproc-example:sklearn"
    with pytest.raises(SpecError) as exc:
        distproc.SKLearnProcessor(None, instance_type=XL)  # type: ignore[arg-type]
    assert set(violations(exc)) == {"framework_version"}


def test_sdk_sklearn_snippet_with_the_import_changed_gets_to_the_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK docs' SKLearnProcessor example (amazon_sagemaker_processing.rst), import changed, placeholders filled."""
    monkeypatch.setenv("DISTPROC_INVENTORY", str(write_inventory(tmp_path / "small.yaml", "ml.m5.large")))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "preprocessing.py").write_text("print(1)\n")
    (tmp_path / "in").mkdir()
    code = """\
from distproc import SKLearnProcessor
from distproc import ProcessingInput, ProcessingOutput

sklearn_processor = SKLearnProcessor(
    framework_version="0.20.0",
    role="[Your SageMaker-compatible IAM role]",
    instance_type="ml.m5.xlarge",
    instance_count=1,
)
sklearn_processor.run(
    code="preprocessing.py",
    inputs=[ProcessingInput(source="in", destination="/opt/ml/processing/input")],
    outputs=[ProcessingOutput(source="/opt/ml/processing/output/train")],
    arguments=["--train-test-split-ratio", "0.2"],
)
""".replace("[Your SageMaker-compatible IAM role]", ROLE_ARN)
    with pytest.raises(InventoryError) as exc:
        exec(compile(code, "sklearn-snippet", "exec"), {})
    assert "small.yaml" in str(exc.value)


def test_pyspark_processor_exists_and_refuses_saying_why() -> None:
    with pytest.raises(distproc.DistprocError, match="PySparkProcessor is not supported") as exc:
        distproc.PySparkProcessor(framework_version="3.1", role=ROLE_ARN, instance_count=2, instance_type=XL)
    assert "ScriptProcessor" in str(exc.value)
