"""The SDK's framework processors: ``SKLearnProcessor``, ``FrameworkProcessor`` and its
PyTorch, TensorFlow, XGBoost and MXNet kinds, and a ``PySparkProcessor`` that says why
distproc has none.

SageMaker picks a framework's image from its own ECR registry by framework,
version and region (``sagemaker.image_uris.retrieve``). distproc has no such
registry: the image comes from the defaults file's ``images`` (per framework and
version), else, for scikit-learn only, the examples' locally built image (see
session.py); a framework with neither needs ``image_uri``.
FrameworkProcessor's code travels as the SDK's does (see bundle.py).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlparse

from ..errors import DistprocError, SpecError, Violation
from ..inventory import Inventory
from ..plan import DEFAULT_STOP_GRACE_SECONDS
from . import bundle as code_bundle
from .processing import ProcessingInput, ProcessingOutput, ScriptProcessor, _check_logs
from .request import SOURCE, CodePlan, PathArg, as_list, job_folder, problem
from .session import Session

__all__ = [
    "FrameworkProcessor",
    "MXNetProcessor",
    "PySparkProcessor",
    "PyTorchProcessor",
    "SKLearnProcessor",
    "TensorFlowProcessor",
    "XGBoostProcessor",
]

SKLEARN = "sklearn"


class SKLearnProcessor(ScriptProcessor):
    """Runs a scikit-learn script, as ``sagemaker.sklearn.processing.SKLearnProcessor``.

    The SDK's parameters in its order (``framework_version`` first, ``command``
    defaulting to ``["python3"]``); the image is the session's for
    ``sklearn`` and ``framework_version``. distproc's keywords as Processor's.
    """

    def __init__(
        self,
        framework_version: str,
        role: str | None = None,
        instance_count: int | None = None,
        instance_type: str | None = None,
        command: Sequence[str] | None = None,
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
        given = dict(locals())
        forwarded = {k: v for k, v in given.items() if k not in ("self", "__class__", "framework_version", "command")}
        if not isinstance(framework_version, str) or not framework_version:
            raise problem("framework_version", f"must be a version such as '1.2-1' (got {framework_version!r})")
        self.framework_version = framework_version
        # The session the processor will use (Processor refuses anything else given as one).
        session = sagemaker_session if isinstance(sagemaker_session, Session) else Session()
        image_uri = session.image_for(SKLEARN, framework_version)
        super().__init__(image_uri=image_uri, command=command or ["python3"], **forwarded)


#: An SDK estimator's _framework_name where distproc's images key differs.
_IMAGE_KEYS = {"scikit-learn": "sklearn"}


def framework_name(estimator_cls: Any) -> str:
    """The framework an ``estimator_cls`` names: a name ("pytorch"), or an SDK estimator class's ``_framework_name``."""
    name = estimator_cls if isinstance(estimator_cls, str) else getattr(estimator_cls, "_framework_name", None)
    if not isinstance(name, str) or not name:
        got = estimator_cls.__name__ if isinstance(estimator_cls, type) else repr(estimator_cls)
        rule = f"must be a framework's name such as 'pytorch', or an SDK estimator class (got {got})"
        raise problem("estimator_cls", rule)
    return name


