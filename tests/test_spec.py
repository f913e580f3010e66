"""The job spec: schema validation, distproc's rules, the parsed model, and file loading."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distproc.errors import SpecError, Violation
from distproc.spec import (
    ProcessingInput,
    ProcessingJob,
    _pattern,
    _rules,
    _schema,
    job_arn,
    load_job,
    parse_job,
    processing_job_config,
    validate,
    validate_request,
)

REPO = Path(__file__).resolve().parents[1]


def full_request() -> dict[str, Any]:
    return {
        "ProcessingJobName": "Feature-Prep-7",
        "ProcessingInputs": [
            {
                "InputName": "train",
                "AppManaged": False,
                "S3Input": {
                    "S3Uri": "file:///srv/data/train",
                    "LocalPath": "/opt/ml/processing/input/train",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "ShardedByS3Key",
                    "S3CompressionType": "None",
                },
            },
            {
                "InputName": "code",
                "S3Input": {
                    "S3Uri": "file://localhost/srv/code",
                    "LocalPath": "/opt/ml/processing/input/code",
                },
            },
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "features",
                    "S3Output": {
                        "S3Uri": "file:///srv/out/features",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 3,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 30,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "AppSpecification": {
            "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/prep:1",
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/prep.py"],
            "ContainerArguments": ["--mode", "fast"],
        },
        "Environment": {"ZETA": "last-first", "MODE": "fast", "ALPHA": ""},
        "NetworkConfig": {"EnableNetworkIsolation": False},
        "RoleArn": "arn:aws:iam::123456789012:role/service-role/Prep",
        "ExperimentConfig": {"ExperimentName": "exp-1"},
        "Tags": [{"Key": "team", "Value": "data"}],
    }


def minimal_request() -> dict[str, Any]:
    return {
        "ProcessingJobName": "min",
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.t3.medium"}},
        "AppSpecification": {"ImageUri": "busybox"},
    }


def errors_of(doc: object) -> dict[str, list[str]]:
    """Violations of doc as {path: [rules]}; fails if parse_job disagrees."""
    with pytest.raises(SpecError) as info:
        parse_job(doc)
    found: dict[str, list[str]] = {}
    for violation in info.value.violations:
        found.setdefault(violation.path, []).append(violation.rule)
    return found


def single_error(doc: object, path: str) -> str:
    """The one rule broken at path (and nowhere else)."""
    found = errors_of(doc)
    assert list(found) == [path], found
    assert len(found[path]) == 1, found
    return found[path][0]


# --- a valid request ------------------------------------------------------


def test_full_request_round_trips() -> None:
    """A full valid request parses into the typed job, and its normalized form parses to the same job."""
    job = parse_job(full_request())
    assert job.name == "Feature-Prep-7"
    assert job.cluster.instance_count == 3
    assert job.cluster.instance_type == "ml.m5.xlarge"
    assert job.cluster.volume_size_gb == 30
    assert job.inputs[0] == ProcessingInput(
        name="train",
        local_path="/opt/ml/processing/input/train",
        uri="file:///srv/data/train",
        distribution="ShardedByS3Key",
    )
    assert job.outputs[0].upload_mode == "EndOfJob"
    assert job.app.entrypoint == ("python3", "/opt/ml/processing/input/code/prep.py")
    assert job.app.arguments == ("--mode", "fast")
    assert job.max_runtime_seconds == 3600
    assert job.role_arn == "arn:aws:iam::123456789012:role/service-role/Prep"
    assert job.tags == (("team", "data"),)
    assert job.warnings == ()
    assert parse_job(job.request_dict()) == job


def test_minimal_request_defaults() -> None:
    """Optional sections stay None/empty and InstanceCount defaults to 1."""
    job = parse_job(minimal_request())
    assert job.inputs == () and job.outputs == ()
    assert job.cluster.instance_count == 1
    assert job.cluster.volume_size_gb is None
    assert job.app.entrypoint is None and job.app.arguments is None
    assert job.environment == () and job.role_arn is None
    assert job.request_dict()["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1


def test_sdk_defaults_filled() -> None:
    """Absent S3DataType, S3InputMode, distribution, compression and upload mode get the SDK defaults."""
    doc = minimal_request()
    doc["ProcessingInputs"] = [
        {"InputName": "a", "S3Input": {"S3Uri": "file:///a", "LocalPath": "/opt/ml/processing/a"}}
    ]
    doc["ProcessingOutputConfig"] = {
        "Outputs": [{"OutputName": "b", "S3Output": {"S3Uri": "file:///b", "LocalPath": "/opt/ml/processing/b"}}]
    }
    job = parse_job(doc)
    i = job.inputs[0]
    assert (i.data_type, i.input_mode, i.distribution, i.compression) == (
        "S3Prefix",
        "File",
        "FullyReplicated",
        "None",
    )
    assert job.outputs[0].upload_mode == "EndOfJob"
    request = job.request_dict()
    assert request["ProcessingInputs"][0]["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    assert request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3UploadMode"] == "EndOfJob"
    assert "S3DataType" not in doc["ProcessingInputs"][0]["S3Input"]  # caller's dict untouched


def test_schema_marks_relaxed_fields_required() -> None:
    """distproc's relaxed, extra-required and defaulted members match what the pinned schema says."""
    assert "RoleArn" in _schema.shape("CreateProcessingJobRequest")["required"]
    assert "VolumeSizeInGB" in _schema.shape("ProcessingClusterConfig")["required"]
    assert _schema.botocore_version() == "1.44.5"
    for structure, members in _rules.RELAXED.items():
        assert members <= set(_schema.shape(structure)["required"])
    for structure, extra in _rules.EXTRA_REQUIRED.items():
        shape = _schema.shape(structure)
        assert set(extra) <= set(shape["members"]) - set(shape["required"])
    for structure, defaults in _rules.DEFAULTS.items():
        assert set(defaults) <= set(_schema.shape(structure)["members"])


