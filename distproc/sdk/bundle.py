"""A FrameworkProcessor's code: ``sourcedir.tar.gz`` and the ``runproc.sh`` that unpacks and runs it.

What the SageMaker SDK (v2, ``sagemaker.processing.FrameworkProcessor``) does:

- ``source_dir``'s entries (or the script alone), then each of ``dependencies``,
  go to the root of ``sourcedir.tar.gz`` under their base names, links
  followed (``sagemaker.utils.create_tar_file``);
- the tarball goes to ``<code_location>/<job>/source/sourcedir.tar.gz`` and
  reaches the container as the input ``code`` at
  ``/opt/ml/processing/input/code/``;
- a generated ``runproc.sh`` beside it (``.../source/runproc.sh``) reaches the
  container as the input ``entrypoint`` at ``/opt/ml/processing/input/entrypoint``;
  the container runs ``/bin/bash /opt/ml/processing/input/entrypoint/runproc.sh``,
  which unpacks the tarball, installs ``requirements.txt`` with pip if the
  bundle has one, then runs ``command + [script] + arguments``.

distproc's default ``code_location`` is the job store's ``data/`` folder (its
stand-in for the SDK's default bucket); a local folder or ``file://`` URI is
written the same way, and an ``s3://`` prefix is uploaded to (see
:meth:`FrameworkBundle.ship`). Unlike the SDK's script, every value in the
generated script is shell-quoted, and pip is run by the interpreter of
``command`` (the SDK runs ``python -m pip`` whatever the command).
"""

from __future__ import annotations

import os
import shlex
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlparse

from ..errors import SpecError, StagingError, Violation
from . import request as paths

BUNDLE_NAME = "sourcedir.tar.gz"
RUNNER_NAME = "runproc.sh"
ENTRYPOINT_INPUT_NAME = "entrypoint"
ENTRYPOINT_LOCAL_PATH = "/opt/ml/processing/input/entrypoint"
#: The SDK's FrameworkProcessor.framework_entrypoint_command.
RUNNER_COMMAND = ("/bin/bash",)


def runner_script(command: Sequence[str], script: str) -> str:
    """The text of runproc.sh: the SDK's steps, each value quoted for the shell.

    >>> print(runner_script(["python3", "-u"], "jobs/my prep.py").splitlines()[-1])
    exec python3 -u 'jobs/my prep.py' "$@"
    """
    words = " ".join(shlex.quote(word) for word in [*command, script])
    first = os.path.basename(command[0])
    # The interpreter that runs the code installs its requirements, so they land where it looks.
    pip = shlex.quote(command[0]) if first.startswith("python") else "python3"
    return f"""#!/bin/bash
# Written by distproc's FrameworkProcessor, as the SageMaker SDK's runproc.sh.

cd {paths.CODE_LOCAL_PATH}/
tar -xzf {BUNDLE_NAME}

# Exit on any error: the container's exit status is the job's.
set -e

if [[ -f 'requirements.txt' ]]; then
    {pip} -m pip install -r requirements.txt
fi

exec {words} "$@"
"""


def _location(code_location: str | None, home: Path, job: str) -> str:
    """``<code_location>/<job>/source/``, a URI; by default in the job store's data folder."""
    if code_location is None:
        return paths.folder_uri(paths.job_data_dir(home, job) / "source")
    text = code_location.rstrip("/")
    if text[:5].lower() == "s3://":
        return f"{text}/{job}/source/"
    if paths.is_uri(text) and text[:7].lower() != "file://":
        raise paths.problem("code_location", f"must be an s3:// prefix, a file:// URI or a local folder (got {text!r})")
    folder = Path(unquote(urlparse(text).path)) if text[:7].lower() == "file://" else Path(text).expanduser()
    return paths.folder_uri(Path(os.path.abspath(folder)) / job / "source")


