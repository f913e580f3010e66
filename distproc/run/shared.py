"""file:// data in a folder the nodes share (a Slurm inventory's ``shared_dir``): bound, not copied.

Where every node sees a folder at the same path as this machine (an NFS or
Lustre home on a Slurm cluster), a file:// input in it needs no copy through
the submit node: the node's container gets the folder bind-mounted, read-only,
at the input's LocalPath; a file:// output in it is bind-mounted at the
output's LocalPath, so the containers write there directly and nothing comes
back at the end. Anything else is staged as on the SSH fleet.

Bound only when binding gives what a copy would: an input that is a folder
(its URI ends in ``/``: every file under it, the S3Prefix naming of a copy),
FullyReplicated, S3Prefix, File mode, uncompressed; and only paths that stay
in the shared folder once symbolic links are resolved, so a job cannot mount
anything else of a node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..spec import ProcessingJob
from ..staging import is_s3_uri
from ..staging.local_files import file_uri_path

__all__ = ["Bind", "shared_binds"]

#: What docker's --volume and the API's Binds ("SRC:DST:ro") cannot carry in a path.
_UNBINDABLE = (":", ",", "\n", "\0")


@dataclass(frozen=True, slots=True)
class Bind:
    """One input or output bound from the shared folder into every container."""

    name: str
    #: The folder, as every node sees it (resolved, inside the shared folder).
    source: str
    #: The input's or output's LocalPath in the container.
    target: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class SharedBinds:
    inputs: tuple[Bind, ...] = ()
    outputs: tuple[Bind, ...] = ()

    def input_names(self) -> frozenset[str]:
        return frozenset(b.name for b in self.inputs)

    def output_names(self) -> frozenset[str]:
        return frozenset(b.name for b in self.outputs)

    def task_binds(self) -> tuple[tuple[str, str, bool], ...]:
        """The task's ``binds``: (source, target, read_only) per bound input and output."""
        return tuple((b.source, b.target, b.read_only) for b in (*self.inputs, *self.outputs))


def _inside(shared_real: str, path: str) -> str | None:
    """The path with links resolved, if it stays in the shared folder and docker can bind it; else None."""
    real = os.path.realpath(path)
    if real != shared_real and not real.startswith(shared_real.rstrip("/") + "/"):
        return None
    if any(c in real for c in _UNBINDABLE):
        return None
    return real


def shared_binds(job: ProcessingJob, shared_dir: str | None) -> SharedBinds:
    """What of the job's file:// data can be bound from ``shared_dir`` (nothing when it is None).

    A bound output's folder is created here (docker needs it, and the
    containers write into it); one that cannot be is not bound, and is
    fetched back as without a shared folder, whose error then says why.
    The same answer each time for the same job and folders: Prepare binds
    what EndOfJob then does not fetch.
    """
    if shared_dir is None:
        return SharedBinds()
    shared_real = os.path.realpath(shared_dir)
    inputs = []
    for item in job.inputs:
        if is_s3_uri(item.uri) or any(c in item.local_path for c in _UNBINDABLE):
            continue
        if (item.distribution, item.data_type, item.input_mode, item.compression) != (
            "FullyReplicated",
            "S3Prefix",
            "File",
            "None",
        ):
            continue
        path = file_uri_path(item.uri)
        if not path.endswith("/") or not os.path.isdir(path):
            continue  # a prefix that is not a whole folder: only a copy gives its S3Prefix matches
        real = _inside(shared_real, path)
        if real is not None:
            inputs.append(Bind(item.name, real, item.local_path, True))
    outputs = []
    for output in job.outputs:
        if is_s3_uri(output.uri) or any(c in output.local_path for c in _UNBINDABLE):
            continue
        path = file_uri_path(output.uri)
        real = _inside(shared_real, path)
        if real is None:
            continue
        try:
            os.makedirs(real, exist_ok=True)
        except OSError:
            continue
        outputs.append(Bind(output.name, real, output.local_path, False))
    return SharedBinds(tuple(inputs), tuple(outputs))
