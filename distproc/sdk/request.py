"""From SageMaker-SDK-style arguments to the CreateProcessingJob request (for distproc.sdk.processing).

What the SDK's ``_normalize_args`` and ``ProcessingJob._get_process_args`` do,
with the job store in the place of S3:

- job names: ``<base>-YYYY-MM-DD-HH-MM-SS-mmm`` (UTC), at most 63 characters,
  as ``sagemaker.utils.name_from_base``; the base is ``base_job_name`` or the
  image's repository name;
- input names ``input-1``..., output names ``output-1``... where none is given;
- local paths become ``file://`` URIs where the SDK would upload them to S3: a
  folder gets a trailing ``/`` (the S3 prefix is then exactly the folder), a
  file must not be the start of other paths beside it;
- the job store's ``data/`` folder plays the SDK's default bucket:
  ``data/<job>/input/code/`` gets a ScriptProcessor's code when the job starts,
  ``data/<job>/output/<output name>/`` is an output's default destination
  (SageMaker: ``s3://<default bucket>/<job>/output/<output name>``).

Arguments the request cannot hold are SpecErrors naming the argument
(``inputs[0].source``); everything else is left to ``parse_job``, whose
violations name the request's fields.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import SpecError, StagingError, Violation
from ..spec._rules import path_name_problems
from ..spec.validate import validate_value
from ..staging.local_files import list_prefix
from ..userfiles import inside

MAX_NAME_LENGTH = 63
REFUSED_JOB_FOLDER = "_refused-job-name"
CODE_INPUT_NAME = "code"
CODE_LOCAL_PATH = "/opt/ml/processing/input/code"
SOURCE = "processing arguments"

PathArg = str | os.PathLike[str]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9-]+")


@dataclass
class ProcessingInput:
    """One input, with the SDK's parameters and defaults; ``source`` may be a local file or folder.

    >>> ProcessingInput(source="data/", destination="/opt/ml/processing/input").s3_data_distribution_type
    'FullyReplicated'
    """

    source: PathArg | None = None
    destination: str | None = None
    input_name: str | None = None
    s3_data_type: str = "S3Prefix"
    s3_input_mode: str = "File"
    s3_data_distribution_type: str = "FullyReplicated"
    s3_compression_type: str = "None"
    s3_input: Any = None
    dataset_definition: Any = None
    app_managed: bool = False

    def __post_init__(self) -> None:
        # The SDK's other spelling (its S3Input, or the request's dict): its fields win, as there.
        for attr, (sdk_attr, key) in _S3_INPUT_FIELDS.items():
            given = self.s3_input
            value = given.get(key) if isinstance(given, Mapping) else getattr(given, sdk_attr, None)
            if value is not None:
                setattr(self, attr, value)


_S3_INPUT_FIELDS = {
    "source": ("s3_uri", "S3Uri"),
    "destination": ("local_path", "LocalPath"),
    "s3_data_type": ("s3_data_type", "S3DataType"),
    "s3_input_mode": ("s3_input_mode", "S3InputMode"),
    "s3_data_distribution_type": ("s3_data_distribution_type", "S3DataDistributionType"),
    "s3_compression_type": ("s3_compression_type", "S3CompressionType"),
}


@dataclass
class ProcessingOutput:
    """One output, with the SDK's parameters and defaults; ``destination`` may be a local folder.

    Without a destination it goes to ``<job store>/data/<job>/output/<output name>/``.
    """

    source: str | None = None
    destination: PathArg | None = None
    output_name: str | None = None
    s3_upload_mode: str = "EndOfJob"
    app_managed: bool = False
    feature_store_output: Any = None


def problem(field: str, rule: str) -> SpecError:
    """A SpecError naming the Python argument at fault (``inputs[0].source``, ``code``)."""
    return SpecError([Violation(field, rule)], source=SOURCE)


# -- job names ------------------------------------------------------------------------------


def timestamp(moment: float | None = None) -> str:
    """``YYYY-MM-DD-HH-MM-SS-mmm`` in UTC, as ``sagemaker.utils.sagemaker_timestamp``."""
    moment = time.time() if moment is None else moment
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(moment)) + f"-{int(moment * 1000) % 1000:03d}"


def base_name_from_image(image_uri: str) -> str:
    """The image's repository name, fit for a job name.

    >>> base_name_from_image("registry:5000/team/my_prep:1.0")
    'my-prep'
    """
    match = re.match(r"^(.+/)?([^:/]+)(:[^:]+)?$", image_uri)
    base = match.group(2) if match else image_uri
    # Docker allows "_" and "." in repository names; a ProcessingJobName does not.
    return _NOT_IN_NAME.sub("-", base).strip("-") or "job"


def name_from_base(base: str, moment: float | None = None) -> str:
    """``base``, cut to fit, then ``-`` and the timestamp: 63 characters at most.

    >>> name_from_base("prep", 0.25)
    'prep-1970-01-01-00-00-00-250'
    """
    stamp = timestamp(moment)
    return f"{base[: MAX_NAME_LENGTH - len(stamp) - 1]}-{stamp}"


# -- URIs -----------------------------------------------------------------------------------


def is_uri(value: str) -> bool:
    return bool(_SCHEME.match(value))


def folder_uri(path: Path) -> str:
    """``file:///abs/path/``: with the trailing slash the prefix is this folder and nothing beside it."""
    uri = path.as_uri()
    return uri if uri.endswith("/") else uri + "/"