@dataclass(frozen=True, slots=True)
class FrameworkBundle:
    """Where a FrameworkProcessor's code comes from and where its two files go."""

    #: ``<code_location>/<job>/source/`` as a URI (s3:// or file://, with a trailing slash).
    location: str
    #: The script's path in the bundle, as given (``process.py``, ``jobs/main.py``).
    script: str
    #: What goes into the bundle, each at its root under its base name.
    files: tuple[Path, ...]
    runner: str

    def inputs(self) -> list[dict[str, Any]]:
        """The two inputs, named and placed as the SDK does: the bundle, then the runner."""
        return [
            _input(paths.CODE_INPUT_NAME, self.location + BUNDLE_NAME, paths.CODE_LOCAL_PATH + "/"),
            _input(ENTRYPOINT_INPUT_NAME, self.location + RUNNER_NAME, ENTRYPOINT_LOCAL_PATH),
        ]

    def entrypoint(self) -> list[str]:
        return [*RUNNER_COMMAND, f"{ENTRYPOINT_LOCAL_PATH}/{RUNNER_NAME}"]

    def ship(self, home: Path, s3_endpoint_url: str | None = None) -> None:
        """Write sourcedir.tar.gz and runproc.sh where the inputs point: the SDK uploads them at this point."""
        if self.location[:5].lower() == "s3://":
            with tempfile.TemporaryFile() as bundle:
                pack(self.files, bundle)
                bundle.seek(0)
                _upload(self.location, {BUNDLE_NAME: bundle, RUNNER_NAME: self.runner.encode()}, s3_endpoint_url)
            return
        folder = Path(unquote(urlparse(self.location).path))
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(folder / BUNDLE_NAME, "wb") as bundle:
                pack(self.files, bundle)
            (folder / RUNNER_NAME).write_text(self.runner)
        except OSError as exc:
            raise StagingError(f"cannot write the code bundle to {folder}: {exc}") from exc


def _input(name: str, uri: str, local_path: str) -> dict[str, Any]:
    s3 = {"S3Uri": uri, "LocalPath": local_path, "S3DataType": "S3Prefix", "S3InputMode": "File"}
    s3 |= {"S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"}
    return {"InputName": name, "AppManaged": False, "S3Input": s3}


def plan_bundle(
    code: str,
    source_dir: paths.PathArg | None,
    dependencies: Sequence[paths.PathArg] | None,
    command: Sequence[str],
    code_location: str | None,
    home: Path,
    job: str,
) -> FrameworkBundle:
    """Check what would be packed (nothing is read yet) and where it goes."""
    problems: list[Violation] = []
    if source_dir is None:
        script_path = paths.local_path(code)
        if not script_path.is_file():
            problems.append(Violation("code", f"no such file: {script_path}"))
        script = script_path.name
        files = [script_path]
    else:
        folder = Path(os.path.abspath(os.path.expanduser(os.fspath(source_dir))))
        if not folder.is_dir():
            raise paths.problem("source_dir", f"must be a local folder (got {os.fspath(source_dir)!r})")
        script = PurePosixPath(code).as_posix()
        inside = (folder / code).resolve()
        if PurePosixPath(code).is_absolute() or ".." in PurePosixPath(code).parts:
            problems.append(Violation("code", f"must be a path inside source_dir, relative to it (got {code!r})"))
        elif not inside.is_file() or not inside.is_relative_to(folder.resolve()):
            problems.append(Violation("code", f"{code!r} is not a file in source_dir {folder}"))
        skip = os.path.abspath(paths.data_dir(home))
        # The SDK lists source_dir's entries (os.listdir); the job store's data folder is left out.
        files = [folder / name for name in sorted(os.listdir(folder)) if os.path.abspath(folder / name) != skip]
    if isinstance(dependencies, (str, os.PathLike)):
        problems.append(Violation("dependencies", f"must be a list of paths (got {os.fspath(dependencies)!r})"))
        dependencies = None
    for i, dep in enumerate(dependencies or []):
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(dep))))
        if not path.exists():
            problems.append(Violation(f"dependencies[{i}]", f"no such file or folder: {path}"))
        files.append(path)
    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen:
            rule = f"{path} and {seen[path.name]} would both be {path.name!r} at the bundle's root"
            problems.append(Violation("dependencies", rule))
        seen[path.name] = path
    try:
        location = _location(code_location, home, job)
    except SpecError as exc:
        problems.extend(exc.violations)
        location = ""
    if problems:
        raise SpecError(problems, source=paths.SOURCE)
    return FrameworkBundle(location, script, tuple(files), runner_script(command, script))


def pack(files: Sequence[Path], into: IO[bytes]) -> None:
    """sourcedir.tar.gz: each path at the root under its base name, links followed, as the SDK's tar."""
    try:
        with tarfile.open(fileobj=into, mode="w:gz", dereference=True) as tar:
            for path in files:
                tar.add(path, arcname=path.name)
    except OSError as exc:
        raise StagingError(f"cannot pack the code bundle: {exc}") from exc


def _upload(location: str, objects: dict[str, IO[bytes] | bytes], endpoint_url: str | None) -> None:
    """Put each object under the s3:// prefix (boto3 is loaded only for a job that names one)."""
    import botocore.exceptions

    from ..staging.s3 import S3Settings, make_client

    bucket, _, prefix = location[5:].partition("/")
    client = make_client(S3Settings(endpoint_url=endpoint_url))
    for name, body in objects.items():
        try:
            client.put_object(Bucket=bucket, Key=prefix + name, Body=body)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise StagingError(f"cannot upload the code bundle to s3://{bucket}/{prefix}{name}: {exc}") from exc
