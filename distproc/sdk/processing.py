"""The SageMaker Python SDK's ``sagemaker.processing``, run on your own hosts.

Moving SDK code to distproc is changing the import and naming the hosts:

    >>> from distproc import ProcessingInput, ProcessingOutput, ScriptProcessor
    >>> processor = ScriptProcessor(image_uri="prep:1", command=["python3"], instance_count=3,
    ...                             instance_type="ml.m5.xlarge", inventory="inventory/three-hosts.yaml")
    >>> processor.run(code="prep.py",                                   # doctest: +SKIP
    ...               inputs=[ProcessingInput(source="data/", destination="/opt/ml/processing/input")],
    ...               outputs=[ProcessingOutput(source="/opt/ml/processing/output", destination="out/")])
    >>> processor.latest_job.describe()["ProcessingJobStatus"]        # doctest: +SKIP
    'Completed'

A run builds the CreateProcessingJob request (``request()`` returns it; see
request.py), checks it with :func:`distproc.spec.parse_job` and runs it with
the same :class:`~distproc.run.runner.JobRunner` as ``distproc run``, in a
thread of this process: this process is the job's coordinator, so it must
outlive the job (see :class:`ProcessingJob`). See docs/python-api.md.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    JobExistsError,
    JobNotFoundError,
    SpecError,
    UnexpectedStatusError,
    UnexpectedStatusException,
    Violation,
)
from ..inventory import Inventory, load_inventory, select_hosts
from ..plan import DEFAULT_STOP_GRACE_SECONDS
from ..run.options import RunOptions
from ..spec import JobSpec, parse_job
from ..store.db import Store
from . import request as paths
from .bundle import FrameworkBundle
from .handle import JobHandle, ProcessingJob, _with_store
from .request import PathArg, ProcessingInput, ProcessingOutput, as_list, without_none
from .session import Session

__all__ = [
    "JobHandle",
    "ProcessingInput",
    "ProcessingJob",
    "ProcessingOutput",
    "Processor",
    "ScriptProcessor",
    "Session",
    "UnexpectedStatusError",
    "UnexpectedStatusException",
]


@dataclass(frozen=True, slots=True)
class _Options:
    """distproc's own settings of a processor: the hosts, the job store, and `distproc run`'s options."""

    session: Session
    inventory: PathArg | Inventory | None
    home: Path
    aws_credentials: str
    assume_role: bool
    s3_endpoint_url: str | None
    stop_grace_seconds: float
    fan_out: int
    metrics_interval_seconds: float
    ship_image: bool = False
    #: `run --wait-for-hosts[=SECONDS]`: False fails on busy hosts, True waits indefinitely, a number that long.
    wait_for_hosts: bool | float = False

    def check(self, sagemaker_session: Any) -> None:
        problems = []
        if sagemaker_session is not None and not isinstance(sagemaker_session, Session):
            got = type(sagemaker_session).__name__
            rule = f"must be a distproc.Session (got {got}): a SageMaker session holds nothing distproc can use"
            problems.append(Violation("sagemaker_session", rule))
        if self.inventory is not None and not isinstance(self.inventory, (str, os.PathLike, Inventory)):
            problems.append(Violation("inventory", "must be an inventory file's path or a loaded Inventory"))
        if self.aws_credentials not in ("host", "forward"):
            problems.append(Violation("aws_credentials", f"must be 'host' or 'forward' (got {self.aws_credentials!r})"))
        if self.assume_role and self.aws_credentials != "forward":
            problems.append(Violation("assume_role", "needs aws_credentials='forward'"))
        for field, value, least in (
            ("fan_out", self.fan_out, 1),
            ("stop_grace_seconds", self.stop_grace_seconds, 0),
            ("metrics_interval_seconds", self.metrics_interval_seconds, 0),
        ):
            if value < least:
                problems.append(Violation(field, f"must be at least {least} (got {value})"))
        wait = self.wait_for_hosts
        if not isinstance(wait, (bool, int, float)) or (not isinstance(wait, bool) and not wait > 0):
            problems.append(Violation("wait_for_hosts", f"must be True, False or seconds more than 0 (got {wait!r})"))
        if problems:
            raise SpecError(problems, source=paths.SOURCE)

    def run_options(self, live_logs: bool) -> RunOptions:
        return RunOptions(
            stop_grace_seconds=self.stop_grace_seconds,
            fan_out=self.fan_out,
            console=sys.stdout if live_logs else None,
            aws_credentials=self.aws_credentials,
            assume_role=self.assume_role,
            s3_endpoint_url=self.s3_endpoint_url,
            metrics_interval_seconds=self.metrics_interval_seconds,
            ship_image=self.ship_image,
            wait_for_hosts_seconds=_wait_seconds(self.wait_for_hosts),
        )


def _wait_seconds(wait: bool | float) -> float | None:
    """wait_for_hosts as RunOptions has it: None (no waiting), math.inf (indefinitely) or seconds."""
    if isinstance(wait, bool):
        return math.inf if wait else None
    return float(wait)


class Processor:
    """Runs a processing job from an image, as ``sagemaker.processing.Processor``.

    The SDK's parameters, in its order; distproc's own are keyword-only:
    ``inventory`` (an inventory file or a loaded Inventory), ``home`` (the job
    store) and the options of ``distproc run``. Those left unset come from
    ``sagemaker_session`` (a :class:`~distproc.sdk.session.Session`), or from a
    ``Session()``: ``DISTPROC_INVENTORY``, ``DISTPROC_HOME`` and the defaults file.
    ``role`` is a role ARN, or a name that becomes one as the SDK's
    ``expand_role`` does, with the session's ``account_id``.

    >>> processor = Processor(image_uri="prep:1", instance_count=2, instance_type="ml.m5.xlarge",
    ...                       entrypoint=["python3", "/opt/prep.py"], inventory="inventory/three-hosts.yaml")
    >>> processor.request(job_name="prep-1")["ProcessingResources"]
    {'ClusterConfig': {'InstanceCount': 2, 'InstanceType': 'ml.m5.xlarge'}}
    """

    def __init__(
        self,
        role: str | None = None,
        image_uri: str | None = None,
        instance_count: int | None = None,
        instance_type: str | None = None,
        entrypoint: Sequence[str] | None = None,
        volume_size_in_gb: int | None = None,
        volume_kms_key: str | None = None,
        output_kms_key: str | None = None,
        max_runtime_in_seconds: int | None = None,
        base_job_name: str | None = None,
        sagemaker_session: Any = None,
        env: Mapping[str, str] | None = None,
        tags: Any = None,
        network_config: Any = None,
        *,
        inventory: PathArg | Inventory | None = None,
        home: PathArg | None = None,
        aws_credentials: str | None = None,
        assume_role: bool | None = None,
        s3_endpoint_url: str | None = None,
        stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
        fan_out: int = 64,
        metrics_interval_seconds: float = 5.0,
        ship_image: bool = False,
        wait_for_hosts: bool | float = False,
    ) -> None:
        self.role = role
        self.image_uri = image_uri
        self.instance_count = instance_count
        self.instance_type = instance_type
        self.entrypoint = entrypoint
        self.volume_size_in_gb = volume_size_in_gb
        self.volume_kms_key = volume_kms_key
        self.output_kms_key = output_kms_key
        self.max_runtime_in_seconds = max_runtime_in_seconds
        self.base_job_name = base_job_name
        self.sagemaker_session = sagemaker_session
        self.env = env
        self.tags = tags
        self.network_config = network_config
        self.jobs: list[ProcessingJob] = []
        self.latest_job: ProcessingJob | None = None
        self.arguments: list[str] | None = None
        self._current_job_name: str | None = None
        # Each of distproc's settings: this processor's keyword, else the session's (which
        # has it from its arguments, the environment or the defaults file).
        session = sagemaker_session if isinstance(sagemaker_session, Session) else Session()
        self._options = _Options(
            session,
            session.inventory if inventory is None else inventory,
            session.home if home is None else Path(os.path.abspath(os.path.expanduser(os.fspath(home)))),
            session.aws_credentials if aws_credentials is None else aws_credentials,
            session.assume_role if assume_role is None else assume_role,
            session.s3_endpoint_url if s3_endpoint_url is None else s3_endpoint_url,
            stop_grace_seconds,
            fan_out,
            metrics_interval_seconds,
            ship_image,
            wait_for_hosts,
        )
        self._options.check(sagemaker_session)

    @property
    def home(self) -> Path:
        """The job store: jobs, logs, and ``data/`` (default output destinations, shipped code)."""
        return self._options.home

    def run(
        self,
        inputs: Sequence[ProcessingInput] | None = None,
        outputs: Sequence[ProcessingOutput] | None = None,
        arguments: Sequence[str] | None = None,
        wait: bool = True,
        logs: bool = True,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
        kms_key: str | None = None,
    ) -> None:
        """Run a job; with ``wait`` (the default) return when it ended, showing its output if ``logs``.

        Raises SpecError (invalid job), InventoryError (too few hosts), and when
        waiting UnexpectedStatusError if the job Failed.
        """
        _check_logs(wait, logs)
        name = self._job_name(job_name)
        self._start(*self._build(name, inputs, outputs, arguments, experiment_config, kms_key), wait, logs)

    def request(
        self,
        inputs: Sequence[ProcessingInput] | None = None,
        outputs: Sequence[ProcessingOutput] | None = None,
        arguments: Sequence[str] | None = None,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
        kms_key: str | None = None,
    ) -> dict[str, Any]:
        """The CreateProcessingJob request ``run`` would run: validated; nothing is started or copied."""
        return self._build(self._job_name(job_name), inputs, outputs, arguments, experiment_config, kms_key)[0]

    def _job_name(self, job_name: str | None) -> str:
        if job_name is None:
            base = self.base_job_name or paths.base_name_from_image(str(self.image_uri or ""))
            job_name = paths.name_from_base(base)
        self._current_job_name = job_name
        return job_name

    def _build(
        self,
        name: str,
        inputs: Sequence[ProcessingInput] | None,
        outputs: Sequence[ProcessingOutput] | None,
        arguments: Sequence[str] | None,
        experiment_config: Mapping[str, str] | None,
        kms_key: str | None,
        code: paths.CodePlan | FrameworkBundle | None = None,
    ) -> tuple[dict[str, Any], JobSpec]:
        """The request, as the SDK's ``_normalize_args`` and ``_get_process_args`` build it, and the parsed job."""
        problems: list[Violation] = []
        if kms_key is not None:
            problems.append(Violation("kms_key", "distproc uploads no code to S3: there is nothing to encrypt"))
        channels = [paths.input_request(i, item, problems) for i, item in enumerate(inputs or [])]
        channels += code.inputs() if code else []
        folder = paths.job_folder(name)
        outs = [paths.output_request(i, item, self.home, folder, problems) for i, item in enumerate(outputs or [])]
        self.arguments = as_list(arguments)
        cluster = {"InstanceCount": self.instance_count, "InstanceType": self.instance_type}
        cluster |= {"VolumeSizeInGB": self.volume_size_in_gb, "VolumeKmsKeyId": self.volume_kms_key}
        app = {"ImageUri": self.image_uri, "ContainerEntrypoint": as_list(self.entrypoint)}
        output_config = {"Outputs": outs, "KmsKeyId": self.output_kms_key}
        network = self.network_config
        doc = {
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": without_none(cluster)},
            "AppSpecification": without_none({**app, "ContainerArguments": self.arguments}),
            "ProcessingInputs": channels or None,
            "ProcessingOutputConfig": without_none(output_config) if outs or self.output_kms_key else None,
            "Environment": None if self.env is None else dict(self.env),
            "NetworkConfig": None if network is None else paths.request_form(network, "network_config", problems),
            "StoppingCondition": None
            if self.max_runtime_in_seconds is None
            else {"MaxRuntimeInSeconds": self.max_runtime_in_seconds},
            "RoleArn": self._role_arn(problems),
            "Tags": paths.tag_list(self.tags) if self.tags else None,
            "ExperimentConfig": dict(experiment_config) if experiment_config else None,
        }
        if problems:
            raise SpecError(problems, source=paths.SOURCE)
        request = without_none(doc)
        return request, parse_job(request)

    def _role_arn(self, problems: list[Violation]) -> str | None:
        """``role`` as the request's RoleArn: an ARN as given, a name expanded as the SDK's ``expand_role``."""
        if self.role is None:
            return None
        try:
            return self._options.session.expand_role(self.role)
        except SpecError as exc:
            problems.extend(exc.violations)
            return None

    def _start(
        self,
        doc: dict[str, Any],
        job: JobSpec,
        wait: bool,
        logs: bool,
        code: paths.CodePlan | FrameworkBundle | None = None,
    ) -> None:
        options = self._options
        if options.assume_role and job.role_arn is None:
            if self.role is not None:
                rule = f"{self.role!r} is a role name: assume_role needs its ARN; set account_id to expand it"
                raise paths.problem("role", f"{rule} (Session(account_id=...) or the defaults file)")
            raise paths.problem("role", "required by assume_role=True (its credentials are forwarded)")
        inventory = options.inventory if options.inventory is not None else options.session.require_inventory()
        if not isinstance(inventory, Inventory):
            inventory = load_inventory(os.fspath(inventory))
        hosts = select_hosts(inventory, job.cluster.instance_type, job.cluster.instance_count)
        _with_store(self.home, lambda store: _refuse_used_name(store, job.name))  # before code lands in its folder
        if code is not None:
            code.ship(self.home, options.s3_endpoint_url)
        for warning in job.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if self.role is not None and job.role_arn is None:
            # A name with no account id to expand it: kept on the processor, left out of the job.
            print(
                f"warning: role {self.role!r} is a name and no account_id is set: the job has no RoleArn",
                file=sys.stderr,
            )
        # What the SDK prints as a job starts.
        print(f"\nJob Name:  {job.name}\nInputs:  {doc.get('ProcessingInputs', [])}")
        print(f"Outputs:  {doc.get('ProcessingOutputConfig', {}).get('Outputs', [])}")
        handle = ProcessingJob(job.name, self.home)
        handle._start(job, hosts, str(inventory.path), options.run_options(live_logs=wait and logs))
        self.latest_job = handle
        self.jobs.append(handle)
        if wait:
            handle.wait(logs=logs)


