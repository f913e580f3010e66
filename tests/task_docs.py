"""A valid agent task document for unit tests of the agent, with fields to override."""

from __future__ import annotations

from typing import Any


def task_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "job_name": "j1",
        "algo": "algo-2",
        "hosts": ["algo-1", "algo-2"],
        "add_hosts": [["algo-1", "10.0.0.1"], ["algo-2", "10.0.0.2"]],
        "image": "img:1",
        "entrypoint": None,
        "arguments": None,
        "environment": [["A", "1"]],
        "resource_config": {},
        "processing_job_config": {},
        "local_paths": ["/opt/ml/processing/in"],
        "docker": {"command": ["docker"], "host": None},
        "gpus": 0,
        "gpu_mode": "gpus",
        "max_runtime_seconds": None,
        "stop_grace_seconds": 5,
    }
    doc.update(over)
    return doc
