"""distproc's rules on top of the SageMaker schema.

Where distproc differs from what the pinned model says, the difference lives
here, in named tables: fields it lets you leave out, fields it needs that the
model leaves optional, SDK defaults, file:// URIs, LocalPath layout, unique
names, and the fields it accepts for portability but warns about. Features it
refuses for now live in ``_unsupported``.
"""

from __future__ import annotations

import copy
import json
import posixpath
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import Violation

LOCAL_PATH_PREFIX = "/opt/ml/processing/"

# A Pipe input's named pipe is its LocalPath with this suffix: epoch 0 in the
# layout AWS documents for training's Pipe mode (/opt/ml/input/data/<channel>_<epoch>);
# docs/contract.md says why and what AWS leaves unsaid for Processing.
PIPE_SUFFIX = "_0"

GZIP_NEEDS_PIPE = "Gzip is only valid with S3InputMode Pipe (File mode supports only None)"


def pipe_path(local_path: str) -> str:
    """The container path of a Pipe input's named pipe: <LocalPath>_0."""
    return posixpath.normpath(local_path) + PIPE_SUFFIX


# InputName and OutputName are plain strings in the model (SageMaker only uses
# them as labels), but distproc makes files and folders of them: uploaded-<name>.json
# on the hosts, data/<job>/output/<name>/ in the job store. One file name on Linux
# is at most 255 bytes; 200 leaves room for what is put around the name.
MAX_CHANNEL_NAME_BYTES = 200

# Machines you own need no IAM role, and bring their own disks.
RELAXED: dict[str, frozenset[str]] = {
    "CreateProcessingJobRequest": frozenset({"RoleArn"}),
    "ProcessingClusterConfig": frozenset({"VolumeSizeInGB"}),
}

# What the SageMaker Python SDK (or, for InstanceCount, the API) fills in when a
# field is left out. A defaulted field is optional even where the model
# requires it, and the normalized request carries the default.
DEFAULTS: dict[str, dict[str, object]] = {
    "ProcessingClusterConfig": {"InstanceCount": 1},
    "ProcessingS3Input": {
        "S3DataType": "S3Prefix",
        "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated",
        "S3CompressionType": "None",
    },
    "ProcessingS3Output": {"S3UploadMode": "EndOfJob"},
    # SageMaker's own limit for a job whose request has no StoppingCondition (one
    # day): DescribeProcessingJob and processingjobconfig.json then show it, and
    # the agents enforce it, so no job runs forever (docs/job-spec.md).
    "CreateProcessingJobRequest": {"StoppingCondition": {"MaxRuntimeInSeconds": 86400}},
}

# Optional in the model only because of features distproc refuses
# (InstancePreferences, DatasetDefinition, FeatureStoreOutput, AppManaged).
EXTRA_REQUIRED: dict[str, tuple[str, ...]] = {
    "ProcessingClusterConfig": ("InstanceType",),
    "ProcessingInput": ("S3Input",),
    "ProcessingOutput": ("S3Output",),
    "ProcessingS3Input": ("LocalPath",),
    "ProcessingS3Output": ("LocalPath",),
}

# Members the model lists but documents as read-only output of DescribeProcessingJob.
READ_ONLY: tuple[tuple[str, ...], ...] = (
    ("ProcessingResources", "ClusterConfig", "SelectedInstanceType"),
    ("ProcessingResources", "ClusterConfig", "SelectedInstanceCount"),
)

# Accepted so that a job stays portable to SageMaker, but meaningless on hosts
# you own: each one present earns a warning, never silence.
WARNED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("NetworkConfig", "VpcConfig"), "containers use the hosts' own network"),
    (("ProcessingOutputConfig", "KmsKeyId"), "distproc does not encrypt outputs with KMS"),
    (
        ("ProcessingResources", "ClusterConfig", "VolumeKmsKeyId"),
        "distproc does not encrypt host volumes with KMS",
    ),
)

_PATTERN_RULES = {
    "ProcessingJobName": "must be letters, digits and hyphens, starting and ending with a letter or digit",
    "ExperimentEntityName": "must be letters, digits and hyphens, starting and ending with a letter or digit",
    "ProcessingEnvironmentKey": "must be letters, digits and underscores, not starting with a digit",
    "S3Uri": "must be a file://, s3:// or https:// URI",
    "TagKey": "must be letters, digits, spaces and _ . : / = + - @",
    "TagValue": "must be letters, digits, spaces and _ . : / = + - @",
}


