"""A recorded job's backend, built again in another process (`distproc stop`, `attach`).

The job store keeps what each backend's ``record()`` gave (``JobRecord.backend``);
a store written before backends were recorded has none, and its jobs ran on
the SSH fleet, whose hosts' endpoints alone reach them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import StoreError
from .base import Backend
from .fleet import FleetBackend

__all__ = ["backend_from_record"]


def backend_from_record(record: Mapping[str, Any] | None, job: str) -> Backend:
    """The backend a job ran on, from the job store's record of it (None: the fleet)."""
    kind = (record or {}).get("backend", "fleet")
    if kind == "fleet":
        return FleetBackend(())
    if kind == "slurm" and record is not None:
        # Only for a Slurm job: its module is not loaded for the fleet's.
        from .slurm.backend import SlurmBackend

        return SlurmBackend.from_record(record, job)
    raise StoreError(f"job {job}: the job store names a backend this distproc does not know: {str(kind)[:40]!r}")
