"""The wire protocol between coordinator and agent (distproc/agent/protocol.py).

Round trips (what one end writes, the other reads back equal), the agent's
real answers read by the coordinator's types, each malformed message refused
with the path of its field, and the module's Python 3.9 compatibility (it
runs on the hosts' python). No cluster needed: the agent runs on this machine.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import distproc.agent
from distproc.agent import cli, lease, runner
from distproc.agent import follow as follow_mod
from distproc.agent.answers import (
    AliveLine,
    CheckAnswer,
    ClaimAnswer,
    CleanupAnswer,
    Counted,
    EventLine,
    LaunchAnswer,
    LogLine,
    LostLine,
    ProbeAnswer,
    ResultLine,
    RunResult,
    StageProgress,
    StatusAnswer,
    StopAnswer,
    UploadAnswer,
    parse_follow_line,
)
from distproc.agent.protocol import (
    CleanupRequest,
    FollowRequest,
    HostTask,
    LaunchRequest,
    PrepareRequest,
    ProtocolError,
    parse_request,
)
from distproc.agent.task import JobDir, TaskError, parse_task
from distproc.errors import AgentError
from distproc.hosts.agentbundle import PROBE_SCRIPT, agent_bundle
from distproc.hosts.session import HostSession
from distproc.hosts.transport import LocalTransport
from distproc.inventory import Host
from distproc.plan import build_plan, host_task
from distproc.spec import job_arn, parse_job
from tests.task_docs import task_doc


def _wire(doc: Any) -> Any:
    """What the other end reads: the document through JSON."""
    return json.loads(json.dumps(doc))


def _planned_task() -> HostTask:
    job = parse_job(
        {
            "ProcessingJobName": "wire",
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 3, "InstanceType": "ml.m5.xlarge"}},
            "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": ["python3", "x.py"]},
            "Environment": {"A": "1", "B": "two\nlines"},
            "ProcessingOutputConfig": {
                "Outputs": [
                    {"OutputName": "out", "S3Output": {"S3Uri": "s3://b/o/", "LocalPath": "/opt/ml/processing/o"}}
                ]
            },
        }
    )
    nodes = [Host(name=f"h{i}", address=f"10.0.0.{i}", work_dir=f"/w{i}") for i in range(1, 4)]
    plan = build_plan(job, job_arn(job.name), nodes, {})
    return host_task(plan, plan.assignments[1], 4.0, {"region": "eu-west-1"}, "/w/deps", 2.5, 30.0)


# -- round trips -------------------------------------------------------------------


def test_the_task_the_coordinator_plans_is_the_task_the_agent_reads() -> None:
    task = _planned_task()
    assert HostTask.from_doc(_wire(task.to_doc())) == task
    assert parse_task(_wire(task.to_doc())) == task
    assert task.metrics_interval_seconds == 2.5 and task.orphan_timeout_seconds == 30.0
    assert task.add_hosts == (("algo-1", "10.0.0.1"), ("algo-2", "10.0.0.2"), ("algo-3", "10.0.0.3"))


def test_a_task_document_written_by_hand_reads_with_its_defaults() -> None:
    task = HostTask.from_doc(task_doc())
    assert task.outputs == () and task.s3 is None and task.metrics_interval_seconds == 5.0
    assert HostTask.from_doc(_wire(task.to_doc())) == task


@pytest.mark.parametrize(
    "request_",
    [
        PrepareRequest("/w/jobs/j1/algo-2", True, HostTask.from_doc(task_doc())),
        PrepareRequest("/w/jobs/j1/algo-2", False, HostTask.from_doc(task_doc())),
        LaunchRequest(),
        FollowRequest(12, 345),
        CleanupRequest(),
    ],
    ids=lambda r: type(r).__name__,
)
def test_each_request_of_the_conversation_reads_back_equal(request_: Any) -> None:
    assert parse_request(_wire(request_.to_doc())) == request_


def test_a_request_without_a_verb_is_a_prepare() -> None:
    """The conversation's first request before verbs were named: still understood."""
    doc = {"jobdir": "/w/jobs/j1/algo-1", "task": task_doc()}
    assert parse_request(doc) == PrepareRequest("/w/jobs/j1/algo-1", False, HostTask.from_doc(task_doc()))


# -- the agent's real answers, read by the coordinator's types ------------------------