def _local(value: str) -> Path:
    """A local path or file:// URI as an absolute path (not resolved: links are reported, not followed)."""
    if value[:7].lower() == "file://":
        return Path(unquote(urlparse(value).path))
    return Path(os.path.abspath(os.path.expanduser(value)))


def local_path(value: str) -> Path:
    """A local path or file:// URI as an absolute path, ``~`` expanded (links not followed)."""
    return _local(value)


def input_uri(source: PathArg, field: str) -> str:
    """An input's S3Uri: a URI as given; a local folder or file as a file:// URI."""
    text = os.fspath(source)
    if is_uri(text):
        return text
    path = _local(text)
    if path.is_dir():
        return folder_uri(path)
    if path.is_symlink():
        raise problem(field, f"{path} is a symbolic link; distproc stages regular files only: pass {path.resolve()}")
    if not path.is_file():
        raise problem(field, f"no such file or folder: {path}")
    uri = path.as_uri()
    others = [f.source for f in list_prefix(uri) if f.source != str(path)]
    if others:
        # A file:// source is a prefix, as an S3 key is: these would be staged too.
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise problem(field, f"{path} is also the start of {shown}; put the file in a folder of its own")
    return uri


def output_uri(destination: PathArg, field: str) -> str:
    """An output's S3Uri: a URI as given; a local path as a file:// folder URI."""
    text = os.fspath(destination)
    if is_uri(text):
        return text
    path = _local(text)
    if path.exists() and not path.is_dir():
        raise problem(field, f"{path} is a file; an output's destination is a folder")
    return folder_uri(path)


def data_dir(home: Path) -> Path:
    """The job store's stand-in for the SDK's default bucket."""
    return home / "data"


def job_data_dir(home: Path, job: str) -> Path:
    """``data/<job>/``: the job's folder in the stand-in bucket, refused if the name leads elsewhere."""
    return inside(data_dir(home), job, what="job name")


def job_folder(job: str) -> str:
    """The name of the job's folder under ``data/``: the job's name, or a stand-in if parse_job refuses it.

    Such a job never runs, and nothing is copied into or written under the
    stand-in (no job can have it: "_" is not allowed in a ProcessingJobName).
    It spares parse_job's report, which names the job name with every other
    problem, the problems that having no folder would cause (a missing S3Uri).
    """
    return REFUSED_JOB_FOLDER if validate_value("ProcessingJobName", job, "ProcessingJobName") else job


