"""describe and list answer as AWS does (issue 17 part 5): their documents validate
against botocore's DescribeProcessingJobResponse and ListProcessingJobsResponse
shapes (tests/aws_shapes.py), unset members are left out, and `list` has
list-processing-jobs' filters, order and paging, done in SQL (a real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distproc import cli
from distproc.spec import parse_job
from distproc.spec.model import job_arn
from distproc.store.db import ListQuery, Store
from distproc.store.views import describe_document, list_document
from tests.aws_shapes import shape_problems

ROLE = "arn:aws:iam::000000000000:role/distproc"


def _request(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
        },
        "AppSpecification": {"ImageUri": "alpine:3.20", "ContainerEntrypoint": ["true"]},
        "RoleArn": ROLE,
        **extra,
    }


def _add(store: Store, name: str, created: float, status: str = "Completed", **extra: Any) -> None:
    store.create_job(name, f"arn:aws:sagemaker:local:000000000000:processing-job/{name}", _request(name, **extra), None)
    store.update_job(name, status=status)
    # The store stamps the wall clock; a test needs times it chose (real SQLite, set in place).
    store._db.execute(
        "UPDATE jobs SET creation_time = ?, last_modified = ? WHERE name = ?", (created, created + 5, name)
    )


def _aws_part(doc: dict[str, Any]) -> dict[str, Any]:
    """The document less `Distproc`, distproc's own member (docs/observing.md), which AWS does not have."""
    return {k: v for k, v in doc.items() if k != "Distproc"}


def _cli(home: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    rc = cli.main(["--home", str(home), *argv])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 and "--json" in argv else out), err


