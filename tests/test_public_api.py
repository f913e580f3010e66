"""The package's public surface is exactly the intended names."""

import distproc

INTENDED = {
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
}


def test_exported_names_are_the_intended_ones() -> None:
    """`distproc.__all__` lists exactly the public API, and each name exists."""
    assert set(distproc.__all__) == INTENDED
    for name in distproc.__all__:
        assert hasattr(distproc, name), name


def test_every_error_is_a_distproc_error() -> None:
    """One error tree: every exported error derives from DistprocError."""
    errors = [getattr(distproc, n) for n in distproc.__all__ if n.endswith(("Error", "Error_"))]
    assert errors and all(issubclass(e, distproc.DistprocError) for e in errors)