def required_members(structure: str, schema_required: list[str]) -> list[str]:
    """Members of ``structure`` that distproc requires."""
    dropped = RELAXED.get(structure, frozenset()) | DEFAULTS.get(structure, {}).keys()
    extra = [m for m in EXTRA_REQUIRED.get(structure, ()) if m not in schema_required]
    return [m for m in schema_required if m not in dropped] + extra


def skips_pattern(shape: str, value: str) -> bool:
    """Whether the model's pattern gives way to a distproc rule for this value."""
    # file:// is distproc's extension of S3Uri; file_uri_problem checks it instead.
    return shape == "S3Uri" and value[:5].lower() == "file:"


def pattern_rule(shape: str, pattern: str) -> str:
    """How to say that a value does not match a shape's pattern."""
    return _PATTERN_RULES.get(shape, f"must match the pattern {pattern}")


def file_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not an acceptable file:// URI, or None if it is."""
    how = "write file:///absolute/path"
    if uri[:7].lower() != "file://":
        return f"a file URI must start with file:// ({how})"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"is not a valid URI ({how})"
    if parts.netloc.lower() not in ("", "localhost"):
        return f"file URI host must be empty or localhost, got {parts.netloc!r} ({how})"
    if parts.query or parts.fragment:
        return "file URI must not have a query or fragment (escape ? and # as %3F and %23)"
    path = unquote(parts.path)
    if not path.startswith("/") or path == "/":
        return f"file URI must name an absolute path other than / ({how})"
    if "\x00" in path:
        return "file URI must not contain a NUL character"
    return None


def path_name_problems(name: str) -> list[str]:
    """Why ``name`` cannot be one file or folder name; empty if it can.

    "a..b" is fine: only "." and ".." as the whole name lead elsewhere.

    >>> path_name_problems("../x")
    ['must not contain "/" (got "../x")']
    """
    if not name:
        return ["must not be empty"]
    problems = []
    if name in (".", ".."):
        problems.append(f'must not be "." or ".." (got "{name}")')
    if "/" in name:
        problems.append(f'must not contain "/" (got {show(name)})')
    for category, rule in (("Cc", "must not contain control characters"), ("Cs", "must be valid Unicode text")):
        # Cc: NUL, newline, tab, escape...; Cs: a lone surrogate (JSON allows "\ud800"), which has no UTF-8.
        bad = next((i for i, c in enumerate(name) if unicodedata.category(c) == category), None)
        if bad is not None:
            problems.append(f"{rule} (U+{ord(name[bad]):04X} at position {bad})")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_CHANNEL_NAME_BYTES:
        problems.append(f"must be at most {MAX_CHANNEL_NAME_BYTES} bytes in UTF-8 (got {size})")
    return problems


def show(value: str, limit: int = 60) -> str:
    """A string quoted for a message, cut short if long."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return json.dumps(shown, ensure_ascii=False)


def _get(doc: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _has(doc: object, *keys: str) -> bool:
    *parents, last = keys
    parent = _get(doc, *parents) if parents else doc
    return isinstance(parent, dict) and last in parent


def channels(doc: object) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Each input and output that is an object: (kind, path, object).

    kind is "input" or "output"; path is e.g. ``ProcessingInputs[1]``.
    """
    for kind, keys, prefix in (
        ("input", ("ProcessingInputs",), "ProcessingInputs"),
        ("output", ("ProcessingOutputConfig", "Outputs"), "ProcessingOutputConfig.Outputs"),
    ):
        items = _get(doc, *keys)
        if isinstance(items, list):
            for index, item in enumerate(items):
                if isinstance(item, dict):
                    yield kind, f"{prefix}[{index}]", item


_STORAGE = {"input": "S3Input", "output": "S3Output"}
_NAME = {"input": "InputName", "output": "OutputName"}