def test_the_lease_answers_read_as_claims(tmp_path: Path) -> None:
    work = str(tmp_path)
    assert ClaimAnswer.from_doc(_wire(lease.acquire(work, "a", "h1"))) == ClaimAnswer(True)
    assert ClaimAnswer.from_doc(_wire(lease.acquire(work, "a", "h1"))) == ClaimAnswer(True)  # again
    busy = ClaimAnswer.from_doc(_wire(lease.acquire(work, "b", "h1")))
    assert not busy.leased and busy.busy is not None and busy.busy.job == "a" and busy.busy.holder == "h1"
    assert busy.age_seconds is not None and busy.age_seconds >= 0


def test_the_follow_stream_reads_line_by_line(tmp_path: Path) -> None:
    root = tmp_path / "jobs" / "j" / "algo-1"
    root.mkdir(parents=True)
    jobdir = JobDir(str(root))
    Path(jobdir.events).write_text(json.dumps({"kind": "container_started", "time": 7, "image": "i"}) + "\n")
    Path(jobdir.log).write_bytes(b"out \xff\n")
    result = {"status": "Stopped", "exit_code": -9, "stopped": True, "stop_reason": "asked", "orphaned": True}
    result.update(container_started=8.0, container_ended=9.5, agent_ended=10.0, message="m", message_valid=True)
    Path(jobdir.result).write_text(json.dumps(result))
    out = io.StringIO()
    assert follow_mod.follow(jobdir, out=out) == 0
    lines = [parse_follow_line(json.loads(x)) for x in out.getvalue().splitlines()]
    event, log, end = lines
    assert isinstance(event, EventLine) and event.event.kind == "container_started"
    assert event.event.time == 7.0 and event.event.data == {"image": "i"}
    assert event.offset == Path(jobdir.events).stat().st_size
    assert isinstance(log, LogLine) and log.raw == b"out \xff\n" and log.offset == 6
    assert isinstance(end, ResultLine)
    assert end.result == RunResult(
        status="Stopped",
        exit_code=-9,
        container_started=8.0,
        ended=9.5,
        message="m",
        message_valid=True,
        message_problem=None,
        error=None,
        error_class=None,
        stopped=True,
        stop_reason="asked",
        orphaned=True,
    )
    assert parse_follow_line({"stream": "lost", "pid": 5}) == LostLine(5)
    assert parse_follow_line({"stream": "alive"}) == AliveLine()
    assert parse_follow_line({"stream": "from-a-newer-agent"}) is None


def test_a_result_that_says_little_is_a_failure_with_no_end_time() -> None:
    """What the coordinator made of a result without status or times before: Failed, ended when seen."""
    result = RunResult.from_doc({})
    assert result.status == "Failed" and result.ended is None and result.message_valid and not result.stopped
    assert RunResult.from_doc({"agent_ended": 3}).ended == 3.0


def test_status_stop_and_cleanup_answers_read_from_the_agent(tmp_path: Path) -> None:
    jobdir = JobDir(str(tmp_path / "jobs" / "j1" / "algo-1"))
    assert StopAnswer.from_doc(_wire(runner.request_stop(jobdir, "why"))) == StopAnswer("not-started")
    assert StatusAnswer.from_doc(_wire(runner.describe_state(jobdir))) == StatusAnswer(False, None, False, False)
    os.makedirs(jobdir.root)
    Path(jobdir.result).write_text("{}")
    assert StatusAnswer.from_doc(_wire(runner.describe_state(jobdir))).finished
    answer = CleanupAnswer.from_doc(_wire(cli.cleanup_job(jobdir)))
    assert answer.removed and answer.problems == () and answer.metrics.samples == []


