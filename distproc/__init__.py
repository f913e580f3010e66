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

from .coordinator import JobRunner, RunOptions
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
from .outcome import JobOutcome, JobStatus
from .processing import (
    JobHandle,
    ProcessingInput,
    ProcessingOutput,
    Processor,
    ScriptProcessor,
    UnexpectedStatusError,
)
from .spec import ProcessingJob, load_job, parse_job
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "AgentError",
    "ConnectionError_",
    "DistprocError",
    "Host",
    "HostKeyError",
    "Inventory",
    "InventoryError",
    "JobExistsError",
    "JobHandle",
    "JobNotFoundError",
    "JobOutcome",
    "JobRunner",
    "JobStatus",
    "ProcessingInput",
    "ProcessingJob",
    "ProcessingOutput",
    "Processor",
    "RemoteCommandError",
    "RunOptions",
    "ScriptProcessor",
    "SpecError",
    "StagingError",
    "Store",
    "StoreError",
    "UnexpectedStatusError",
    "Violation",
    "__version__",
    "load_inventory",
    "load_job",
    "parse_job",
    "select_hosts",
]
