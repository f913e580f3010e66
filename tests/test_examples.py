"""The examples in examples/ run for real, and each one's job.json is the request its run.py makes.

- Without the cluster: every examples/**/job.json passes ``distproc validate``
  as it is (local defaults under /var/tmp/distproc-examples, no placeholders),
  and each example's ``run.py --print-request`` prints exactly its job.json
  with the machine-dependent members (name, image, host count, paths) set to
  the run's own, so the committed job.json is what the CLI would run.
- On the 3-host cluster (``@pytest.mark.cluster``): each example runs through
  the Python API, as its run.py builds it, after checking that
  ``processor.request(...)`` equals the job.json; the outputs are checked
  against values computed here from the generated input. The word count's
  job.json also runs once with the CLI (``python -m distproc run -i INV job.json``).

The sklearn example needs its own image (scikit-learn, pandas): built once by
the example's build_image.sh and cached (tests/example_image.py).
"""

from __future__ import annotations

import collections
import csv
import importlib.util
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from distproc import Processor
from tests.cluster import Cluster
from tests.cluster.jobs import PY, Env
from tests.example_image import SKLEARN_IMAGE, ensure_sklearn_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SKLEARN = EXAMPLES / "sklearn-preprocessing"
SHARDS = EXAMPLES / "distributed-shards"
HOSTS = ["algo-1", "algo-2", "algo-3"]
WORD = re.compile(r"[a-z0-9']+")
# The input columns of the sklearn example's generator.
NUMERIC = ["age", "education_num", "hours_per_week", "capital_gain"]
CATEGORICAL = ["workclass", "marital_status", "occupation", "sex"]


# -- helpers ---------------------------------------------------------------------------------------


def _set_uri(doc: dict[str, Any], name: str, uri: str) -> None:
    for item in [*doc.get("ProcessingInputs", []), *doc["ProcessingOutputConfig"]["Outputs"]]:
        if name in (item.get("InputName"), item.get("OutputName")):
            item["S3Input" if "S3Input" in item else "S3Output"]["S3Uri"] = uri


def job_json(folder: Path, **values: Any) -> dict[str, Any]:
    """The example's committed job.json with its machine-dependent members set to `values`.

    The file holds local defaults (valid as it is); a run of run.py differs from
    it only in these members: the job's name, image, host count and paths.
    """
    doc: dict[str, Any] = json.loads((folder / "job.json").read_text())
    given = dict(values)
    doc["ProcessingJobName"] = given.pop("JOB_NAME")
    doc["AppSpecification"]["ImageUri"] = given.pop("IMAGE")
    data, out = given.pop("DATA"), given.pop("OUTPUT")
    _set_uri(doc, "data" if folder == SKLEARN else "text", f"file://{data}/")
    if folder == SKLEARN:
        # A ScriptProcessor copies the script into the job store when the job starts.
        _set_uri(doc, "code", f"file://{given.pop('DISTPROC_HOME')}/data/{doc['ProcessingJobName']}/input/code/")
        outputs = ("train", "test")
    else:
        doc["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = given.pop("INSTANCE_COUNT")
        _set_uri(doc, "code", f"file://{given.pop('EXAMPLE')}/code/")
        outputs = ("combined", "partials")
    for name in outputs:
        _set_uri(doc, name, f"file://{out}/{name}/")
    assert not given, f"values job_json does not know: {sorted(given)}"
    return doc


def run_example(folder: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(folder / script), *args], capture_output=True, text=True, timeout=120, check=True
    )


