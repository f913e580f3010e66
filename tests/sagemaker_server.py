"""moto's SageMaker API as a real HTTP endpoint, for `distproc import` (issue 17 part 6).

Run as a script, it is moto_server with one gap filled: moto 5.2's
CreateProcessingJob drops ProcessingResources and Environment, so its
DescribeProcessingJob leaves out a member AWS always answers with (required in
botocore's DescribeProcessingJobResponse). Here both are kept on moto's job,
and moto's own code answers with them; nothing else of moto is changed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.s3server import MotoServer


def start_sagemaker_server(host: str = "127.0.0.1") -> MotoServer:
    # Imported here: run as a script (below), this file has no `tests` package on its path.
    from tests.s3server import start_moto_server

    return start_moto_server(host, launcher=[sys.executable, str(Path(__file__).resolve())])


def _keep_resources_and_environment() -> None:
    from moto.sagemaker.responses import SageMakerResponse

    create = SageMakerResponse.create_processing_job

    def create_processing_job(self: Any) -> Any:
        result = create(self)
        job = self.sagemaker_backend.processing_jobs[self._get_param("ProcessingJobName")]
        # moto answers with every attribute of its job object, named in CamelCase.
        job.processing_resources = self._get_param("ProcessingResources")
        job.environment = self._get_param("Environment")
        return result

    SageMakerResponse.create_processing_job = create_processing_job  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    _keep_resources_and_environment()
    main(sys.argv[1:])
