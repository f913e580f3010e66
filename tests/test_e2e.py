"""distproc run, end to end, on the namespace cluster: real sshd, real dockerd.

Every test goes through the `distproc` command, as a user would, and ends by
checking that no container is left on any host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distproc.hosts.agentbundle import agent_bundle
from tests.cluster.jobs import PY, Env, file_input, file_output, job_doc, py, running_everywhere, wait_until

pytestmark = pytest.mark.cluster

JOBS = Path(__file__).parent / "jobs"
TRICKY = {
    "T_QUOTES": 'it\'s "quoted" `tick`',
    "T_SUBST": "$(touch /tmp/pwned) ${HOME} ; rm -rf /",
    "T_NEWLINE": "line one\nline two",
    "T_UNICODE": "naïve — 日本語 🚀",
    "T_SPACES": "  padded  ",
}


def test_three_hosts_see_the_contract_from_inside(env: Env) -> None:
    """Config files, Environment, algo-K names and a TCP rendezvous to algo-1, on 3 real hosts."""
    code = env.data / "code"
    code.mkdir()
    shutil.copy(JOBS / "contract_check.py", code / "check.py")
    shards = env.data / "shards"
    shards.mkdir()
    for i in range(7):
        (shards / f"part-{i}.csv").write_text(f"{i}\n")
    out = env.data / "out"
    doc = job_doc(
        "contract",
        entrypoint=["python3", "/opt/ml/processing/input/code/check.py"],
        arguments=[
            "/opt/ml/processing/input/shards",
            "/opt/ml/processing/output/report",
            "/opt/ml/processing/output/empty",
        ],
        environment=TRICKY,
        inputs=[
            file_input("code", f"{code}/", "/opt/ml/processing/input/code"),
            file_input("shards", f"{shards}/part-", "/opt/ml/processing/input/shards", "ShardedByS3Key"),
        ],
        outputs=[
            file_output("report", f"{out}/", "/opt/ml/processing/output/report"),
            file_output("empty", f"{env.data}/empty/", "/opt/ml/processing/output/empty"),
        ],
    )
    result = env.run_job(doc)
    assert result.returncode == 0, result.stderr
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("algo-*.json")}
    assert sorted(reports) == ["algo-1", "algo-2", "algo-3"]
    addresses = {f"algo-{k}": h.address for k, h in enumerate(env.cluster.hosts, 1)}
    shard_sets = []
    for algo, report in reports.items():
        host = env.cluster.hosts[int(algo[5:]) - 1]
        ip_out = env.cluster.run_in(host, "ip", "-o", "-4", "addr", "show").stdout
        nic = next(line.split()[1] for line in ip_out.splitlines() if f" {host.address}/" in line)
        assert report["resource"]["network_interface_name"] == nic
        assert report["resource"]["current_host"] == algo
        assert report["resource"]["hosts"] == ["algo-1", "algo-2", "algo-3"]
        assert report["hostname"] == algo
        assert report["resolved"] == addresses
        assert report["env"] == TRICKY
        assert all(report["paths_exist"].values()), report["paths_exist"]
        job = report["job"]
        assert job["ProcessingJobName"] == "contract"
        assert job["ProcessingJobArn"].endswith(":processing-job/contract")
        assert job["AppSpecification"]["ImageUri"] == PY
        assert "RoleArn" in job and job["RoleArn"] is None
        assert report["inputs"].count("code/check.py") == 1
        shard_sets.append({p for p in report["inputs"] if p.startswith("shards/")})
    assert reports["algo-1"]["rendezvous"] == ["algo-2", "algo-3"]
    # Sharded by key: disjoint, complete, 3/2/2 by count.
    assert sorted(len(s) for s in shard_sets) == [2, 2, 3]
    assert set().union(*shard_sets) == {f"shards/{i}.csv" for i in range(7)}
    described = env.describe("contract")
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["ExitMessage"] == "[algo-1 ok][algo-2 ok][algo-3 ok]"
    assert [h["ExitCode"] for h in described["Distproc"]["Hosts"]] == [0, 0, 0]
    assert not (Path("/tmp/pwned")).exists()
    for k, host in enumerate(env.cluster.hosts, 1):
        job_dir = host.work_dir / "jobs" / "contract" / f"algo-{k}"
        # The record stays; the Environment (task, env file) and the data do not.
        assert (job_dir / "result.json").is_file()
        assert not (job_dir / "task.json").exists() and not (job_dir / "container.env").exists()
        assert not (job_dir / "ml").exists()
    listed = json.loads(env.cli("list", "--json").stdout)["ProcessingJobSummaries"]
    assert [(j["ProcessingJobName"], j["ProcessingJobStatus"]) for j in listed] == [("contract", "Completed")]
    logs = env.cli("logs", "contract", "--host", "algo-2")
    assert logs.returncode == 0 and logs.stdout == ""  # check.py prints nothing; the log is that host's alone


@pytest.mark.parametrize(
    ("entrypoint", "arguments", "argv"),
    [
        (None, None, ["from-entrypoint", "from-cmd"]),
        (["/usr/local/bin/probe", "e1"], None, ["e1"]),
        (None, ["a1", "a 2"], ["from-entrypoint", "a1", "a 2"]),
        (["/usr/local/bin/probe", "e1"], ["a1"], ["e1", "a1"]),
    ],
    ids=["neither", "entrypoint-only", "arguments-only", "both"],
)
def test_entrypoint_and_arguments_cases(
    env: Env, entrypoint: list[str] | None, arguments: list[str] | None, argv: list[str]
) -> None:
    """The four entrypoint/argument cases start the container exactly as SageMaker does."""
    name = "ep-" + ("x" if entrypoint else "o") + ("x" if arguments else "o")
    result = env.run_job(job_doc(name, count=1, entrypoint=entrypoint, arguments=arguments))
    assert result.returncode == 0, result.stderr
    logs = env.cli("logs", name)
    line = logs.stdout.strip().splitlines()[-1]
    assert line.startswith("[algo-1] ")
    assert json.loads(line.removeprefix("[algo-1] "))["argv"] == ["/usr/local/bin/probe", *argv]


def test_first_failure_fails_the_job_and_stops_the_others(env: Env) -> None:
    """algo-2 exits 3: the job is Failed naming algo-2, the others are Stopped, outputs still come back."""
    out = env.data / "out"
    code = (
        "import json,os,time\n"
        "me=json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "open('/opt/ml/processing/output/o/'+me,'w').write(me)\n"
        "if me=='algo-2':\n"
        "    open('/opt/ml/output/message','w').write('bad input row 7')\n"
        "    raise SystemExit(3)\n"
        "time.sleep(120)\n"
    )
    entrypoint, code_input = env.script("fails", code)
    doc = job_doc(
        "fails",
        entrypoint=entrypoint,
        inputs=[code_input],
        outputs=[file_output("o", f"{out}/", "/opt/ml/processing/output/o")],
    )
    started = time.monotonic()
    result = env.run_job(doc, "--stop-grace", "5")
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 100  # the sleepers were stopped, not waited for
    described = env.describe("fails")
    assert described["ProcessingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith("AlgorithmError: algo-2 (h2) exited with code 3: bad input row 7")
    statuses = {h["Host"]: h["Status"] for h in described["Distproc"]["Hosts"]}
    assert statuses == {"algo-1": "Stopped", "algo-2": "Failed", "algo-3": "Stopped"}
    assert sorted(p.name for p in out.iterdir()) == ["algo-1", "algo-2", "algo-3"]


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


def test_exit_message_is_concatenated_and_cut(env: Env) -> None:
    """Each host's message joins in algo order and the whole is cut to 1024 characters."""
    code = (
        "import json\n"
        "me=json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "open('/opt/ml/output/message','w').write(me[-1]*600)\n"
    )
    entrypoint, code_input = env.script("msgs", code)
    assert env.run_job(job_doc("msgs", entrypoint=entrypoint, inputs=[code_input])).returncode == 0
    message = env.describe("msgs")["ExitMessage"]
    assert message == "1" * 600 + "2" * 424


