"""The SDK's framework processors: ``sagemaker.sklearn.processing.SKLearnProcessor`` and a
``PySparkProcessor`` that says why distproc has none.

SageMaker picks a framework's image from its own ECR registry by framework,
version and region (``sagemaker.image_uris.retrieve``). distproc has no such
registry: the image comes from the defaults file's ``images`` (per framework and
version), else the examples' locally built scikit-learn image (see session.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import DistprocError
from ..inventory import Inventory
from ..plan import DEFAULT_STOP_GRACE_SECONDS
from .processing import ScriptProcessor
from .request import PathArg, problem
from .session import Session

__all__ = ["PySparkProcessor", "SKLearnProcessor"]

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
        instance_type: str | None = None,
        instance_count: int | None = None,
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


class PySparkProcessor:
    """The SDK's ``sagemaker.spark.processing.PySparkProcessor``: refused, saying why, when made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise DistprocError(
            "PySparkProcessor is not supported: SageMaker's Spark image starts a YARN cluster across the "
            "job's instances with its own bootstrap, which distproc does not reproduce. Run Spark in an "
            "image of your own with Processor or ScriptProcessor (for example spark-submit --master "
            "'local[*]' on each host, one shard each with s3_data_distribution_type='ShardedByS3Key')."
        )
