"""The `distproc` command's conventions: light start-up, JSON for machines, numbers
that make sense, help on every argument, commands in the order a user meets them.

No cluster: the start-up tests run each command in a fresh interpreter and read
its sys.modules; the `run --json` test runs a real job on this machine
(`ansible_connection: local`) whose Docker daemon is absent, so it ends Failed
after the real claim, as a job on a host without Docker does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distproc import cli
from distproc.store.db import Store

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "examples" / "hello" / "job.json"
LOCAL_INVENTORY = ROOT / "inventory" / "local.yaml"

#: Run cli.main() (not entry(): its os._exit would skip the report), then list what it imported.
_IMPORTS = """
import json, sys
from distproc.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

HEAVY = {"asyncssh", "boto3", "botocore"}
#: structlog is set up only by commands that log; asyncio is needed by none of these (the
#: job store asks for a running event loop only where asyncio was imported already).
LIGHTEST = HEAVY | {"structlog", "asyncio"}


def _imports(tmp_path: Path, *argv: str) -> tuple[Any, set[str]]:
    report = tmp_path / "imports.json"
    subprocess.run(
        [sys.executable, "-c", _IMPORTS, str(report), *argv],
        env={**os.environ, "DISTPROC_HOME": str(tmp_path / "home")},
        capture_output=True,
        timeout=60,
        check=True,
    )
    done = json.loads(report.read_text())
    return done["code"], set(done["modules"])


@pytest.mark.parametrize(
    ("argv", "unwanted"),
    [
        (["--help"], LIGHTEST | {"yaml"}),
        (["validate", str(JOB)], LIGHTEST | {"yaml"}),  # the inventory's YAML is read only with -i
        (["validate", str(JOB), "-i", str(LOCAL_INVENTORY), "--json"], LIGHTEST),
        (["list"], LIGHTEST | {"yaml"}),
        (["describe", "started"], LIGHTEST | {"yaml"}),
        (["describe", "started", "--json"], LIGHTEST | {"yaml"}),
    ],
    ids=["help", "validate", "validate-inventory", "list", "describe", "describe-json"],
)
def test_light_commands_import_neither_ssh_nor_aws(tmp_path: Path, argv: list[str], unwanted: set[str]) -> None:
    """--help, validate, list and describe load neither asyncssh nor boto3 (a third of a second of CPU
    at every start), nor asyncio, nor yaml unless an inventory is read, so each answers about as fast
    as Python starts. bench/startup.py has the figures."""
    store = Store(tmp_path / "home")
    # InProgress: describe asks whether its coordinator lives (distproc.run.attach), the path that
    # once imported the coordinator.
    store.create_job("started", "arn:started", json.loads(JOB.read_text()), str(LOCAL_INVENTORY))
    store.close()
    code, modules = _imports(tmp_path, *argv)
    assert code == 0
    assert sorted(unwanted & modules) == []