def test_the_install_probe_reads_as_its_answer(tmp_path: Path) -> None:
    """The probe script runs on any python the host has; its answer is typed here."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert ProbeAnswer.from_doc(json.loads(done.stdout)) == ProbeAnswer(tuple(sys.version_info[:3]), True)


def test_progress_and_upload_answers() -> None:
    line = StageProgress("/opt/ml/processing/in", 3, 4096)
    assert StageProgress.from_doc(_wire(line.to_doc())["progress"]) == line
    upload = UploadAnswer.from_doc({"outputs": {"out": {"files": 2, "bytes": 10}}})
    assert upload.outputs == {"out": Counted(2, 10)} and upload.report() == {"out": {"files": 2, "bytes": 10}}


def test_the_coordinator_reads_a_real_agents_verbs(tmp_path: Path) -> None:
    """Through HostSession and the agent on this machine: claim, busy, release, status and stop, typed."""

    async def scenario() -> None:
        bundle = agent_bundle()
        work = str(tmp_path / "host")
        job_dir = f"{work}/jobs/j1/algo-1"
        first = HostSession(LocalTransport("h1"), sys.executable, work, job_dir, bundle)
        other = HostSession(LocalTransport("h1"), sys.executable, work, job_dir, bundle)
        answer, _sent = await first.claim("j1", "h1")
        assert answer == ClaimAnswer(True)
        busy, _ = await other.claim("j2", "h1")
        assert not busy.leased and busy.busy is not None and busy.busy.job == "j1"
        assert await first.status() == StatusAnswer(False, None, False, False)
        assert await first.stop("why") == StopAnswer("not-started")
        await first.release("j1")  # the claimed channel, closed before a launch
        again, _ = await other.claim("j2", "h1")
        assert again.leased
        await other.release("j2")

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_an_answer_that_does_not_fit_is_an_agent_error_naming_the_field() -> None:
    session = HostSession(LocalTransport("h1"), sys.executable, "/w", "/w/jobs/j/algo-1", agent_bundle())
    with pytest.raises(AgentError, match=r"h1: .*cleanup\.metrics\.samples: must be a list"):
        session._read(CleanupAnswer.from_doc, {"removed": True, "metrics": {"samples": 3}}, "cleanup")


# -- malformed messages, each refused with its field's path ---------------------------


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    del doc[key]
    return doc


@pytest.mark.parametrize(
    ("doc", "path", "problem"),
    [
        (task_doc(version=99), "task.version", "coordinator and agent disagree"),
        (_without(task_doc(), "job_name"), "task.job_name", "is missing"),
        (task_doc(algo=3), "task.algo", "must be a string"),
        (task_doc(hosts=["a", 1]), "task.hosts[1]", "must be a string"),
        (task_doc(add_hosts=[["a", "1"], ["b"]]), "task.add_hosts[1]", "pair"),
        (task_doc(environment={"A": "1"}), "task.environment", "list of"),
        (task_doc(docker={"command": ["docker"], "host": 5}), "task.docker.host", "string or null"),
        (task_doc(docker=[]), "task.docker", "JSON object"),
        (task_doc(gpus=True), "task.gpus", "non-negative integer or 'all'"),
        (task_doc(gpus=-1), "task.gpus", "non-negative integer or 'all'"),
        (task_doc(max_runtime_seconds=0), "task.max_runtime_seconds", "integer >= 1"),
        (task_doc(stop_grace_seconds=-1), "task.stop_grace_seconds", "non-negative number"),
        (task_doc(local_paths=["/opt/ml/processing/../../etc"]), "task.local_paths[0]", "outside"),
        (task_doc(outputs=[{"name": "o", "local_path": "/x", "uri": "s3://b"}]), "task.outputs[0].upload_mode", ""),
        (
            task_doc(outputs=[{"name": "../up", "local_path": "/x", "uri": "s3://b", "upload_mode": "EndOfJob"}]),
            "task.outputs[0].name",
            "not a plain file name",
        ),
        (task_doc(s3="eu-west-1"), "task.s3", "JSON object"),
        (task_doc(memory_limit_bytes="1g"), "task.memory_limit_bytes", "integer >= 1"),
        (task_doc(resource_config=None), "task.resource_config", "JSON object"),
    ],
)
def test_a_malformed_task_is_refused_naming_the_field(doc: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        HostTask.from_doc(doc)
    assert caught.value.path == path and problem in caught.value.problem
    with pytest.raises(TaskError, match="^" + path.replace("[", r"\[").replace(".", r"\.")):
        parse_task(doc)  # the agent's reading, as `prepare` reports it


@pytest.mark.parametrize(
    ("doc", "parse", "path"),
    [
        ([], parse_request, "request"),
        ({"verb": "dance"}, parse_request, "request.verb"),
        ({"verb": "prepare", "task": task_doc()}, parse_request, "request.jobdir"),
        ({"verb": "prepare", "jobdir": "/j", "launch": "yes", "task": task_doc()}, parse_request, "request.launch"),
        ({"verb": "prepare", "jobdir": "/j", "task": task_doc(image=None)}, parse_request, "request.task.image"),
        ({"verb": "follow", "events_offset": -1}, parse_request, "request.events_offset"),
        ({"verb": "follow", "log_offset": "9"}, parse_request, "request.log_offset"),
        ({"python": "3.9", "present": True}, ProbeAnswer.from_doc, "probe.python"),
        ({"python": [3, 9], "present": 1}, ProbeAnswer.from_doc, "probe.present"),
        ({"leased": False}, ClaimAnswer.from_doc, "claim"),
        ({"busy": "someone"}, ClaimAnswer.from_doc, "claim.busy"),
        ({"pid": "12"}, LaunchAnswer.from_doc, "launch.pid"),
        ({"files": 1}, Counted.from_doc, "answer.bytes"),
        ({"outputs": {"o": {"files": 1, "bytes": -1}}}, UploadAnswer.from_doc, "upload.outputs.o.bytes"),
        ({"state": None}, StopAnswer.from_doc, "stop.state"),
        ({"exists": True, "pid": 3, "alive": "no"}, StatusAnswer.from_doc, "status.alive"),
        ({"removed": True, "problems": [1]}, CleanupAnswer.from_doc, "cleanup.problems[0]"),
        ({"python": [3, 9], "docker": {"ok": "yes"}, "disk": {"path": "/w"}}, CheckAnswer.from_doc, "check.docker.ok"),
        ({"python": [3, 9], "docker": {"ok": True}}, CheckAnswer.from_doc, "check.disk"),
        (
            {"python": [3, 9], "docker": {"ok": True, "runtimes": ["runc", 1]}, "disk": {"path": "/w"}},
            CheckAnswer.from_doc,
            "check.docker.runtimes[1]",
        ),
        (
            {
                "python": [3, 9],
                "docker": {"ok": True},
                "disk": {"path": "/w"},
                "gpu": {"available": True, "count": "2"},
            },
            CheckAnswer.from_doc,
            "check.gpu.count",
        ),
        (
            {"python": [3, 9], "docker": {"ok": True}, "disk": {"path": "/w"}, "time": "now"},
            CheckAnswer.from_doc,
            "check.time",
        ),
        ({"stream": "event", "offset": "1", "event": {}}, parse_follow_line, "follow.offset"),
        ({"stream": "log", "offset": 3}, parse_follow_line, "follow.data"),
        ({"stream": "result", "result": {"exit_code": "1"}}, parse_follow_line, "follow.result.exit_code"),
        ({"stream": "result", "result": {"status": 0}}, parse_follow_line, "follow.result.status"),
        ({"stream": "result", "result": {"message": 5}}, parse_follow_line, "follow.result.message"),
        ({"stream": "lost", "pid": "x"}, parse_follow_line, "follow.pid"),
        ("alive", parse_follow_line, "follow"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_field(doc: Any, parse: Any, path: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(doc)
    assert caught.value.path == path
    assert str(caught.value).startswith(path + ": ")


# -- Python 3.9 on the hosts ------------------------------------------------------


def test_every_agent_module_is_python_3_9_syntax() -> None:
    """The agent runs on the hosts' python3, 3.9 or newer: no `X | Y` at run time, no match, no 3.10 syntax."""
    folder = os.path.dirname(distproc.agent.__file__)
    modules = sorted(glob.glob(os.path.join(folder, "*.py")))
    assert {os.path.join(folder, "protocol.py"), os.path.join(folder, "answers.py")} <= set(modules)
    for path in modules:
        with open(path, encoding="utf-8") as fh:
            ast.parse(fh.read(), filename=path, feature_version=(3, 9))