def test_describe_of_a_job_in_progress_leaves_unset_members_out_and_validates(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_job("j1", "arn:aws:sagemaker:local:000000000000:processing-job/j1", _request("j1"), None)
    doc = describe_document(store.get_job("j1"))
    for unset in ("ExitMessage", "FailureReason", "ProcessingStartTime", "ProcessingEndTime", "TrainingJobArn"):
        assert unset not in doc
    assert None not in doc.values()
    assert shape_problems(_aws_part(doc), "DescribeProcessingJobResponse") == []


def test_describe_of_a_finished_job_validates_and_echoes_the_arns_a_job_carries(tmp_path: Path) -> None:
    store = Store(tmp_path)
    arns = {
        "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:training-job/t1",
        "MonitoringScheduleArn": "arn:aws:sagemaker:eu-west-1:123456789012:monitoring-schedule/m1",
        "AutoMLJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:automl-job/a1",
    }
    store.create_job("j2", "arn:aws:sagemaker:local:000000000000:processing-job/j2", _request("j2", **arns), None)
    store.update_job(
        "j2", status="Failed", failure_reason="AlgorithmError: boom", exit_message="half", start_time=1.0, end_time=2.0
    )
    doc = describe_document(store.get_job("j2"))
    assert {k: doc[k] for k in arns} == arns
    assert (doc["ExitMessage"], doc["ProcessingStartTime"]) == ("half", "1970-01-01T00:00:01.000+00:00")
    assert shape_problems(_aws_part(doc), "DescribeProcessingJobResponse") == []


def test_describe_of_a_parsed_job_echoes_a_request_aws_would_answer(tmp_path: Path) -> None:
    """The request as distproc stores it (parsed, defaults filled) validates in describe's answer.

    With s3:// URIs: file:// is distproc's own extension of S3Uri, outside AWS's
    pattern, so a job with file:// data has no AWS counterpart (docs/observing.md).
    """
    text = (Path(__file__).resolve().parent.parent / "examples" / "hello" / "job.json").read_text()
    job = parse_job(json.loads(text.replace("file:///var/tmp/distproc-demo/", "s3://bucket/demo/")))
    store = Store(tmp_path)
    store.create_job(job.name, job_arn(job.name), job.request_dict(), None)
    store.update_job(job.name, status="Completed", exit_message="ok", start_time=1.0, end_time=2.0)
    doc = describe_document(store.get_job(job.name))
    assert doc["ProcessingInputs"][0]["S3Input"]["S3Uri"] == "s3://bucket/demo/code/"
    assert shape_problems(_aws_part(doc), "DescribeProcessingJobResponse") == []
    # The same job with its file:// URIs differs from AWS's shape in those URIs only.
    local = parse_job(json.loads(text))
    store.create_job("local", job_arn("local"), {**local.request_dict(), "ProcessingJobName": "local"}, None)
    problems = shape_problems(_aws_part(describe_document(store.get_job("local"))), "DescribeProcessingJobResponse")
    assert len(problems) == 3 and all("S3Uri: 'file:///var/tmp/distproc-demo/" in p for p in problems)


def test_the_validator_catches_what_aws_would_not_answer() -> None:
    """The check above could pass vacuously; each of these must be caught."""
    good = {
        "ProcessingJobName": "j",
        "ProcessingJobArn": "arn:aws:sagemaker:local:000000000000:processing-job/j",
        "ProcessingJobStatus": "Completed",
        "CreationTime": "2026-01-01T00:00:00.000+00:00",
    }
    assert shape_problems({"ProcessingJobSummaries": [good]}, "ListProcessingJobsResponse") == []
    for bad in (
        {**good, "ExitMessage": None},
        {**good, "ProcessingJobStatus": "Running"},
        {**good, "CreationTime": "yesterday"},
        {**good, "Extra": 1},
        {k: v for k, v in good.items() if k != "ProcessingJobArn"},
        {**good, "ProcessingJobArn": "arn:x"},
    ):
        assert shape_problems({"ProcessingJobSummaries": [bad]}, "ListProcessingJobsResponse") != [], bad


def test_list_json_validates_and_pages_with_a_next_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path)
    for i in range(5):
        _add(store, f"job-{i}", 1000.0 + i)
    rc, first, _ = _cli(tmp_path, "list", "--json", "--max-results", "2", capsys=capsys)
    assert rc == 0
    assert shape_problems(first, "ListProcessingJobsResponse") == []
    assert [s["ProcessingJobName"] for s in first["ProcessingJobSummaries"]] == ["job-4", "job-3"]
    names: list[str] = []
    token = None
    while True:
        argv = ["list", "--json", "--max-results", "2", *(["--next-token", token] if token else [])]
        rc, page, _ = _cli(tmp_path, *argv, capsys=capsys)
        assert rc == 0 and shape_problems(page, "ListProcessingJobsResponse") == []
        names += [s["ProcessingJobName"] for s in page["ProcessingJobSummaries"]]
        token = page.get("NextToken")
        if token is None:
            break
    assert names == ["job-4", "job-3", "job-2", "job-1", "job-0"]


def test_list_filters_and_sorts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path)
    _add(store, "alpha-x", 1000.0, "Completed")
    _add(store, "beta-X", 2000.0, "Failed")
    _add(store, "gamma", 3000.0, "Completed")
    _add(store, "delta-x", 4000.0, "Stopped")

    def names(*argv: str) -> list[str]:
        rc, doc, err = _cli(tmp_path, "list", "--json", *argv, capsys=capsys)
        assert rc == 0, err
        return [s["ProcessingJobName"] for s in doc["ProcessingJobSummaries"]]

    assert names("--name-contains=-x") == ["delta-x", "beta-X", "alpha-x"]  # any case, as AWS
    assert names("--status-equals", "Completed") == ["gamma", "alpha-x"]
    assert names("--status", "Completed", "--sort-order", "Ascending") == ["alpha-x", "gamma"]
    # Epoch seconds and ISO 8601, bounds excluded; 1970-01-01T00:50:00Z is 3000.
    assert names("--creation-time-after", "1000", "--creation-time-before", "1970-01-01T00:50:00Z") == ["beta-X"]
    assert names("--last-modified-time-after", "1970-01-01T00:50:00") == ["delta-x", "gamma"]  # no zone: UTC
    assert names("--last-modified-time-before", "2005") == ["alpha-x"]
    assert names("--sort-by", "Name", "--sort-order", "Ascending") == ["alpha-x", "beta-X", "delta-x", "gamma"]
    assert names("--sort-by", "Status", "--sort-order", "Ascending") == ["alpha-x", "gamma", "beta-X", "delta-x"]
    assert names("--name-contains", "%") == []  # a LIKE wildcard means itself


