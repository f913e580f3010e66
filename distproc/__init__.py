"""distproc: SageMaker-Processing-style container jobs on machines you own.

>>> from distproc import load_job, load_inventory, select_hosts, JobRunner, Store
>>> job = load_job("job.json")
>>> hosts = select_hosts(load_inventory("inventory/local.yaml"),
...                      job.cluster.instance_type, job.cluster.instance_count)
>>> outcome = asyncio.run(JobRunner(job, hosts, Store()).run())
>>> outcome.status
<JobStatus.COMPLETED: 'Completed'>
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
    "JobNotFoundError",
    "JobOutcome",
    "JobRunner",
    "JobStatus",
    "ProcessingJob",
    "RemoteCommandError",
    "RunOptions",
    "SpecError",
    "StagingError",
    "Store",
    "StoreError",
    "Violation",
    "__version__",
    "load_inventory",
    "load_job",
    "parse_job",
    "select_hosts",
]