# -- the request's parts ----------------------------------------------------------------------


def without_none(doc: dict[str, Any]) -> dict[str, Any]:
    """A None is "not given": left out, so the spec reports a required field by its name."""
    return {k: v for k, v in doc.items() if v is not None}


def as_list(value: Any) -> Any:
    """A list or tuple as a list; anything else as it is, for the spec to report."""
    return list(value) if isinstance(value, (list, tuple)) else value


def request_form(value: Any, field: str, problems: list[Violation]) -> Any:
    """A dict in the request's shape, or an SDK object (``NetworkConfig``...) turned into one."""
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "_to_request_dict"):
        return value._to_request_dict()
    problems.append(Violation(field, f"must be a dict in the request's shape (got {type(value).__name__})"))
    return None


def tag_list(tags: Any) -> Any:
    """Tags as the request's list of {Key, Value}; a {key: value} dict too, as the SDK takes."""
    if isinstance(tags, Mapping):
        return [{"Key": k, "Value": v} for k, v in tags.items()]
    return [dict(t) if isinstance(t, Mapping) else t for t in tags]


def input_request(index: int, item: object, problems: list[Violation]) -> dict[str, Any]:
    """One ProcessingInputs item, as the SDK's ``ProcessingInput._to_request_dict``."""
    field = f"inputs[{index}]"
    if not isinstance(item, ProcessingInput):
        problems.append(Violation(field, f"must be a ProcessingInput (got {type(item).__name__})"))
        return {}
    name = item.input_name or f"input-{index + 1}"
    problems.extend(Violation(f"{field}.input_name", p) for p in _name_problems(name))
    doc: dict[str, Any] = {"InputName": name, "AppManaged": item.app_managed}
    if item.dataset_definition is not None:
        doc["DatasetDefinition"] = request_form(item.dataset_definition, f"{field}.dataset_definition", problems)
        return doc
    uri = None
    if item.source is not None:
        try:
            uri = input_uri(item.source, f"{field}.source")
        except SpecError as exc:
            problems.extend(exc.violations)
    s3 = {"S3Uri": uri, "LocalPath": item.destination, "S3DataType": item.s3_data_type}
    s3 |= {"S3InputMode": item.s3_input_mode, "S3DataDistributionType": item.s3_data_distribution_type}
    doc["S3Input"] = without_none({**s3, "S3CompressionType": item.s3_compression_type})
    return doc


def output_request(index: int, item: object, home: Path, job: str, problems: list[Violation]) -> dict[str, Any]:
    """One ProcessingOutputConfig.Outputs item; no destination: the job store's data folder."""
    field = f"outputs[{index}]"
    if not isinstance(item, ProcessingOutput):
        problems.append(Violation(field, f"must be a ProcessingOutput (got {type(item).__name__})"))
        return {}
    name = item.output_name or f"output-{index + 1}"
    name_problems = _name_problems(name)
    problems.extend(Violation(f"{field}.output_name", p) for p in name_problems)
    doc: dict[str, Any] = {"OutputName": name, "AppManaged": item.app_managed}
    if item.feature_store_output is not None:
        doc["FeatureStoreOutput"] = request_form(item.feature_store_output, f"{field}.feature_store_output", problems)
        return doc
    uri = None
    try:
        if item.destination is not None:
            uri = output_uri(item.destination, f"{field}.destination")
        elif not name_problems:
            uri = folder_uri(default_output_dir(home, job, name))
    except SpecError as exc:
        problems.extend(exc.violations)
    doc["S3Output"] = without_none({"S3Uri": uri, "LocalPath": item.source, "S3UploadMode": item.s3_upload_mode})
    return doc


def default_output_dir(home: Path, job: str, name: str) -> Path:
    """``data/<job>/output/<output name>/``: where an output with no destination goes."""
    return inside(job_data_dir(home, job) / "output", name, what="output name")