def test_paging_by_status_neither_repeats_nor_skips(tmp_path: Path) -> None:
    """Ties in the sort column (many Completed) are broken by name, so pages cut between equals."""
    store = Store(tmp_path)
    for i in range(7):
        _add(store, f"j{i}", 100.0, "Completed" if i % 3 else "Failed")
    query = ListQuery(sort_by="Status", sort_order="Descending")
    seen: list[str] = []
    token = None
    while True:
        page = store.list_page(query, 2, token)
        seen += [j.name for j in page.jobs]
        token = page.next_token
        if token is None:
            break
    assert seen == ["j6", "j3", "j0", "j5", "j4", "j2", "j1"]


def test_a_page_reads_only_its_own_jobs(tmp_path: Path) -> None:
    """The filter, order and cut are SQL's: a page of 2 out of 30 reads 2 jobs, not 30."""
    store = Store(tmp_path)
    for i in range(30):
        _add(store, f"j{i:02}", float(i))
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    page = store.list_page(ListQuery(), 2)
    assert [j.name for j in page.jobs] == ["j29", "j28"]
    # The trace shows each statement with its values filled in.
    assert sum("SELECT * FROM jobs WHERE name = " in s for s in statements) == 2


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"), "not a token this job store issued"),
        (lambda t: "x" + t, "not a token this job store issued"),
        (lambda t: "garbage", "not a token this job store issued"),
        (lambda t: "ü" * 10, "not a token this job store issued"),
        (lambda t: t * 200, "longer than 8192 characters"),
    ],
)
def test_a_bad_next_token_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mangle: Any, message: str
) -> None:
    store = Store(tmp_path)
    for i in range(3):
        _add(store, f"j{i}", float(i))
    _, doc, _ = _cli(tmp_path, "list", "--json", "--max-results", "1", capsys=capsys)
    rc, _, err = _cli(tmp_path, "list", "--json", "--next-token", mangle(doc["NextToken"]), capsys=capsys)
    assert rc == 2
    assert f"distproc: --next-token: {message}" in err and "Traceback" not in err


def test_a_next_token_is_bound_to_its_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path)
    for i in range(3):
        _add(store, f"j{i}", float(i))
    _, doc, _ = _cli(tmp_path, "list", "--json", "--max-results", "1", capsys=capsys)
    rc, _, err = _cli(tmp_path, "list", "--json", "--sort-by", "Name", "--next-token", doc["NextToken"], capsys=capsys)
    assert rc == 2 and "issued for other filters or another order" in err
    assert oct((tmp_path / "list-token.key").stat().st_mode & 0o777) == oct(0o600)  # the signing key is private
    # Another store (another key) does not take it either.
    other = tmp_path / "other"
    Store(other)
    rc, _, err = _cli(other, "list", "--json", "--next-token", doc["NextToken"], capsys=capsys)
    assert rc == 2 and "not a token this job store issued" in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--max-results", "101"], "--max-results"),
        (["--limit", "0"], "--max-results"),
        (["--creation-time-after", "last tuesday"], "--creation-time-after"),
        (["--last-modified-time-before", "nan"], "--last-modified-time-before"),
        (["--sort-by", "Size"], "--sort-by"),
        (["--status-equals", "Running"], "--status-equals"),
    ],
)
def test_bad_list_arguments_are_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--home", str(tmp_path), "list", *argv])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err


def test_list_document_has_no_next_token_on_the_last_page() -> None:
    assert list_document([], None) == {"ProcessingJobSummaries": []}
    assert list_document([], "t") == {"ProcessingJobSummaries": [], "NextToken": "t"}