def _python_3_9() -> str | None:
    for candidate in [shutil.which("python3.9"), *sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9"))]:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_the_protocol_runs_on_python_3_9(tmp_path: Path) -> None:
    """The shipped agent's protocol modules, run by a real Python 3.9: a task, a request and a stream line read back."""
    python = _python_3_9()
    if python is None:
        pytest.skip("no Python 3.9 on this machine (the syntax test above still holds)")
    zipfile.ZipFile(io.BytesIO(agent_bundle().data)).extractall(tmp_path / "agent")
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(tmp_path / 'agent')!r})\n"
        "from distproc_agent.protocol import HostTask, parse_request, ProtocolError\n"
        "from distproc_agent.answers import parse_follow_line\n"
        "task = HostTask.from_doc(json.loads(sys.argv[1]))\n"
        "assert HostTask.from_doc(json.loads(json.dumps(task.to_doc()))) == task\n"
        "assert parse_request({'verb': 'follow', 'events_offset': 3}).events_offset == 3\n"
        "assert parse_follow_line({'stream': 'result', 'result': {'status': 'Completed'}}).result.status\n"
        "try:\n"
        "    HostTask.from_doc(dict(json.loads(sys.argv[1]), gpus=True))\n"
        "except ProtocolError as exc:\n"
        "    print(exc.path, sys.version_info[:2])\n"
    )
    done = subprocess.run(
        [python, "-c", code, json.dumps(_planned_task().to_doc())], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "task.gpus (3, 9)"