def test_a_message_that_is_not_utf8_fails_the_job(env: Env) -> None:
    """A non-UTF-8 /opt/ml/output/message fails the job with ClientError even though it exited 0."""
    code = "open('/opt/ml/output/message','wb').write(b'ok \\xff\\xfe')"
    result = env.run_job(job_doc("badmsg", count=1, entrypoint=py(code)))
    assert result.returncode == 1
    reason = env.describe("badmsg")["FailureReason"]
    assert reason.startswith("ClientError: algo-1 (h1)") and "UTF-8" in reason


def test_max_runtime_stops_the_job(env: Env) -> None:
    """MaxRuntimeInSeconds is enforced on the hosts: the job ends Stopped."""
    started = time.monotonic()
    result = env.run_job(
        job_doc("slow", entrypoint=py("import time; time.sleep(300)"), max_runtime=3), "--stop-grace", "2"
    )
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 60
    described = env.describe("slow")
    assert described["ProcessingJobStatus"] == "Stopped"
    assert "MaxRuntimeInSeconds" in described["Distproc"]["StopReason"]
    assert {h["Status"] for h in described["Distproc"]["Hosts"]} == {"Stopped"}


def test_without_stopping_condition_the_job_has_sagemakers_one_day_limit(env: Env) -> None:
    """No StoppingCondition: processingjobconfig.json in the container and describe show 86400 s, as SageMaker's."""
    code = "import json; print(json.load(open('/opt/ml/config/processingjobconfig.json'))['StoppingCondition'])"
    result = env.run_job(job_doc("one-day", count=1, entrypoint=py(code)))
    assert result.returncode == 0, result.stderr
    assert "{'MaxRuntimeInSeconds': 86400}" in result.stdout
    assert env.describe("one-day")["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}


def test_distproc_stop_from_another_process(env: Env) -> None:
    """`distproc stop NAME` stops a running job: SIGINT, then SIGKILL after the grace period."""
    # Ignores SIGINT, so only the SIGKILL after the grace period ends it.
    code = "import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(300)"
    run = env.start(
        "run",
        "--inventory",
        str(env.inventory),
        "--stop-grace",
        "2",
        str(env.write_job(job_doc("stopme", entrypoint=py(code)))),
    )
    try:
        wait_until(running_everywhere(env.cluster, "stopme"), "containers to run", process=run)
        stop = env.cli("stop", "stopme")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        run.communicate(timeout=60)
        assert run.returncode == 3
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    described = env.describe("stopme")
    assert described["ProcessingJobStatus"] == "Stopped"
    assert described["Distproc"]["StopReason"] == "stopped by request (distproc stop)"
    assert [h["ExitCode"] for h in described["Distproc"]["Hosts"]] == [137, 137, 137]


def test_ctrl_c_on_run_stops_the_job(env: Env) -> None:
    """SIGINT to `distproc run` (Ctrl-C) stops every container; the container sees SIGINT first."""
    code = (
        "import time\n"
        "try:\n    time.sleep(300)\n"
        "except KeyboardInterrupt:\n    print('got SIGINT', flush=True); raise SystemExit(130)\n"
    )
    entrypoint, code_input = env.script("ctrlc", code)
    job = env.write_job(job_doc("ctrlc", entrypoint=entrypoint, inputs=[code_input]))
    run = env.start("run", "--inventory", str(env.inventory), str(job))
    follower: subprocess.Popen[str] | None = None
    try:
        wait_until(running_everywhere(env.cluster, "ctrlc"), "containers to run", process=run)
        # `logs --follow` from another process, while the job runs, until it ends.
        follower = env.start("logs", "ctrlc", "--follow")
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
        followed, _ = follower.communicate(timeout=30)
    finally:
        for proc in (run, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert run.returncode == 3, stderr
    assert stdout.count("got SIGINT") == 3
    assert follower.returncode == 0
    assert sorted(line for line in followed.splitlines() if "got SIGINT" in line) == [
        f"[algo-{k}] got SIGINT" for k in (1, 2, 3)
    ]
    described = env.describe("ctrlc")
    assert described["ProcessingJobStatus"] == "Stopped"
    assert described["Distproc"]["StopReason"] == "interrupted (Ctrl-C)"
    assert [h["ExitCode"] for h in described["Distproc"]["Hosts"]] == [130, 130, 130]


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


def test_each_host_runs_one_agent_for_the_whole_job(env: Env, tmp_path: Path) -> None:
    """Claim, prepare, launch, follow and cleanup are one agent process per host, on one channel.

    Each host's python is a wrapper that notes the agent verb it runs, so the
    count is of processes the hosts really started; only file:// staging and
    collection (tar streams of their own) add one each.
    """
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