def _name_problems(name: object) -> list[str]:
    # Not a string: left to parse_job, which names the request's field and the type.
    return path_name_problems(name) if isinstance(name, str) else []


# -- a ScriptProcessor's code -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodePlan:
    """Where a ScriptProcessor's code comes from, and the script's path in the container."""

    uri: str
    script: str
    #: A local file or folder copied into ``copy_to`` when the job starts (None: code on S3).
    copy_from: Path | None = None
    copy_to: Path | None = None
    #: The input's name and place (a FrameworkProcessor's script on S3 is its ``entrypoint``).
    input_name: str = CODE_INPUT_NAME
    local_path: str = CODE_LOCAL_PATH

    def input(self) -> dict[str, Any]:
        """The input the code travels as, named and placed as the SDK does."""
        s3 = {"S3Uri": self.uri, "LocalPath": self.local_path, "S3DataType": "S3Prefix", "S3InputMode": "File"}
        s3 |= {"S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"}
        return {"InputName": self.input_name, "AppManaged": False, "S3Input": s3}

    def inputs(self) -> list[dict[str, Any]]:
        return [self.input()]

    def ship(self, home: Path, s3_endpoint_url: str | None = None) -> None:
        ship_code(self, home)


def plan_code(code: PathArg, source_dir: PathArg | None, home: Path, job: str) -> CodePlan:
    """The script alone, or (as FrameworkProcessor) ``source_dir`` with ``code`` a path in it."""
    text = os.fspath(code)
    target = job_data_dir(home, job) / "input" / CODE_INPUT_NAME
    if source_dir is None:
        if is_uri(text) and text[:7].lower() != "file://":
            name = posixpath.basename(urlparse(text).path)
            if not name:
                raise problem("code", f"must name the script, not a folder (got {text!r})")
            # A script on S3 is staged by each host straight from S3, as on SageMaker.
            return CodePlan(uri=text, script=f"{CODE_LOCAL_PATH}/{name}")
        path = _local(text)
        if not path.is_file():
            what = "is a folder: pass the script, and the folder as source_dir" if path.is_dir() else "no such file"
            raise problem("code", f"{path}: {what}")
        return CodePlan(folder_uri(target), f"{CODE_LOCAL_PATH}/{path.name}", path, target)
    folder = _local(os.fspath(source_dir))
    if not folder.is_dir():
        raise problem("source_dir", f"must be a local folder (got {os.fspath(source_dir)!r})")
    script = Path(text) if Path(text).is_absolute() else folder / text
    if not script.is_file():
        script = _local(text)  # a path from here that lies inside source_dir
    if not script.is_file() or not script.is_relative_to(folder):
        raise problem("code", f"{text!r} is not a file in source_dir {folder}")
    return CodePlan(folder_uri(target), f"{CODE_LOCAL_PATH}/{script.relative_to(folder).as_posix()}", folder, target)


def ship_code(plan: CodePlan, home: Path) -> None:
    """Copy the code into the job's data folder: the SDK uploads it to S3 at this point."""
    if plan.copy_from is None or plan.copy_to is None:
        return
    source, target = plan.copy_from, plan.copy_to
    skip = os.path.abspath(data_dir(home))

    def ignore(folder: str, names: list[str]) -> set[str]:
        # A source_dir that holds the job store must not copy the copy into itself.
        return {n for n in names if os.path.abspath(os.path.join(folder, n)) == skip}

    try:
        if target.exists():
            shutil.rmtree(target)  # left by a run that never reached the store
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if source.is_dir():
            # Links are copied as the files they point to, as the SDK's tar does.
            shutil.copytree(source, target, ignore=ignore)
        else:
            target.mkdir(mode=0o700)
            shutil.copy2(source, target / source.name)
    except OSError as exc:
        raise StagingError(f"cannot copy the code {source} to {target}: {exc}") from exc