def check(doc: dict[Any, Any]) -> list[Violation]:
    """Violations of distproc's own rules; safe on any malformed document."""
    out: list[Violation] = []
    for keys in READ_ONLY:
        if _has(doc, *keys):
            rule = "is read-only (returned by DescribeProcessingJob) and not accepted in a request"
            out.append(Violation(".".join(keys), rule))
    seen_names: dict[tuple[str, str], str] = {}
    local_paths: list[tuple[str, str]] = []
    pipes: list[tuple[str, str]] = []
    for kind, path, channel in channels(doc):
        name = channel.get(_NAME[kind])
        if isinstance(name, str):
            name_path = f"{path}.{_NAME[kind]}"
            out.extend(Violation(name_path, p) for p in path_name_problems(name))
            first = seen_names.setdefault((kind, name), name_path)
            if first != name_path:
                out.append(Violation(name_path, f"must be unique among {kind}s ({first} has it)"))
        storage = channel.get(_STORAGE[kind])
        storage_path = f"{path}.{_STORAGE[kind]}"
        uri = _get(storage, "S3Uri")
        if isinstance(uri, str) and skips_pattern("S3Uri", uri):
            problem = file_uri_problem(uri)
            if problem:
                out.append(Violation(f"{storage_path}.S3Uri", problem))
        local = _get(storage, "LocalPath")
        pipe = kind == "input" and _get(storage, "S3InputMode") == "Pipe"
        if kind == "input" and _get(storage, "S3CompressionType") == "Gzip" and not pipe:
            # SageMaker refuses the same pair (CreateTrainingJob: "File mode only supports NONE, got Gzip").
            out.append(Violation(f"{storage_path}.S3CompressionType", GZIP_NEEDS_PIPE))
        if isinstance(local, str):
            local_path = f"{storage_path}.LocalPath"
            problems = _local_path_problems(local)
            out.extend(Violation(local_path, p) for p in problems)
            if not problems:
                local_paths.append((local_path, posixpath.normpath(local)))
                if pipe:
                    # The named pipe is a path of its own, next to LocalPath: no other channel may use it.
                    pipes.append((local_path, pipe_path(local)))
    out.extend(_overlaps(local_paths))
    out.extend(_pipe_clashes(pipes, local_paths))
    return out


def _pipe_clashes(pipes: list[tuple[str, str]], local_paths: list[tuple[str, str]]) -> list[Violation]:
    """A Pipe input's <LocalPath>_0 must not be, hold or lie in another channel's folder."""
    out = []
    for path, fifo in pipes:
        for other_path, other in local_paths:
            if fifo == other or fifo.startswith(other.rstrip("/") + "/") or other.startswith(fifo + "/"):
                out.append(Violation(path, f"its named pipe {fifo} (Pipe mode) clashes with {other_path} ({other})"))
    return out


def _local_path_problems(local: str) -> list[str]:
    problems = []
    if not local.startswith(LOCAL_PATH_PREFIX):
        problems.append(f"must begin with {LOCAL_PATH_PREFIX}")
    if ".." in local.split("/"):
        problems.append('must not contain ".." segments')
    return problems


def _overlaps(local_paths: list[tuple[str, str]]) -> list[Violation]:
    """Channels may not share a folder, and an output may not nest with anything.

    Inputs may nest: the SageMaker SDK's ScriptProcessor puts its code at
    /opt/ml/processing/input/code while the classic examples put their data at
    /opt/ml/processing/input. An output nesting with another channel would
    upload that channel's data (or have it staged into the output).
    """
    out = []
    for index, (path, folder) in enumerate(local_paths):
        for other_path, other in local_paths[:index]:
            both_inputs = path.startswith("ProcessingInputs") and other_path.startswith("ProcessingInputs")
            if folder == other:
                out.append(Violation(path, f"is the same folder as {other_path}"))
            elif both_inputs:
                continue
            elif folder.startswith(other.rstrip("/") + "/"):
                out.append(Violation(path, f"is inside the folder of {other_path}"))
            elif other.startswith(folder.rstrip("/") + "/"):
                out.append(Violation(path, f"contains the folder of {other_path}"))
    return out


def warnings_for(request: dict[str, Any]) -> tuple[str, ...]:
    """Warnings for accepted fields that have no effect on distproc."""
    return tuple(
        f"{'.'.join(keys)} is accepted for portability but has no effect: {why}"
        for keys, why in WARNED
        if _has(request, *keys)
    )


def with_defaults(request: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a valid request with every SDK default filled in."""
    filled = copy.deepcopy(request)
    for member, value in DEFAULTS["CreateProcessingJobRequest"].items():
        filled.setdefault(member, copy.deepcopy(value))
    cluster = filled["ProcessingResources"]["ClusterConfig"]
    for member, value in DEFAULTS["ProcessingClusterConfig"].items():
        cluster.setdefault(member, value)
    for kind, _path, channel in channels(filled):
        shape = "ProcessingS3Input" if kind == "input" else "ProcessingS3Output"
        for member, value in DEFAULTS[shape].items():
            channel[_STORAGE[kind]].setdefault(member, value)
    return filled