def test_role_arn_and_volume_size_may_be_omitted_but_are_checked_when_present() -> None:
    """RoleArn and VolumeSizeInGB are optional in distproc, yet validated when given."""
    parse_job(minimal_request())
    doc = minimal_request()
    doc["RoleArn"] = "not-an-arn-but-long-enough"
    doc["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"] = 0
    found = errors_of(doc)
    assert found["RoleArn"][0].startswith("must match the pattern arn:aws")
    assert found["ProcessingResources.ClusterConfig.VolumeSizeInGB"] == ["must be at least 1 (got 0)"]


def test_environment_keeps_insertion_order() -> None:
    """Environment keeps the request's order in the tuple, the dict helper and the request."""
    job = parse_job(full_request())
    assert [k for k, _ in job.environment] == ["ZETA", "MODE", "ALPHA"]
    assert list(job.environment_dict()) == ["ZETA", "MODE", "ALPHA"]
    assert list(job.request_dict()["Environment"]) == ["ZETA", "MODE", "ALPHA"]


def test_request_dict_is_a_fresh_copy() -> None:
    """Changing the dict request_dict returns does not change the job."""
    job = parse_job(full_request())
    request = job.request_dict()
    request["Environment"]["MODE"] = "slow"
    request["ProcessingInputs"].clear()
    assert job.request_dict()["Environment"]["MODE"] == "fast"
    assert len(job.request_dict()["ProcessingInputs"]) == 2


def test_job_is_frozen_and_hashable() -> None:
    """The parsed job cannot be modified and can be used as a dict key."""
    job = parse_job(full_request())
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.inputs[0].uri = "file:///x"  # type: ignore[misc]
    assert {job: 1}[parse_job(full_request())] == 1


# --- schema rules ---------------------------------------------------------


def test_not_an_object() -> None:
    """A document that is not a JSON object is one violation on the document."""
    assert errors_of([1, 2]) == {"(document)": ["must be an object (got list)"]}
    assert errors_of(None) == {"(document)": ["must be an object (got null)"]}


def test_required_field_missing() -> None:
    """A missing schema-required member is reported at its path."""
    doc = minimal_request()
    del doc["AppSpecification"]["ImageUri"]
    assert single_error(doc, "AppSpecification.ImageUri") == "required field is missing"
    assert errors_of({})["ProcessingJobName"] == ["required field is missing"]


def test_distproc_required_fields() -> None:
    """InstanceType, S3Input/S3Output and their LocalPath are required by distproc."""
    doc = full_request()
    del doc["ProcessingResources"]["ClusterConfig"]["InstanceType"]
    del doc["ProcessingInputs"][0]["S3Input"]["LocalPath"]
    del doc["ProcessingInputs"][1]["S3Input"]
    del doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"]
    assert errors_of(doc) == {
        "ProcessingResources.ClusterConfig.InstanceType": ["required field is missing"],
        "ProcessingInputs[0].S3Input.LocalPath": ["required field is missing"],
        "ProcessingInputs[1].S3Input": ["required field is missing"],
        "ProcessingOutputConfig.Outputs[0].S3Output.LocalPath": ["required field is missing"],
    }


def test_unknown_field_with_suggestion() -> None:
    """Unknown keys are refused, with a close match suggested when there is one."""
    doc = minimal_request()
    doc["ProcessingJobNmae"] = "x"
    doc["AppSpecification"]["containerentrypoint"] = ["sh"]
    doc["Zzzz"] = 1
    found = errors_of(doc)
    assert found["ProcessingJobNmae"] == ["unknown field (did you mean ProcessingJobName?)"]
    assert found["AppSpecification.containerentrypoint"] == ["unknown field (did you mean ContainerEntrypoint?)"]
    assert found["Zzzz"] == ["unknown field"]