def test_the_package_loads_its_public_names_on_first_use(tmp_path: Path) -> None:
    """`import distproc` is light; `from distproc import JobRunner` still works, loading the coordinator then."""
    code = (
        "import sys, distproc\n"
        "before = 'asyncssh' in sys.modules\n"
        "from distproc import JobRunner, Store, load_job\n"
        "print(before, 'asyncssh' in sys.modules, JobRunner.__module__, Store.__module__, callable(load_job),"
        " set(distproc.__all__) <= set(dir(distproc)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "True", "distproc.run.runner", "distproc.store.db", "True", "True"]
    with pytest.raises(ImportError, match="NoSuchName"):
        exec("from distproc import NoSuchName", {})


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_json_lists_each_problem_of_an_invalid_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid job: exit 2, and on stdout a document of every problem, each with its field."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"ProcessingJobName": "bad name!", "AppSpecification": {"ImageUri": "img"}}))
    code, out, err = _main(capsys, "validate", str(job), "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["Valid"] is False and doc["Source"] == "job" and doc["File"] == str(job)
    fields = {p["Field"] for p in doc["Problems"]}
    assert {"ProcessingJobName", "ProcessingResources"} <= fields
    assert all(p["Message"] for p in doc["Problems"])
    assert "ProcessingJobName" in err and "Traceback" not in err


def test_validate_json_names_the_inventory_when_it_cannot_serve_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job of 3 hosts on the one-host inventory: exit 2, a problem of the inventory."""
    job = tmp_path / "job.json"
    request = json.loads(JOB.read_text())
    request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = 3
    job.write_text(json.dumps(request))
    code, out, _ = _main(capsys, "validate", str(job), "-i", str(LOCAL_INVENTORY), "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["Valid"] is False and doc["Source"] == "inventory" and doc["File"] == str(LOCAL_INVENTORY)
    assert len(doc["Problems"]) >= 1 and doc["Problems"][0]["Message"]


def test_validate_json_names_the_host_of_each_inventory_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    h1:\n      ansible_host: 10.0.0.1\n"
        "      distproc_instance_type: ml.m5.xlarge\n      distproc_gpus: lots\n"
    )
    code, out, _ = _main(capsys, "validate", str(JOB), "-i", str(inventory), "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["Source"] == "inventory"
    assert [p["Field"] for p in doc["Problems"]] == ["host h1"]
    assert "distproc_gpus" in doc["Problems"][0]["Message"]


def test_validate_json_of_a_valid_job_keeps_its_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(capsys, "validate", str(JOB), "-i", str(LOCAL_INVENTORY), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["Valid"] is True and doc["ProcessingJobName"] == "hello-distproc"
    assert [row["Host"] for row in doc["Plan"]] == ["algo-1"] and doc["Plan"][0]["InventoryHost"] == "localhost"


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["run", "-i", "inv.yaml", "job.json", "--stop-grace", "-5"], "--stop-grace"),
        (["run", "-i", "inv.yaml", "job.json", "--fan-out", "0"], "--fan-out"),
        (["run", "-i", "inv.yaml", "job.json", "--fan-out", "2.5"], "--fan-out"),
        (["run", "-i", "inv.yaml", "job.json", "--metrics-interval", "-1"], "--metrics-interval"),
        (["run", "-i", "inv.yaml", "job.json", "--reconnect-window", "0"], "--reconnect-window"),
        (["run", "-i", "inv.yaml", "job.json", "--reconnect-window", "nan"], "--reconnect-window"),
        (["run", "-i", "inv.yaml", "job.json", "--orphan-timeout", "-1"], "--orphan-timeout"),
        (["run", "-i", "inv.yaml", "job.json", "--orphan-timeout", "5"], "--orphan-timeout"),
        (["run", "-i", "inv.yaml", "job.json", "--orphan-timeout", "inf"], "--orphan-timeout"),
        (["list", "--limit", "0"], "--max-results/--limit"),
        (["list", "--limit", "-3"], "--max-results/--limit"),
        (["list", "--max-results", "101"], "--max-results/--limit"),
        (["hosts", "check", "-i", "inv.yaml", "--fan-out", "-1"], "--fan-out"),
        (["hosts", "check", "-i", "inv.yaml", "--min-free-gib", "-1"], "--min-free-gib"),
        (["hosts", "check", "-i", "inv.yaml", "--max-clock-offset", "0"], "--max-clock-offset"),
    ],
)
def test_nonsense_numbers_are_refused_naming_the_argument(
    capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    """A negative grace period, zero hosts at once, ...: argparse's usual error, exit 2, before anything runs."""
    code, out, err = _main(capsys, *argv)
    assert code == 2
    assert f"error: argument {option}: " in err and "Traceback" not in err
    assert out == ""


def test_sensible_edge_values_are_accepted() -> None:
    """0 is meaningful where the help says so: no grace, no sampling, no orphan timeout, no disk minimum."""
    run = cli._parser().parse_args(
        ["run", "-i", "i.yaml", "j.json", "--stop-grace", "0", "--metrics-interval", "0", "--orphan-timeout", "0"]
    )
    assert (run.stop_grace, run.metrics_interval, run.orphan_timeout) == (0.0, 0.0, 0.0)
    check = cli._parser().parse_args(["hosts", "check", "-i", "i.yaml", "--min-free-gib", "0", "--fan-out", "1"])
    assert (check.min_free_gib, check.fan_out) == (0.0, 1)
    assert cli._parser().parse_args(["list", "--limit", "1"]).limit == 1


def _parsers(parser: argparse.ArgumentParser, name: str = "distproc") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                found += _parsers(sub, f"{name} {command}")
    return found


def test_every_argument_and_command_has_help() -> None:
    missing = []
    for name, parser in _parsers(cli._parser()):
        for action in parser._actions:
            label = "/".join(action.option_strings) or action.dest
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {label}")
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {a.dest}" for a in action._choices_actions if not a.help]
    assert missing == []


def test_commands_are_listed_in_the_order_a_user_meets_them(capsys: pytest.CaptureFixture[str]) -> None:
    order = ["run", "validate", "describe", "logs", "list", "stop", "attach", "metrics", "report", "hosts"]
    code, out, _ = _main(capsys, "--help")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()[0] in order]
    assert listed == order


def test_run_json_prints_the_final_describe_document_and_nothing_else(tmp_path: Path) -> None:
    """`run --json`: stdout is the job's DescribeProcessingJob document, as `describe --json` prints it.

    A real run on this machine through `ansible_connection: local`, whose Docker
    socket does not exist: the claim fails and the job ends Failed (exit 1).
    """
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    here:\n      ansible_connection: local\n"
        "      distproc_instance_type: ml.m5.xlarge\n"
        f"      distproc_work_dir: {tmp_path / 'work'}\n"
        f"      distproc_docker_host: unix://{tmp_path / 'no-docker.sock'}\n"
    )
    request = {**json.loads(JOB.read_text()), "ProcessingJobName": "runjson"}
    request.pop("ProcessingInputs", None)
    request.pop("ProcessingOutputConfig", None)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(request))
    env = {**os.environ, "DISTPROC_HOME": str(tmp_path / "home")}

    def distproc(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distproc", *argv], env=env, capture_output=True, text=True, timeout=120
        )

    run = distproc("run", "--json", "--metrics-interval", "0", "-i", str(inventory), str(job))
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)  # the whole of stdout is one document
    assert doc["ProcessingJobName"] == "runjson" and doc["ProcessingJobStatus"] == "Failed"
    assert doc["FailureReason"]
    described = distproc("describe", "runjson", "--json")
    assert described.returncode == 0
    assert json.loads(described.stdout) == doc
    assert "runjson: Failed" in run.stderr


@pytest.mark.cluster
def test_run_json_sends_container_output_to_stderr(cluster: Any, tmp_path: Path) -> None:
    """A job that completes and prints: stdout is the Completed document alone, the output is on stderr."""
    inventory = cluster.write_inventory(tmp_path / "local.yaml", local=True)
    request = {
        "ProcessingJobName": "runjsonok",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}},
        # The document holds the entrypoint itself: what the container prints is told apart by the shell's sum.
        "AppSpecification": {"ImageUri": "distproc-test:py", "ContainerEntrypoint": ["sh", "-c", "echo s-$((40+2))"]},
    }
    job = tmp_path / "job.json"
    job.write_text(json.dumps(request))
    run = subprocess.run(
        [sys.executable, "-m", "distproc", "run", "--json", "-i", str(inventory), str(job)],
        env={**os.environ, "DISTPROC_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["ProcessingJobName"] == "runjsonok" and doc["ProcessingJobStatus"] == "Completed"
    assert "[algo-1] s-42" in run.stderr.splitlines()
    assert "s-42" not in run.stdout
