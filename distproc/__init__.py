"""distproc: SageMaker-Processing-style container jobs on machines you own.

>>> from distproc import load_job, load_inventory, select_hosts, JobRunner, Store
>>> job = load_job("job.json")
>>> hosts = select_hosts(load_inventory("inventory/local.yaml"),
...                      job.cluster.instance_type, job.cluster.instance_count)
>>> outcome = asyncio.run(JobRunner(job, hosts, Store()).run())
>>> outcome.status
<JobStatus.COMPLETED: 'Completed'>

The SageMaker SDK's processing API (docs/python-api.md):

>>> from distproc import ProcessingInput, ProcessingOutput, ScriptProcessor
>>> processor = ScriptProcessor(image_uri="prep:1", command=["python3"], instance_count=3,
...                             instance_type="ml.m5.xlarge", inventory="inventory/three-hosts.yaml")
>>> processor.run(code="prep.py", inputs=[ProcessingInput(source="data/", destination="/opt/ml/processing/input")])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        AgentError,
        ConnectionError_,
        DistprocError,
        HostKeyError,
        InventoryError,
        JobExistsError,
        JobNotFoundError,
        RemoteCommandError,
        SpecError,
        StagingError,
        StoreError,
        Violation,
    )
    from .inventory import Host, Inventory, load_inventory, select_hosts
    from .run.options import RunOptions
    from .run.outcome import JobOutcome, JobStatus
    from .run.runner import JobRunner
    from .sdk.frameworks import (
        FrameworkProcessor,
        MXNetProcessor,
        PySparkProcessor,
        PyTorchProcessor,
        SKLearnProcessor,
        TensorFlowProcessor,
        XGBoostProcessor,
    )
    from .sdk.processing import (
        JobHandle,
        ProcessingInput,
        ProcessingJob,
        ProcessingOutput,
        Processor,
        ScriptProcessor,
        UnexpectedStatusError,
        UnexpectedStatusException,
    )
    from .sdk.session import Session
    from .spec import JobSpec, load_job, parse_job
    from .store.db import Store

from .version import __version__

__all__ = [
    "AgentError",
    "ConnectionError_",
    "DistprocError",
    "FrameworkProcessor",
    "Host",
    "HostKeyError",
    "Inventory",
    "InventoryError",
    "JobExistsError",
    "JobHandle",
    "JobNotFoundError",
    "JobOutcome",
    "JobRunner",
    "JobSpec",
    "JobStatus",
    "MXNetProcessor",
    "ProcessingInput",
    "ProcessingJob",
    "ProcessingOutput",
    "Processor",
    "PySparkProcessor",
    "PyTorchProcessor",
    "RemoteCommandError",
    "RunOptions",
    "SKLearnProcessor",
    "ScriptProcessor",
    "Session",
    "SpecError",
    "StagingError",
    "Store",
    "StoreError",
    "TensorFlowProcessor",
    "UnexpectedStatusError",
    "UnexpectedStatusException",
    "Violation",
    "XGBoostProcessor",
    "__version__",
    "load_inventory",
    "load_job",
    "parse_job",
    "select_hosts",
]

#: Where each public name lives. The package loads it on first use (PEP 562), so
#: `import distproc.cli` does not pay for the coordinator (asyncssh, boto3) when a
#: command like `distproc --help` or `validate` needs none of it.
_HOME = {
    "AgentError": "errors",
    "ConnectionError_": "errors",
    "DistprocError": "errors",
    "HostKeyError": "errors",
    "InventoryError": "errors",
    "JobExistsError": "errors",
    "JobNotFoundError": "errors",
    "RemoteCommandError": "errors",
    "SpecError": "errors",
    "StagingError": "errors",
    "StoreError": "errors",
    "Violation": "errors",
    "Host": "inventory",
    "Inventory": "inventory",
    "load_inventory": "inventory",
    "select_hosts": "inventory",
    "JobRunner": "run.runner",
    "RunOptions": "run.options",
    "JobOutcome": "run.outcome",
    "JobStatus": "run.outcome",
    "JobHandle": "sdk.processing",
    "ProcessingInput": "sdk.processing",
    "ProcessingJob": "sdk.processing",
    "ProcessingOutput": "sdk.processing",
    "Processor": "sdk.processing",
    "ScriptProcessor": "sdk.processing",
    "UnexpectedStatusError": "sdk.processing",
    "UnexpectedStatusException": "sdk.processing",
    "Session": "sdk.session",
    "SKLearnProcessor": "sdk.frameworks",
    "PySparkProcessor": "sdk.frameworks",
    "FrameworkProcessor": "sdk.frameworks",
    "PyTorchProcessor": "sdk.frameworks",
    "TensorFlowProcessor": "sdk.frameworks",
    "XGBoostProcessor": "sdk.frameworks",
    "MXNetProcessor": "sdk.frameworks",
    "JobSpec": "spec",
    "load_job": "spec",
    "parse_job": "spec",
    "Store": "store.db",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # once loaded, a plain attribute: __getattr__ is not asked again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