def test_odd_unknown_keys_are_quoted_in_paths() -> None:
    """Unknown keys that are not identifiers appear quoted, so the path stays unambiguous."""
    doc = minimal_request()
    doc[""] = 1
    doc["AppSpecification"]["a.b"] = 2
    assert errors_of(doc) == {
        '[""]': ["unknown field"],
        'AppSpecification["a.b"]': ["unknown field"],
    }


def test_type_errors() -> None:
    """Each JSON type mismatch names the expected and the actual type."""
    doc = minimal_request()
    doc["ProcessingJobName"] = 7
    doc["ProcessingInputs"] = {"InputName": "a"}
    doc["AppSpecification"] = ["busybox"]
    doc["StoppingCondition"] = {"MaxRuntimeInSeconds": "60"}
    doc["Environment"] = {"A": None}
    doc["NetworkConfig"] = {"EnableNetworkIsolation": "false"}
    assert errors_of(doc) == {
        "ProcessingJobName": ["must be a string (got integer)"],
        "ProcessingInputs": ["must be a list (got object)"],
        "AppSpecification": ["must be an object (got list)"],
        "StoppingCondition.MaxRuntimeInSeconds": ["must be an integer (got string)"],
        'Environment["A"]': ["must be a string (got null)"],
        "NetworkConfig.EnableNetworkIsolation": ["must be true or false (got string)"],
    }