class FrameworkProcessor(ScriptProcessor):
    """Runs a script with its source folder and requirements, as ``sagemaker.processing.FrameworkProcessor``.

    The SDK's parameters in its order. ``estimator_cls`` names the framework:
    a name (``"pytorch"``), or an SDK estimator class (its ``_framework_name``
    is read; distproc has no estimators). The image is ``image_uri``, else the
    defaults file's ``images: <framework>: <framework_version>`` (scikit-learn
    falls back to the examples' image); with neither, a SpecError on
    ``image_uri``. ``py_version`` is kept (SageMaker picks an image by it).
    ``code_location`` is where ``sourcedir.tar.gz`` and ``runproc.sh`` go:
    an ``s3://`` prefix, a local folder or ``file://`` URI; by default the job
    store's ``data/`` folder. distproc's keywords as Processor's.
    """

    framework_entrypoint_command: ClassVar[list[str]] = list(code_bundle.RUNNER_COMMAND)

    def __init__(
        self,
        estimator_cls: Any,
        framework_version: str,
        role: str | None = None,
        instance_count: int | None = None,
        instance_type: str | None = None,
        py_version: str = "py3",
        image_uri: str | None = None,
        command: Sequence[str] | None = None,
        volume_size_in_gb: int | None = None,
        volume_kms_key: str | None = None,
        output_kms_key: str | None = None,
        code_location: str | None = None,
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
        given = dict(locals())
        own = ("self", "__class__", "estimator_cls", "framework_version", "py_version", "code_location", "command")
        forwarded = {k: v for k, v in given.items() if k not in own}
        name = framework_name(estimator_cls)
        if not isinstance(framework_version, str) or not framework_version:
            raise problem("framework_version", f"must be a version such as '2.1' (got {framework_version!r})")
        if code_location is not None and not isinstance(code_location, str):
            raise problem("code_location", f"must be a string (got {type(code_location).__name__})")
        self.estimator_cls = estimator_cls
        self.framework_version = framework_version
        self.py_version = py_version
        # As the SDK: a trailing "/" is dropped; the code goes to <code_location>/<job>/source/.
        self.code_location = code_location[:-1] if code_location and code_location.endswith("/") else code_location
        if image_uri is None:
            session = sagemaker_session if isinstance(sagemaker_session, Session) else Session()
            try:
                forwarded["image_uri"] = session.image_for(_IMAGE_KEYS.get(name, name), framework_version)
            except SpecError as exc:
                rule = f"{exc.violations[0].rule}; or pass image_uri="
                raise SpecError([Violation("image_uri", rule)], source=SOURCE) from None
        if base_job_name is None:
            forwarded["base_job_name"] = name  # the SDK's default: the estimator's _framework_name
        # The SDK's default command; the image must have `python` (Debian's python3 alone has not).
        super().__init__(command=list(command) if command else ["python"], **forwarded)

    def run(  # type: ignore[override]
        self,
        code: str,
        source_dir: PathArg | None = None,
        dependencies: Sequence[PathArg] | None = None,
        git_config: Mapping[str, str] | None = None,
        inputs: Sequence[ProcessingInput] | None = None,
        outputs: Sequence[ProcessingOutput] | None = None,
        arguments: Sequence[str] | None = None,
        wait: bool = True,
        logs: bool = True,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
        kms_key: str | None = None,
        codeartifact_repo_arn: str | None = None,
    ) -> None:
        """Pack ``source_dir`` (or ``code`` alone) and ``dependencies``, then run ``code`` through runproc.sh.

        ``code`` is the script, a path inside ``source_dir`` when that is
        given; an ``s3://`` URI is run as the SDK runs one, by ``/bin/bash``,
        with ``source_dir`` and ``dependencies`` ignored. ``git_config`` and
        ``codeartifact_repo_arn`` are refused (distproc clones no repository
        and logs into no CodeArtifact).
        """
        _check_logs(wait, logs)
        plan, name = self._bundle(code, source_dir, dependencies, git_config, codeartifact_repo_arn, job_name)
        built = self._build(name, inputs, outputs, arguments, experiment_config, kms_key, plan)
        self._start(*built, wait, logs, plan)

    def request(  # type: ignore[override]
        self,
        code: str,
        source_dir: PathArg | None = None,
        dependencies: Sequence[PathArg] | None = None,
        git_config: Mapping[str, str] | None = None,
        inputs: Sequence[ProcessingInput] | None = None,
        outputs: Sequence[ProcessingOutput] | None = None,
        arguments: Sequence[str] | None = None,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
        kms_key: str | None = None,
        codeartifact_repo_arn: str | None = None,
    ) -> dict[str, Any]:
        """The CreateProcessingJob request ``run`` would run: validated; nothing is packed or written."""
        plan, name = self._bundle(code, source_dir, dependencies, git_config, codeartifact_repo_arn, job_name)
        return self._build(name, inputs, outputs, arguments, experiment_config, kms_key, plan)[0]

    def _bundle(
        self,
        code: str,
        source_dir: PathArg | None,
        dependencies: Sequence[PathArg] | None,
        git_config: Mapping[str, str] | None,
        codeartifact_repo_arn: str | None,
        job_name: str | None,
    ) -> tuple[CodePlan | code_bundle.FrameworkBundle, str]:
        problems = []
        if git_config is not None:
            rule = "not supported: distproc does not clone repositories; clone it here and pass source_dir="
            problems.append(Violation("git_config", rule))
        if codeartifact_repo_arn is not None:
            rule = "not supported: put the packages in source_dir (pip install -r requirements.txt finds them there)"
            problems.append(Violation("codeartifact_repo_arn", rule))
        if not isinstance(code, str) or not code:
            problems.append(Violation("code", f"must be the script's path (got {code!r})"))
        if problems:
            raise SpecError(problems, source=SOURCE)
        name = self._job_name(job_name)
        plan: CodePlan | code_bundle.FrameworkBundle
        if code[:5].lower() == "s3://":
            script = posixpath.basename(urlparse(code).path)
            if not script:
                raise problem("code", f"must name the script, not a folder (got {code!r})")
            local = code_bundle.ENTRYPOINT_LOCAL_PATH
            plan = CodePlan(code, f"{local}/{script}", input_name=code_bundle.ENTRYPOINT_INPUT_NAME, local_path=local)
            self.entrypoint = [*self.framework_entrypoint_command, plan.script]
            return plan, name
        command = as_list(self.command)
        if not isinstance(command, list) or not command or not all(isinstance(w, str) and w for w in command):
            raise problem("command", f"must be a list of words such as ['python3'] (got {self.command!r})")
        plan = code_bundle.plan_bundle(
            code, source_dir, dependencies, command, self.code_location, self.home, job_folder(name)
        )
        self.entrypoint = plan.entrypoint()
        return plan, name


class _NamedFrameworkProcessor(FrameworkProcessor):
    """A FrameworkProcessor whose framework is the class's ``estimator_cls``, as the SDK's PyTorchProcessor..."""

    estimator_cls: Any = None

    def __init__(
        self,
        framework_version: str,
        role: str | None = None,
        instance_count: int | None = None,
        instance_type: str | None = None,
        py_version: str = "py3",
        image_uri: str | None = None,
        command: Sequence[str] | None = None,
        volume_size_in_gb: int | None = None,
        volume_kms_key: str | None = None,
        output_kms_key: str | None = None,
        code_location: str | None = None,
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
        given = dict(locals())
        forwarded = {k: v for k, v in given.items() if k not in ("self", "__class__")}
        super().__init__(type(self).estimator_cls, **forwarded)


class PyTorchProcessor(_NamedFrameworkProcessor):
    """``sagemaker.pytorch.processing.PyTorchProcessor``: the image from ``images: pytorch:``, or image_uri."""

    estimator_cls = "pytorch"


class TensorFlowProcessor(_NamedFrameworkProcessor):
    """``sagemaker.tensorflow.processing.TensorFlowProcessor``: the image from ``images: tensorflow:``, or image_uri."""

    estimator_cls = "tensorflow"


class XGBoostProcessor(_NamedFrameworkProcessor):
    """``sagemaker.xgboost.processing.XGBoostProcessor``: the image from ``images: xgboost:``, or image_uri."""

    estimator_cls = "xgboost"


class MXNetProcessor(_NamedFrameworkProcessor):
    """``sagemaker.mxnet.processing.MXNetProcessor``: the image from ``images: mxnet:``, or image_uri."""

    estimator_cls = "mxnet"


class PySparkProcessor:
    """The SDK's ``sagemaker.spark.processing.PySparkProcessor``: refused, saying why, when made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise DistprocError(
            "PySparkProcessor is not supported: SageMaker's Spark image starts a YARN cluster across the "
            "job's instances with its own bootstrap, which distproc does not reproduce. Run Spark in an "
            "image of your own with Processor or ScriptProcessor (for example spark-submit --master "
            "'local[*]' on each host, one shard each with s3_data_distribution_type='ShardedByS3Key')."
        )
