"""distproc run, end to end, on the namespace cluster: real sshd, real dockerd.

Every test goes through the `distproc` command, as a user would, and ends by
checking that no container is left on any host. The contract tests that hold
on every backend (config files, names and resolution, rendezvous, entrypoint
cases, failure aggregation, ExitMessage, MaxRuntime, stop, Ctrl-C) are in
tests/test_contract_e2e.py, run on the SSH fleet and on Slurm.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distproc.hosts.agentbundle import agent_bundle
from tests.cluster.jobs import Env, file_input, file_output, job_doc, py

pytestmark = pytest.mark.cluster


def test_a_host_that_exits_0_early_never_stops_the_others(env: Env) -> None:
    """algo-1 ends at once with 0; the others finish their work afterwards and the job Completes."""
    out = env.data / "out"
    code = (
        "import json,os,time\n"
        "me=json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "if me!='algo-1':\n"
        "    time.sleep(3)\n"
        "    open('/opt/ml/processing/output/o/'+me,'w').write('done')\n"
    )
    entrypoint, code_input = env.script("early", code)
    doc = job_doc(
        "early",
        entrypoint=entrypoint,
        inputs=[code_input],
        outputs=[file_output("o", f"{out}/", "/opt/ml/processing/output/o")],
    )
    result = env.run_job(doc)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["algo-2", "algo-3"]
    assert env.describe("early")["ProcessingJobStatus"] == "Completed"


def test_without_stopping_condition_the_job_has_sagemakers_one_day_limit(env: Env) -> None:
    """No StoppingCondition: processingjobconfig.json in the container and describe show 86400 s, as SageMaker's."""
    code = "import json; print(json.load(open('/opt/ml/config/processingjobconfig.json'))['StoppingCondition'])"
    result = env.run_job(job_doc("one-day", count=1, entrypoint=py(code)))
    assert result.returncode == 0, result.stderr
    assert "{'MaxRuntimeInSeconds': 86400}" in result.stdout
    assert env.describe("one-day")["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}


def test_job_name_in_use_is_refused(env: Env) -> None:
    """A second job with the same name is refused as invalid input, before anything runs."""
    doc = job_doc("twice", count=1, entrypoint=["true"])
    assert env.run_job(doc).returncode == 0
    agent = Path(agent_bundle().remote_path(str(env.cluster.hosts[0].work_dir)))
    first = agent.stat()
    assert env.run_job({**doc, "ProcessingJobName": "twice-b"}).returncode == 0
    # The agent is cached by content hash: the second job did not send it again.
    second = agent.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert second.st_mode & 0o022 == 0  # not writable by others
    again = env.run_job(doc)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "Traceback" not in again.stderr


def test_unknown_host_key_fails_before_anything_is_sent(env: Env, tmp_path: Path) -> None:
    """A host whose key is not in known_hosts is refused with a message saying how to fix it."""
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    inventory = env.cluster.write_inventory(
        tmp_path / "strict.yaml", hosts=["h1"], extra_host_vars={"h1": {"distproc_known_hosts": str(empty)}}
    )
    work = env.cluster.hosts[0].work_dir
    before = set(os.listdir(work)) if work.exists() else set()
    result = env.cli(
        "run", "--inventory", str(inventory), str(env.write_job(job_doc("hostkey", count=1, entrypoint=["true"])))
    )
    assert result.returncode == 1
    reason = env.describe("hostkey")["FailureReason"]
    assert "not trusted" in reason and "ssh-keyscan" in reason
    assert "Traceback" not in result.stderr
    after = set(os.listdir(work)) if work.exists() else set()
    assert after == before


def test_local_connection_runs_without_ssh(env: Env, tmp_path: Path) -> None:
    """`ansible_connection: local` runs a job on this machine's Docker, no SSH involved."""
    inventory = env.cluster.write_inventory(tmp_path / "local.yaml", local=True)
    src = env.data / "in"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    out = env.data / "out"
    doc = job_doc(
        "local",
        count=1,
        entrypoint=["sh", "-c", "cat /opt/ml/processing/input/a.txt > /opt/ml/processing/output/copy.txt"],
        inputs=[file_input("in", f"{src}/", "/opt/ml/processing/input")],
        outputs=[file_output("out", f"{out}/", "/opt/ml/processing/output")],
    )
    result = env.cli("run", "--inventory", str(inventory), str(env.write_job(doc)))
    assert result.returncode == 0, result.stderr
    assert (out / "copy.txt").read_text() == "hello"
    assert env.cluster.containers("local") == []


def test_an_image_that_cannot_be_pulled_fails_with_client_error(env: Env) -> None:
    """A host without the image pulls it; when the pull fails the job is Failed, ClientError, naming the image."""
    result = env.run_job(job_doc("noimage", count=1, image="distproc-test:absent"))
    assert result.returncode == 1, result.stderr
    reason = env.describe("noimage")["FailureReason"]
    assert reason.startswith("ClientError: algo-1 (h1): cannot pull image distproc-test:absent")


def test_each_host_runs_one_agent_for_the_whole_job(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claim, prepare, launch, follow and cleanup are one agent process per host, on one channel.

    Each host's python is a wrapper that notes the agent verb it runs, so the
    count is of processes the hosts really started; only file:// staging and
    collection (tar streams of their own) add one each. This is the cold path,
    without the warm agent (which starts none: tests/test_warm_agent_e2e.py).
    """
    monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", "0")
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "python3"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$1" in *distproc-agent-*) echo "$2" >> {calls} ;; esac\nexec /usr/bin/python3 "$@"\n'
    )
    wrapper.chmod(0o755)
    inventory = env.cluster.write_inventory(
        tmp_path / "counted.yaml",
        extra_host_vars={h.name: {"ansible_python_interpreter": str(wrapper)} for h in env.cluster.hosts},
    )

    def run(doc: dict[str, Any]) -> Counter[str]:
        calls.unlink(missing_ok=True)
        result = env.cli("run", "--inventory", str(inventory), str(env.write_job(doc)))
        assert result.returncode == 0, result.stderr
        return Counter(calls.read_text().split())

    # The first job may install the agent (a failed claim, then the install, then claim again).
    run(job_doc("warmup", count=3, entrypoint=["true"]))
    assert run(job_doc("onecall", entrypoint=["sh", "-c", "echo hi"])) == Counter(claim=3)
    src = env.data / "in"
    src.mkdir()
    (src / "a.txt").write_text("x")
    staged = job_doc(
        "staged",
        entrypoint=["sh", "-c", "cp /opt/ml/processing/input/a.txt /opt/ml/processing/output/"],
        inputs=[file_input("in", f"{src}/", "/opt/ml/processing/input")],
        outputs=[file_output("out", f"{env.data}/out/", "/opt/ml/processing/output")],
    )
    assert run(staged) == Counter(claim=3, untar=3, pack=3)
    assert (env.data / "out" / "a.txt").read_text() == "x"