def test_bool_is_not_an_integer() -> None:
    """true is not accepted as an integer, nor 1 as a boolean, nor 2.0 as an integer."""
    doc = minimal_request()
    doc["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = True
    doc["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"] = 2.0
    doc["NetworkConfig"] = {"EnableNetworkIsolation": 0}
    assert errors_of(doc) == {
        "ProcessingResources.ClusterConfig.InstanceCount": ["must be an integer (got boolean)"],
        "ProcessingResources.ClusterConfig.VolumeSizeInGB": ["must be an integer (got number)"],
        "NetworkConfig.EnableNetworkIsolation": ["must be true or false (got integer)"],
    }


def test_string_lengths() -> None:
    """Strings shorter than min or longer than max are refused with the counts."""
    doc = minimal_request()
    doc["AppSpecification"]["ImageUri"] = "x" * 256
    doc["AppSpecification"]["ContainerArguments"] = ["a" * 300]
    found = errors_of(doc)
    assert found["AppSpecification.ImageUri"] == ["must be at most 255 characters (got 256)"]
    assert found["AppSpecification.ContainerArguments[0]"] == ["must be at most 256 characters (got 300)"]
    doc = minimal_request()
    doc["ProcessingJobName"] = ""
    assert errors_of(doc)["ProcessingJobName"][0] == "must be at least 1 character (got 0)"


def test_integer_ranges() -> None:
    """Integers outside the model's min and max are refused."""
    doc = minimal_request()
    doc["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = 101
    doc["StoppingCondition"] = {"MaxRuntimeInSeconds": 0}
    assert errors_of(doc) == {
        "ProcessingResources.ClusterConfig.InstanceCount": ["must be at most 100 (got 101)"],
        "StoppingCondition.MaxRuntimeInSeconds": ["must be at least 1 (got 0)"],
    }
    doc["StoppingCondition"] = {"MaxRuntimeInSeconds": 10**5000}
    assert "too long to show" in errors_of(doc)["StoppingCondition.MaxRuntimeInSeconds"][0]


def test_enums() -> None:
    """Enum values are checked; short enums are listed, long ones get a suggestion."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3InputMode"] = "Stream"
    doc["ProcessingResources"]["ClusterConfig"]["InstanceType"] = "ml.m5.xlarg"
    found = errors_of(doc)
    assert found["ProcessingInputs[0].S3Input.S3InputMode"] == ['must be one of File, Pipe (got "Stream")']
    assert found["ProcessingResources.ClusterConfig.InstanceType"] == [
        'must be a known ProcessingInstanceType (got "ml.m5.xlarg"; did you mean ml.m5.xlarge?)'
    ]


def test_patterns_are_anchored() -> None:
    """Patterns must match the whole value, not just a part of it."""
    pattern = _schema.shape("ProcessingJobName")["pattern"]
    assert re.search(pattern, "ok-name!")  # the unanchored reading would accept it
    doc = minimal_request()
    doc["ProcessingJobName"] = "ok-name!"
    rule = single_error(doc, "ProcessingJobName")
    assert rule.startswith("must be letters, digits and hyphens")
    assert rule.endswith('(got "ok-name!")')
    for bad in ("-lead", "trail-", "a_b"):
        doc["ProcessingJobName"] = bad
        assert list(errors_of(doc)) == ["ProcessingJobName"]
    doc = minimal_request()
    doc["Environment"] = {"OK": "x", "1ABC": "x"}
    rule = single_error(doc, 'Environment["1ABC"]')
    assert rule.startswith("key must be letters, digits and underscores")


def test_list_sizes() -> None:
    """Lists above max (11 inputs) or below min (no arguments) are refused."""
    doc = minimal_request()
    doc["ProcessingInputs"] = [
        {
            "InputName": f"in{i}",
            "S3Input": {"S3Uri": f"file:///d/{i}", "LocalPath": f"/opt/ml/processing/in{i}"},
        }
        for i in range(11)
    ]
    doc["AppSpecification"]["ContainerArguments"] = []
    assert errors_of(doc) == {
        "ProcessingInputs": ["must have at most 10 items (got 11)"],
        "AppSpecification.ContainerArguments": ["must have at least 1 item (got 0)"],
    }
    doc["ProcessingInputs"].pop()
    doc["AppSpecification"]["ContainerArguments"] = ["x"]
    assert len(parse_job(doc).inputs) == 10


def test_map_size_and_entries() -> None:
    """Environment over 100 entries is refused; keys and values are checked at Environment["KEY"]."""
    doc = minimal_request()
    doc["Environment"] = {f"K{i}": "v" for i in range(101)}
    assert errors_of(doc) == {"Environment": ["must have at most 100 entries (got 101)"]}
    doc["Environment"] = {"MY KEY": "v" * 300}
    assert errors_of(doc) == {
        'Environment["MY KEY"]': [
            'key must be letters, digits and underscores, not starting with a digit (got "MY KEY")',
            "must be at most 256 characters (got 300)",
        ]
    }
    doc["Environment"] = {f"K{i}": "multi\nline" for i in range(100)}
    assert len(parse_job(doc).environment) == 100


def test_tag_unicode_class_patterns() -> None:
    """Tag patterns written with \\p{L}-style classes work: Unicode letters pass, a tab does not."""
    doc = minimal_request()
    doc["Tags"] = [{"Key": "équipe données", "Value": "日本 123 _.:/=+-@"}]
    assert parse_job(doc).tags == (("équipe données", "日本 123 _.:/=+-@"),)
    doc["Tags"] = [{"Key": "a\tb", "Value": "x!"}]
    found = errors_of(doc)
    assert found["Tags[0].Key"][0].startswith("must be letters, digits, spaces")
    assert list(found) == ["Tags[0].Key", "Tags[0].Value"]


def test_every_schema_pattern_compiles() -> None:
    """No pattern of the pinned schema is skipped: each one translates to Python re."""
    patterns = {s["pattern"] for s in _schema._document()["shapes"].values() if "pattern" in s}
    assert any("\\p{" in p for p in patterns)
    assert all(_pattern.compile_pattern(p) is not None for p in patterns)


def test_untranslatable_pattern_is_skipped_not_fatal() -> None:
    """A pattern re cannot use is skipped (value accepted) instead of crashing validation."""
    assert _pattern.compile_pattern(r"\p{IsNoSuchClass}+") is None
    assert _pattern.compile_pattern("[a-") is None
    assert _pattern.compile_pattern(r"\p") is None
    out: list[Violation] = []
    shape = {"type": "string", "pattern": r"\p{NoSuchClass}"}
    validate._string("Fake", shape, "anything", "Fake", out)
    assert out == []


def test_java_pattern_translation() -> None:
    """Java's dot stops at \\r, surrogate-pair ranges cover astral code points, \\P negates, \\d is ASCII."""
    dot = _pattern.compile_pattern(".*")
    assert dot is not None and dot.fullmatch("a b") and not dot.fullmatch("a\rb")
    catalog = _pattern.compile_pattern(_schema.shape("AthenaCatalog")["pattern"])
    assert catalog is not None and catalog.fullmatch("a\U0001f600b")
    assert not catalog.fullmatch("a\x01")
    negated = _pattern.compile_pattern(r"\P{L}+[\P{N}]")
    assert negated is not None and negated.fullmatch("12x") and not negated.fullmatch("a1x")
    digits = _pattern.compile_pattern(r"\d+")
    assert digits is not None and not digits.fullmatch("١٢")


def test_many_violations_reported_at_once() -> None:
    """One SpecError lists every problem in the document, each on its own line."""
    doc = full_request()
    doc["ProcessingJobName"] = "bad name"
    doc["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/data"
    doc["ProcessingInputs"][1]["S3Input"]["S3Uri"] = "gs://bucket/code"
    doc["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = 0
    doc["AppSpecification"]["ContainerArguments"] = []
    doc["Environment"]["bad key"] = "v"
    doc["NetworkConfig"]["EnableNetworkIsolation"] = True
    doc["Extra"] = {}
    with pytest.raises(SpecError) as info:
        parse_job(doc)
    paths = {v.path for v in info.value.violations}
    assert paths == {
        "ProcessingJobName",
        "ProcessingInputs[0].S3Input.LocalPath",
        "ProcessingInputs[1].S3Input.S3Uri",
        "ProcessingResources.ClusterConfig.InstanceCount",
        "AppSpecification.ContainerArguments",
        'Environment["bad key"]',
        "NetworkConfig.EnableNetworkIsolation",
        "Extra",
    }
    message = str(info.value)
    assert message.startswith("invalid job (8 problem(s)):")
    assert "  - Extra: unknown field" in message


# --- distproc's own rules -------------------------------------------------


def test_local_path_prefix_and_dotdot() -> None:
    """LocalPath must start with /opt/ml/processing/ and have no .. segment."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/opt/ml/processing"
    doc["ProcessingInputs"][1]["S3Input"]["LocalPath"] = "/opt/ml/processing/../model"
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/opt/ml/processing/a..b"
    assert errors_of(doc) == {
        "ProcessingInputs[0].S3Input.LocalPath": ["must begin with /opt/ml/processing/"],
        "ProcessingInputs[1].S3Input.LocalPath": ['must not contain ".." segments'],
    }


def test_local_paths_must_not_share_or_nest() -> None:
    """Two channels may not share a folder (trailing slash or not); an output may not nest with any channel."""
    doc = full_request()
    doc["ProcessingInputs"][1]["S3Input"]["LocalPath"] = "/opt/ml/processing/input/train/"
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/opt/ml/processing/input"
    assert errors_of(doc) == {
        "ProcessingInputs[1].S3Input.LocalPath": ["is the same folder as ProcessingInputs[0].S3Input.LocalPath"],
        "ProcessingOutputConfig.Outputs[0].S3Output.LocalPath": [
            "contains the folder of ProcessingInputs[0].S3Input.LocalPath",
            "contains the folder of ProcessingInputs[1].S3Input.LocalPath",
        ],
    }
    doc = full_request()
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/opt/ml/processing/input/code/out"
    assert single_error(doc, "ProcessingOutputConfig.Outputs[0].S3Output.LocalPath") == (
        "is inside the folder of ProcessingInputs[1].S3Input.LocalPath"
    )
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/opt/ml/processing/input/codex"
    parse_job(doc)


def test_inputs_may_nest_as_the_sdks_script_processor_does() -> None:
    """Data at /opt/ml/processing/input and code at /opt/ml/processing/input/code: the SDK's classic layout."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/opt/ml/processing/input"
    doc["ProcessingInputs"][1]["S3Input"]["LocalPath"] = "/opt/ml/processing/input/code"
    job = parse_job(doc)
    assert [i.local_path for i in job.inputs] == ["/opt/ml/processing/input", "/opt/ml/processing/input/code"]


def test_channel_names_unique() -> None:
    """InputName is unique among inputs and OutputName among outputs; an input may share an output's name."""
    doc = full_request()
    doc["ProcessingInputs"][1]["InputName"] = "train"
    doc["ProcessingOutputConfig"]["Outputs"].append(
        {
            "OutputName": "features",
            "S3Output": {"S3Uri": "file:///o2", "LocalPath": "/opt/ml/processing/o2"},
        }
    )
    assert errors_of(doc) == {
        "ProcessingInputs[1].InputName": ["must be unique among inputs (ProcessingInputs[0].InputName has it)"],
        "ProcessingOutputConfig.Outputs[1].OutputName": [
            "must be unique among outputs (ProcessingOutputConfig.Outputs[0].OutputName has it)"
        ],
    }
    doc = full_request()
    doc["ProcessingOutputConfig"]["Outputs"][0]["OutputName"] = "train"
    parse_job(doc)


@pytest.mark.parametrize(
    "uri",
    ["file:///srv/data", "file://localhost/srv/data", "FILE:///srv/x", "file:///srv/my%20data"],
)
def test_file_uris_accepted(uri: str) -> None:
    """Absolute file:// URIs with an empty or localhost host are a distproc extension of S3Uri."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3Uri"] = uri
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = uri
    assert parse_job(doc).inputs[0].uri == uri


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("file://server/srv/data", "host must be empty or localhost"),
        ("file:relative/path", "must start with file://"),
        ("file:/srv/data", "must start with file://"),
        ("file://", "absolute path other than /"),
        ("file:///", "absolute path other than /"),
        ("file:///srv/data?x=1", "query or fragment"),
        ("file:///srv/%00x", "NUL"),
        ("file://[oops/x", "not a valid URI"),
    ],
)
def test_bad_file_uris_refused(uri: str, fragment: str) -> None:
    """Malformed file URIs are refused at the S3Uri path with the reason."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3Uri"] = uri
    assert fragment in single_error(doc, "ProcessingInputs[0].S3Input.S3Uri")


def test_other_schemes_refused_by_pattern() -> None:
    """A URI that is neither file://, s3:// nor https:// breaks the S3Uri rule."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3Uri"] = "gs://bucket/x"
    rule = single_error(doc, "ProcessingInputs[0].S3Input.S3Uri")
    assert rule == 'must be a file://, s3:// or https:// URI (got "gs://bucket/x")'


@pytest.mark.parametrize("uri", ["s3://bucket/prefix", "https://bucket.s3.amazonaws.com/k"])
def test_s3_uris_and_manifests_are_accepted(uri: str) -> None:
    """s3:// and https:// URIs, ManifestFile and Continuous upload to S3 are valid."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3Uri"] = uri
    doc["ProcessingInputs"][0]["S3Input"]["S3DataType"] = "ManifestFile"
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = uri
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3UploadMode"] = "Continuous"
    job = parse_job(doc)
    assert job.inputs[0].uri == uri and job.inputs[0].data_type == "ManifestFile"
    assert job.outputs[0].uri == uri and job.outputs[0].upload_mode == "Continuous"


def test_continuous_upload_to_a_file_uri_is_refused() -> None:
    """Continuous upload is the host's work, so it needs an S3 destination."""
    doc = full_request()
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = "file:///srv/out/"
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3UploadMode"] = "Continuous"
    path = "ProcessingOutputConfig.Outputs[0].S3Output.S3UploadMode"
    rule = "Continuous upload needs an s3:// or https:// S3Uri; use EndOfJob with a file:// URI"
    assert errors_of(doc) == {path: [rule]}


def test_pipe_mode_and_gzip_are_accepted_and_parsed() -> None:
    """Pipe input mode, with and without Gzip: valid SageMaker documents, run as SageMaker runs them."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3InputMode"] = "Pipe"
    doc["ProcessingInputs"][0]["S3Input"]["S3CompressionType"] = "Gzip"
    job = parse_job(doc)
    assert (job.inputs[0].input_mode, job.inputs[0].compression) == ("Pipe", "Gzip")


def test_gzip_with_file_mode_is_refused_naming_the_field() -> None:
    """Gzip is decompressed as it streams, so it needs Pipe; SageMaker refuses the pair too."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3CompressionType"] = "Gzip"
    path = "ProcessingInputs[0].S3Input.S3CompressionType"
    assert errors_of(doc) == {path: ["Gzip is only valid with S3InputMode Pipe (File mode supports only None)"]}


def test_a_pipe_input_whose_named_pipe_is_another_channels_folder_is_refused() -> None:
    """The named pipe is <LocalPath>_0: a channel at that path (or under it) would collide with it."""
    doc = full_request()
    doc["ProcessingInputs"][0]["S3Input"]["S3InputMode"] = "Pipe"
    doc["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/opt/ml/processing/input/train/"
    doc["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/opt/ml/processing/input/train_0/x"
    assert errors_of(doc) == {
        "ProcessingInputs[0].S3Input.LocalPath": [
            "its named pipe /opt/ml/processing/input/train_0 (Pipe mode) clashes with "
            "ProcessingOutputConfig.Outputs[0].S3Output.LocalPath (/opt/ml/processing/input/train_0/x)"
        ]
    }


IN0 = ("ProcessingInputs", 0)
OUT0 = ("ProcessingOutputConfig", "Outputs", 0)
DATASET = {
    "AthenaDatasetDefinition": {
        "Catalog": "c",
        "Database": "d",
        "QueryString": "select 1",
        "OutputS3Uri": "s3://b/k",
        "OutputFormat": "PARQUET",
    }
}


@pytest.mark.parametrize(
    ("where", "key", "value", "path", "fragment"),
    [
        (IN0, ("DatasetDefinition",), DATASET, "DatasetDefinition", "Athena or Redshift"),
        (IN0, ("AppManaged",), True, "AppManaged", "AppManaged inputs"),
        (OUT0, ("AppManaged",), True, "AppManaged", "AppManaged outputs"),
        (
            OUT0,
            ("FeatureStoreOutput",),
            {"FeatureGroupName": "fg"},
            "FeatureStoreOutput",
            "FeatureStoreOutput is not supported",
        ),
        (
            ("NetworkConfig",),
            ("EnableNetworkIsolation",),
            True,
            "EnableNetworkIsolation",
            "network isolation",
        ),
        (
            ("NetworkConfig",),
            ("EnableInterContainerTrafficEncryption",),
            True,
            "EnableInterContainerTrafficEncryption",
            "traffic encryption",
        ),
        (
            ("ProcessingResources", "ClusterConfig"),
            ("InstancePreferences",),
            [{"InstanceType": "ml.m5.large"}],
            "InstancePreferences",
            "use InstanceType",
        ),
    ],
)
def test_unsupported_features_refused(
    where: tuple[Any, ...], key: tuple[str, ...], value: object, path: str, fragment: str
) -> None:
    """Each refused feature is reported at its own field path, saying it is not supported."""
    doc = full_request()
    target: Any = doc
    for step in where:
        target = target[step]
    for step in key[:-1]:
        target = target[step]
    target[key[-1]] = value
    prefix = ".".join(f"[{s}]" if isinstance(s, int) else s for s in where).replace(".[", "[")
    found = errors_of(doc)
    rules = found.pop(f"{prefix}.{path}")
    assert len(rules) == 1 and fragment in rules[0] and "not supported" in rules[0]
    assert found == {}


def test_false_flags_accepted() -> None:
    """Network flags and AppManaged set to false are plain SageMaker defaults and pass."""
    doc = full_request()
    doc["NetworkConfig"] = {
        "EnableNetworkIsolation": False,
        "EnableInterContainerTrafficEncryption": False,
    }
    doc["ProcessingOutputConfig"]["Outputs"][0]["AppManaged"] = False
    assert parse_job(doc).warnings == ()


def test_read_only_cluster_fields_refused() -> None:
    """SelectedInstanceType/Count are DescribeProcessingJob output and refused in a request."""
    doc = full_request()
    doc["ProcessingResources"]["ClusterConfig"]["SelectedInstanceType"] = "ml.m5.xlarge"
    rule = single_error(doc, "ProcessingResources.ClusterConfig.SelectedInstanceType")
    assert "read-only" in rule


def test_portability_fields_warn() -> None:
    """VpcConfig, KmsKeyId and VolumeKmsKeyId are accepted with a warning each; Tags and friends silently."""
    doc = full_request()
    doc["NetworkConfig"]["VpcConfig"] = {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}
    doc["ProcessingOutputConfig"]["KmsKeyId"] = "alias/key"
    doc["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] = "arn:aws:kms:key/1"
    job = parse_job(doc)
    assert len(job.warnings) == 3
    assert job.warnings[0].startswith("NetworkConfig.VpcConfig is accepted for portability")
    assert "ProcessingOutputConfig.KmsKeyId" in job.warnings[1]
    assert "ProcessingResources.ClusterConfig.VolumeKmsKeyId" in job.warnings[2]
    assert job.request_dict()["NetworkConfig"]["VpcConfig"]["Subnets"] == ["subnet-1"]
    assert parse_job(full_request()).warnings == ()  # Tags, ExperimentConfig, RoleArn


def test_vpc_config_is_still_validated() -> None:
    """An accepted-with-warning field is still checked against the schema."""
    doc = full_request()
    doc["NetworkConfig"]["VpcConfig"] = {"SecurityGroupIds": [], "Subnets": ["bad subnet"]}
    found = errors_of(doc)
    assert found["NetworkConfig.VpcConfig.SecurityGroupIds"] == ["must have at least 1 item (got 0)"]
    assert found["NetworkConfig.VpcConfig.Subnets[0]"][0].startswith("must match the pattern")


# --- derived documents ----------------------------------------------------


def test_processing_job_config_has_nulls() -> None:
    """processingjobconfig.json echoes the request with defaults, the ARN, and nulls for unset fields."""
    job = parse_job(
        {
            **minimal_request(),
            "ProcessingInputs": [
                {"InputName": "a", "S3Input": {"S3Uri": "file:///a", "LocalPath": "/opt/ml/processing/a"}}
            ],
        }
    )
    config = processing_job_config(job, job_arn(job.name))
    assert config["ProcessingJobArn"] == "arn:aws:sagemaker:local:000000000000:processing-job/min"
    for key in ("NetworkConfig", "RoleArn", "ExperimentConfig", "Environment"):
        assert config[key] is None
    assert config["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}  # SageMaker's default, as it shows it
    assert config["ProcessingOutputConfig"] is None
    assert config["AppSpecification"] == {
        "ImageUri": "busybox",
        "ContainerArguments": None,
        "ContainerEntrypoint": None,
    }
    cluster = config["ProcessingResources"]["ClusterConfig"]
    assert cluster["VolumeSizeInGB"] is None and cluster["VolumeKmsKeyId"] is None
    assert cluster["InstanceCount"] == 1
    assert "SelectedInstanceType" not in cluster
    item = config["ProcessingInputs"][0]
    assert item["DatasetDefinition"] is None
    assert item["S3Input"]["S3InputMode"] == "File"
    json.dumps(config)


def test_job_arn() -> None:
    """The ARN follows SageMaker's form, with the name lowercased."""
    assert job_arn("My-Job") == "arn:aws:sagemaker:local:000000000000:processing-job/my-job"
    assert job_arn("j", region="eu-west-1", account="123456789012") == (
        "arn:aws:sagemaker:eu-west-1:123456789012:processing-job/j"
    )


# --- files ----------------------------------------------------------------


def test_load_job_reads_file(tmp_path: Path) -> None:
    """A JSON file (even with a byte order mark) loads into the same job as parse_job gives."""
    path = tmp_path / "job.json"
    path.write_text("\ufeff" + json.dumps(full_request()), encoding="utf-8")
    assert load_job(path) == parse_job(full_request())
    assert load_job(str(path)).name == "Feature-Prep-7"


def test_load_job_bad_json_gives_line_and_column(tmp_path: Path) -> None:
    """Malformed JSON is a SpecError naming the file, line and column, not a traceback."""
    path = tmp_path / "job.json"
    path.write_text('{\n  "ProcessingJobName": "x",\n  "AppSpecification": {,}\n}\n')
    with pytest.raises(SpecError) as info:
        load_job(path)
    [violation] = info.value.violations
    assert violation.path == str(path)
    assert violation.rule.startswith("is not valid JSON: ")
    assert violation.rule.endswith("at line 3, column 24")


def test_load_job_file_problems(tmp_path: Path) -> None:
    """Missing files, folders, non-UTF-8 bytes and duplicate keys are SpecErrors on the file name."""
    cases = {
        tmp_path / "absent.json": "file not found",
        tmp_path: "is a folder, not a file",
    }
    (tmp_path / "latin1.json").write_bytes(b'{"ProcessingJobName": "caf\xe9"}')
    cases[tmp_path / "latin1.json"] = "is not UTF-8 text (byte 26)"
    (tmp_path / "dup.json").write_text('{"Environment": {}, "Environment": {"A": "1"}}')
    cases[tmp_path / "dup.json"] = "key 'Environment' appears twice in one object"
    for path, fragment in cases.items():
        with pytest.raises(SpecError) as info:
            load_job(path)
        [violation] = info.value.violations
        assert violation.path == str(path)
        assert fragment in violation.rule


def test_load_job_invalid_content_uses_field_paths(tmp_path: Path) -> None:
    """A well-formed file with an invalid job reports field paths and names the file in the message."""
    path = tmp_path / "job.json"
    doc = minimal_request()
    doc["ProcessingJobName"] = "bad name"
    path.write_text(json.dumps(doc))
    with pytest.raises(SpecError) as info:
        load_job(path)
    assert [v.path for v in info.value.violations] == ["ProcessingJobName"]
    assert str(path) in str(info.value)


# --- the generated schema -------------------------------------------------


def test_schema_json_is_what_the_generator_produces(tmp_path: Path) -> None:
    """The committed schema.json equals a fresh generation from the installed, pinned botocore."""
    pytest.importorskip("botocore")
    out = tmp_path / "schema.json"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_schema.py"), "--output", str(out)],
        check=True,
        capture_output=True,
    )
    packaged = REPO / "distproc" / "spec" / "schema.json"
    assert out.read_text(encoding="utf-8") == packaged.read_text(encoding="utf-8")


def test_runtime_does_not_import_botocore() -> None:
    """Parsing a job loads schema.json as data and never imports botocore."""
    code = (
        "import sys, distproc.spec as s;"
        "s.parse_job({'ProcessingJobName': 'x', 'AppSpecification': {'ImageUri': 'i'},"
        "'ProcessingResources': {'ClusterConfig': {'InstanceType': 'ml.t3.medium'}}});"
        "assert 'botocore' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- properties -----------------------------------------------------------


def _member_names() -> list[str]:
    names = {member for shape in _schema._document()["shapes"].values() for member in shape.get("members", {})}
    return sorted(names)


INTERESTING = st.sampled_from(
    [
        "file:///srv/x",
        "s3://b/k",
        "/opt/ml/processing/x",
        "/opt/ml/processing/x/..",
        "Pipe",
        "Gzip",
        "ManifestFile",
        "Continuous",
        "ml.m5.xlarge",
        "ok-name",
        "",
        0,
        1,
        -1,
        True,
        False,
        None,
        10**400,
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | INTERESTING
)
KEYS = st.sampled_from(_member_names()) | st.text(max_size=10)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)


def _parse_or_spec_error(doc: object) -> None:
    try:
        job = parse_job(doc)
    except SpecError as exc:
        assert exc.violations
        assert all(isinstance(v, Violation) and v.path and v.rule for v in exc.violations)
        assert validate_request(doc)
    else:
        assert isinstance(job, ProcessingJob)
        assert parse_job(job.request_dict()) == job


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_arbitrary_json_never_crashes(doc: object) -> None:
    """Any JSON-like value gives a ProcessingJob or a SpecError, never another exception."""
    _parse_or_spec_error(doc)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.extend(_paths(child, (*prefix, key)))
    return found


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_request_never_crashes(data: st.DataObject) -> None:
    """A valid request with one part replaced, deleted or extended gives a job or a SpecError."""
    doc = full_request()
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:]))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        operation = data.draw(st.sampled_from(["replace", "delete", "extend"]))
        if operation == "replace":
            parent[path[-1]] = data.draw(JSON_VALUES)
        elif operation == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[data.draw(KEYS)] = data.draw(JSON_VALUES)
            elif isinstance(target, list):
                target.append(copy.deepcopy(data.draw(st.sampled_from(target or [None]))))
    _parse_or_spec_error(doc)