def load_run_module(folder: Path) -> ModuleType:
    """The example's run.py as a module (its folder name has a dash, so not importable by name)."""
    spec = importlib.util.spec_from_file_location(f"example_{folder.name.replace('-', '_')}_run", folder / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def expected_word_counts(data: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(data.iterdir()):
        counts.update(WORD.findall(path.read_text().lower()))
    return counts


def check_word_counts(output: Path, data: Path) -> dict[str, Any]:
    """The combined counts are the counts over every input file; every host counted its own shard."""
    combined = json.loads((output / "combined" / "word_counts.json").read_text())
    expected = expected_word_counts(data)
    assert combined["counts"] == dict(expected)
    assert combined["words"] == sum(expected.values()) and combined["distinct_words"] == len(expected)
    files = sorted(p.name for p in data.iterdir())
    assert combined["files"] == len(files)
    assert sorted(combined["hosts"]) == HOSTS
    partials = {p.stem: json.loads(p.read_text()) for p in (output / "partials").glob("*.json")}
    assert sorted(partials) == HOSTS
    merged: collections.Counter[str] = collections.Counter()
    for k, host in enumerate(HOSTS):
        part = partials[host]
        # ShardedByS3Key deals the files, sorted, round robin: algo-K gets K-1, K-1+N, ...
        assert part["files"] == files[k :: len(HOSTS)], host
        assert part["words"] > 0 and combined["hosts"][host] == {"files": len(part["files"]), "words": part["words"]}
        merged.update(part["counts"])
    assert merged == expected
    return combined


# -- the job.json files are the requests (no cluster) --------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("**/job.json")), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_job_json_is_valid_as_it_is(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`distproc validate` passes on each committed job.json: no placeholders to fill first."""
    from distproc import cli

    assert cli.main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "${" not in path.read_text()
    # Its local defaults live where the examples' READMEs say.
    for uri in re.findall(r'"S3Uri": "file://([^"]*)"', path.read_text()):
        assert uri.startswith(("/var/tmp/distproc-examples/", "/var/tmp/distproc-demo/")), uri


def test_the_examples_glob_finds_every_example() -> None:
    found = {p.parent.name for p in EXAMPLES.glob("**/job.json")}
    assert found >= {"hello", "sklearn-preprocessing", "distributed-shards"}


def test_sklearn_job_json_is_what_run_py_requests(tmp_path: Path) -> None:
    """run.py --print-request prints the committed job.json, filled in: the API's request is the CLI's job."""
    data, out, home = tmp_path / "data", tmp_path / "out", tmp_path / "home"
    run_example(SKLEARN, "generate_data.py", "--out", str(data), "--rows", "50", "--files", "2")
    args = ["--data", str(data), "--output", str(out), "--home", str(home), "--job-name", "prep-1", "--image", "img:1"]
    printed = json.loads(run_example(SKLEARN, "run.py", "--print-request", *args).stdout)
    values = {"JOB_NAME": "prep-1", "IMAGE": "img:1", "DATA": data, "OUTPUT": out, "DISTPROC_HOME": home}
    assert printed == job_json(SKLEARN, **values)
    assert not home.exists() and not out.exists()  # a request runs and copies nothing


def test_distributed_job_json_is_what_run_py_requests(tmp_path: Path) -> None:
    """Likewise for the word count; by default it takes every host of inventory/local.yaml (one)."""
    data, out = tmp_path / "data", tmp_path / "out"
    run_example(SHARDS, "generate_data.py", "--out", str(data), "--files", "5")
    args = ["--data", str(data), "--output", str(out), "--job-name", "shards-1", "--image", "py:3"]
    printed = json.loads(run_example(SHARDS, "run.py", "--print-request", *args).stdout)
    values = {"JOB_NAME": "shards-1", "IMAGE": "py:3", "INSTANCE_COUNT": 1, "EXAMPLE": SHARDS, "DATA": data}
    assert printed == job_json(SHARDS, **values, OUTPUT=out)


def test_generators_are_deterministic_and_complete(tmp_path: Path) -> None:
    """The same seed gives the same files; the CSV has every column and the rows asked for."""
    for name in ("a", "b"):
        run_example(SKLEARN, "generate_data.py", "--out", str(tmp_path / name), "--rows", "101", "--files", "3")
        run_example(SHARDS, "generate_data.py", "--out", str(tmp_path / name / "text"), "--files", "4")
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    header, _ = read_csv(tmp_path / "a" / "census-0.csv")
    assert header == [*NUMERIC, *CATEGORICAL, "income"]
    assert sum(len(read_csv(p)[1]) for p in (tmp_path / "a").glob("census-*.csv")) == 101
    assert len(list((tmp_path / "a" / "text").glob("doc-*.txt"))) == 4


# -- on the cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_image(cluster: Cluster) -> Iterator[str]:
    """The sklearn example's image in every host's daemon (a cold build runs debootstrap: minutes, once)."""
    image = ensure_sklearn_image(cluster)
    for host in cluster.hosts:
        assert cluster.docker(host, "image", "inspect", image.name).returncode == 0
    yield image.name


@pytest.mark.cluster
@pytest.mark.timeout(2700)  # a cold image build (debootstrap of scikit-learn, pandas) and its imports
def test_sklearn_preprocessing_splits_and_scales(
    env: Env, sklearn_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ScriptProcessor runs preprocessing.py: rows split 70/30, numeric columns scaled on train, one-hot columns."""
    data, out = env.data / "census", env.data / "out"
    run_example(SKLEARN, "generate_data.py", "--out", str(data), "--rows", "4000", "--files", "2", "--seed", "3")
    example = load_run_module(SKLEARN)
    args = ["--inventory", str(env.inventory), "--image", sklearn_image, "--data", str(data), "--output", str(out)]
    processor, run_args = example.build(example.parse_args([*args, "--home", str(env.home), "--job-name", "prep-1"]))
    values = {"JOB_NAME": "prep-1", "IMAGE": SKLEARN_IMAGE, "DATA": data, "OUTPUT": out, "DISTPROC_HOME": env.home}
    assert processor.request(**run_args) == job_json(SKLEARN, **values)

    processor.run(**run_args)
    described = processor.latest_job.describe()
    assert described["ProcessingJobStatus"] == "Completed"
    assert "[algo-1] Received arguments {'train_test_split_ratio': 0.3" in capsys.readouterr().out

    inputs = [row for p in sorted(data.glob("*.csv")) for row in read_csv(p)[1]]
    train_header, train = read_csv(out / "train" / "train_features.csv")
    test_header, test = read_csv(out / "test" / "test_features.csv")
    _, train_labels = read_csv(out / "train" / "train_labels.csv")
    _, test_labels = read_csv(out / "test" / "test_labels.csv")
    assert len(train) + len(test) == len(inputs) == 4000
    assert (len(train), len(test)) == (2800, 1200) == (len(train_labels), len(test_labels))
    # The labels are the input's (1 for >50K), split stratified: the same share of positives on both sides.
    positives = sum(row[-1] == ">50K" for row in inputs)
    train_positive, test_positive = (sum(int(v) for (v,) in labels) for labels in (train_labels, test_labels))
    assert train_positive + test_positive == positives > 0
    assert abs(train_positive / 2800 - test_positive / 1200) < 0.005
    assert described["ExitMessage"] == f"train 2800 rows, test 1200 rows, {len(train_header)} features"

    assert train_header == test_header
    columns = {name: [float(row[i]) for row in train] for i, name in enumerate(train_header)}
    for name in NUMERIC:
        assert abs(statistics.fmean(columns[name])) < 1e-9, name
        assert abs(statistics.pstdev(columns[name]) - 1) < 1e-9, name
    for i, name in enumerate(CATEGORICAL):
        categories = sorted({row[len(NUMERIC) + i] for row in inputs})
        one_hot = [f"{name}_{c}" for c in categories]
        assert set(one_hot) <= set(train_header), (name, train_header)
        # Each row has exactly one of its category's columns set.
        assert all(sum(values) == 1 for values in zip(*(columns[c] for c in one_hot), strict=True)), name
    assert len(train_header) == len(NUMERIC) + sum(len({r[len(NUMERIC) + i] for r in inputs}) for i in range(4))


@pytest.mark.cluster
def test_distributed_shards_counts_words_on_three_hosts(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """Processor on 3 hosts: each counts its shard, algo-2 and algo-3 send theirs to algo-1 over TCP, algo-1 merges."""
    data, out = env.data / "text", env.data / "out"
    run_example(SHARDS, "generate_data.py", "--out", str(data), "--files", "40", "--seed", "11")
    example = load_run_module(SHARDS)
    args = ["--inventory", str(env.inventory), "--image", PY, "--data", str(data), "--output", str(out)]
    processor, run_args = example.build(example.parse_args([*args, "--home", str(env.home), "--job-name", "shards-1"]))
    assert isinstance(processor, Processor) and processor.instance_count == 3  # every host of the inventory
    values = {"JOB_NAME": "shards-1", "IMAGE": PY, "INSTANCE_COUNT": 3, "EXAMPLE": SHARDS, "DATA": data, "OUTPUT": out}
    assert processor.request(**run_args) == job_json(SHARDS, **values)

    processor.run(**run_args)
    described = processor.latest_job.describe()
    assert described["ProcessingJobStatus"] == "Completed"
    combined = check_word_counts(out, data)
    partial_words = {h: combined["hosts"][h]["words"] for h in HOSTS}
    assert described["ExitMessage"] == (
        f"algo-1: combined 3 hosts, 40 files, {combined['words']} words\n"
        f"algo-2: sent {partial_words['algo-2']} words to algo-1\n"
        f"algo-3: sent {partial_words['algo-3']} words to algo-1\n"
    )
    printed = capsys.readouterr().out
    for host in ("algo-2", "algo-3"):
        assert f"[algo-1] algo-1 received {host}'s partial" in printed
        assert f"[{host}] {host} sent " in printed


@pytest.mark.cluster
def test_distributed_shards_job_json_runs_with_the_cli(env: Env) -> None:
    """The same job from its job.json with `python -m distproc run -i INV job.json`: the same result."""
    data, out = env.data / "text", env.data / "out"
    run_example(SHARDS, "generate_data.py", "--out", str(data), "--files", "25", "--seed", "5")
    values = {"JOB_NAME": "shards-cli", "IMAGE": PY, "INSTANCE_COUNT": 3, "EXAMPLE": SHARDS, "DATA": data}
    job = env.data / "job.json"
    job.write_text(json.dumps(job_json(SHARDS, **values, OUTPUT=out)))
    cp = env.cli("run", "-i", str(env.inventory), "--no-live", str(job), timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    combined = check_word_counts(out, data)
    described = json.loads(env.cli("describe", "shards-cli", "--json").stdout)
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["ExitMessage"].startswith(f"algo-1: combined 3 hosts, 25 files, {combined['words']} words\n")