class ScriptProcessor(Processor):
    """Runs a local script in an image, as ``sagemaker.processing.ScriptProcessor``.

    ``run(code)`` copies the script into the job store and ships it to every
    host as the input ``code`` at ``/opt/ml/processing/input/code/``; the
    container runs ``command + ["/opt/ml/processing/input/code/<script>"]``.
    With ``source_dir`` (as FrameworkProcessor) the whole folder is shipped and
    ``code`` is the script's path in it.
    """

    def __init__(
        self,
        role: str | None = None,
        image_uri: str | None = None,
        command: Sequence[str] | None = None,
        instance_count: int | None = None,
        instance_type: str | None = None,
        volume_size_in_gb: int | None = None,
        volume_kms_key: str | None = None,
        output_kms_key: str | None = None,
        max_runtime_in_seconds: int | None = None,
        base_job_name: str | None = None,
        sagemaker_session: Any = None,
        env: Mapping[str, str] | None = None,
        tags: Any = None,
        network_config: Any = None,
        *,
        inventory: PathArg | Inventory | None = None,
        home: PathArg | None = None,
        aws_credentials: str | None = None,
        assume_role: bool | None = None,
        s3_endpoint_url: str | None = None,
        stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
        fan_out: int = 64,
        metrics_interval_seconds: float = 5.0,
        ship_image: bool = False,
        wait_for_hosts: bool | float = False,
    ) -> None:
        # Everything but `command` is Processor's, under the same name: forwarded as it came,
        # so the two lists meet in one place (tests/test_processing_api.py holds the
        # signatures to each other). The entrypoint is set by each run, from the script.
        given = dict(locals())
        forwarded = {name: value for name, value in given.items() if name not in ("self", "command", "__class__")}
        self.command = command
        super().__init__(entrypoint=None, **forwarded)

    # As in the SDK, a ScriptProcessor's run and request take the script first.
    def run(  # type: ignore[override]
        self,
        code: PathArg,
        inputs: Sequence[ProcessingInput] | None = None,
        outputs: Sequence[ProcessingOutput] | None = None,
        arguments: Sequence[str] | None = None,
        wait: bool = True,
        logs: bool = True,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
        kms_key: str | None = None,
        *,
        source_dir: PathArg | None = None,
    ) -> None:
        """Run ``code`` (a local script or an s3:// URI) with ``command``; otherwise as :meth:`Processor.run`."""
        _check_logs(wait, logs)
        plan, name = self._plan(code, source_dir, job_name)
        self._start(*self._build(name, inputs, outputs, arguments, experiment_config, kms_key, plan), wait, logs, plan)

    def request(  # type: ignore[override]
        self,
        code: PathArg,
        inputs: Sequence[ProcessingInput] | None = None,
        outputs: Sequence[ProcessingOutput] | None = None,
        arguments: Sequence[str] | None = None,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
        kms_key: str | None = None,
        *,
        source_dir: PathArg | None = None,
    ) -> dict[str, Any]:
        """The CreateProcessingJob request ``run`` would run: validated; nothing is started or copied."""
        plan, name = self._plan(code, source_dir, job_name)
        return self._build(name, inputs, outputs, arguments, experiment_config, kms_key, plan)[0]

    def _plan(self, code: PathArg, source_dir: PathArg | None, job_name: str | None) -> tuple[paths.CodePlan, str]:
        if not self.command:
            raise paths.problem("command", "required: the program that runs the script, for example ['python3']")
        name = self._job_name(job_name)
        plan = paths.plan_code(code, source_dir, self.home, paths.job_folder(name))
        self.entrypoint = [*as_list(self.command), plan.script]
        return plan, name


def _check_logs(wait: bool, logs: bool) -> None:
    if logs and not wait:
        # As the SDK: output shows while waiting; `latest_job.wait(logs=True)` shows it later.
        raise SpecError([Violation("logs", "logs can only be shown if wait is True: pass logs=False")], paths.SOURCE)


def _refuse_used_name(store: Store, name: str) -> None:
    try:
        raise JobExistsError(name, store.get_job(name).status)
    except JobNotFoundError:
        return
