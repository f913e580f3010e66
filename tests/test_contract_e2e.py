"""The container contract and the outcome rules, written once, run on both backends.

Each test runs its job through `distproc run` on the SSH fleet (the namespace
cluster: sshd + dockerd per host) and on Slurm (the Slurm test cluster:
slurmctld, a slurmd and a dockerd per node; the agent in an srun step), and
asserts the same facts: both config files, the Environment, algo-K names and
their resolution to each host's address, a TCP rendezvous, sharded and
replicated inputs, the four entrypoint cases, failure aggregation (the first
non-zero exit fails the job, the others are Stopped), the ExitMessage,
MaxRuntimeInSeconds, `distproc stop`, Ctrl-C, logs kept per host with their
algo-K prefix, metrics sampled on every node, and no container or lease left
on any node (checked after every test by the fixture). No mocks.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import BackendEnv, fleet_env, leftovers, slurm_env
from tests.cluster.jobs import PY, file_input, file_output, job_doc, py, wait_until

pytestmark = pytest.mark.cluster

JOBS = Path(__file__).parent / "jobs"
TRICKY = {
    "T_QUOTES": 'it\'s "quoted" `tick`',
    "T_SUBST": "$(touch /tmp/pwned) ${HOME} ; rm -rf /",
    "T_NEWLINE": "line one\nline two",
    "T_UNICODE": "naïve — 日本語 🚀",
    "T_SPACES": "  padded  ",
}


@pytest.fixture(params=["fleet", pytest.param("slurm", marks=pytest.mark.slurm)])
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendEnv]:
    """How to run a job on N hosts and look at them, on the SSH fleet and on Slurm (one cluster each per session)."""
    if request.param == "fleet":
        env = fleet_env(request.getfixturevalue("cluster"), tmp_path)
    else:
        env = slurm_env(request.getfixturevalue("slurm"), dict(request.getfixturevalue("slurm_docker")), tmp_path)
    yield env
    assert leftovers(env) == []
    if env.slurm is not None:  # every allocation given back
        assert env.slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING").stdout.strip() == ""


def test_three_hosts_see_the_contract_from_inside(backend_env: BackendEnv) -> None:
    """Config files, Environment, algo-K names and a TCP rendezvous to algo-1, on 3 real hosts."""
    env = backend_env
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
    result = env.run_job(doc, "--metrics-interval", "0.2")
    assert result.returncode == 0, result.stderr
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("algo-*.json")}
    assert sorted(reports) == ["algo-1", "algo-2", "algo-3"]
    addresses = {f"algo-{k}": n.address for k, n in enumerate(env.nodes, 1)}
    shard_sets = []
    for algo, report in reports.items():
        node = env.node(algo)
        assert report["resource"]["network_interface_name"] == node.nic()
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
    for h in described["Distproc"]["Hosts"]:  # each node's agent sampled its host
        assert h["Metrics"]["samples"] >= 1 and h["Metrics"]["mem_used_bytes"]["max"] > 0, h["Metrics"]
    rows = list(csv.DictReader(io.StringIO(env.cli("metrics", "contract", "--csv").stdout)))
    assert {r["host"] for r in rows} == {"algo-1", "algo-2", "algo-3"}
    assert not (Path("/tmp/pwned")).exists()
    for k, node in enumerate(env.nodes, 1):
        job_dir = node.work_dir / "jobs" / "contract" / f"algo-{k}"
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
    backend_env: BackendEnv, entrypoint: list[str] | None, arguments: list[str] | None, argv: list[str]
) -> None:
    """The four entrypoint/argument cases start the container exactly as SageMaker does."""
    env = backend_env
    name = "ep-" + ("x" if entrypoint else "o") + ("x" if arguments else "o")
    result = env.run_job(job_doc(name, count=1, entrypoint=entrypoint, arguments=arguments))
    assert result.returncode == 0, result.stderr
    logs = env.cli("logs", name)
    line = logs.stdout.strip().splitlines()[-1]
    assert line.startswith("[algo-1] ")
    assert json.loads(line.removeprefix("[algo-1] "))["argv"] == ["/usr/local/bin/probe", *argv]


def test_first_failure_fails_the_job_and_stops_the_others(backend_env: BackendEnv) -> None:
    """algo-2 exits 3: the job is Failed naming algo-2, the others are Stopped, outputs still come back.

    The same job checks the ExitMessage: each host's message joins in algo
    order (the others write theirs, then tell algo-2, which only then fails).
    """
    env = backend_env
    out = env.data / "out"
    code = (
        "import json,os,socket,time\n"
        "me=json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "open('/opt/ml/processing/output/o/'+me,'w').write(me)\n"
        "if me=='algo-2':\n"
        "    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "    s.bind(('0.0.0.0',47124)); s.listen(2)\n"
        "    for _ in range(2): s.accept()[0].close()\n"
        "    open('/opt/ml/output/message','w').write('bad input row 7')\n"
        "    raise SystemExit(3)\n"
        "with open('/opt/ml/output/message','w') as f: f.write('['+me+' waited]')\n"
        "while True:\n"
        "    try: socket.create_connection(('algo-2',47124),timeout=2).close(); break\n"
        "    except OSError: time.sleep(0.2)\n"
        "time.sleep(120)\n"
    )
    entrypoint, code_input = env.script("fails", code)
    doc = job_doc(
        "fails",
        entrypoint=entrypoint,
        inputs=[code_input],
        outputs=[file_output("o", f"{out}/", "/opt/ml/processing/output/o")],
    )
    result = env.run_job(doc, "--stop-grace", "5")
    assert result.returncode == 1, result.stderr
    described = env.describe("fails")
    assert described["ProcessingJobStatus"] == "Failed"
    node = env.node("algo-2").name
    assert described["FailureReason"].startswith(f"AlgorithmError: algo-2 ({node}) exited with code 3: bad input row 7")
    assert described["ExitMessage"] == "[algo-1 waited]bad input row 7[algo-3 waited]"
    statuses = {h["Host"]: h["Status"] for h in described["Distproc"]["Hosts"]}
    assert statuses == {"algo-1": "Stopped", "algo-2": "Failed", "algo-3": "Stopped"}
    # Stopped, not waited for: SIGINT ends python's sleep (exit 1 from KeyboardInterrupt), no SIGKILL needed.
    codes = {h["Host"]: h["ExitCode"] for h in described["Distproc"]["Hosts"]}
    assert codes["algo-2"] == 3 and codes["algo-1"] != 0 and codes["algo-3"] != 0
    assert sorted(p.name for p in out.iterdir()) == ["algo-1", "algo-2", "algo-3"]


def test_exit_message_is_concatenated_and_cut(backend_env: BackendEnv) -> None:
    """Each host's message joins in algo order and the whole is cut to 1024 characters."""
    env = backend_env
    code = (
        "import json\n"
        "me=json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "open('/opt/ml/output/message','w').write(me[-1]*600)\n"
    )
    entrypoint, code_input = env.script("msgs", code)
    assert env.run_job(job_doc("msgs", entrypoint=entrypoint, inputs=[code_input])).returncode == 0
    message = env.describe("msgs")["ExitMessage"]
    assert message == "1" * 600 + "2" * 424


def test_a_message_that_is_not_utf8_fails_the_job(backend_env: BackendEnv) -> None:
    """A non-UTF-8 /opt/ml/output/message fails the job with ClientError even though it exited 0."""
    env = backend_env
    code = "open('/opt/ml/output/message','wb').write(b'ok \\xff\\xfe')"
    result = env.run_job(job_doc("badmsg", count=1, entrypoint=py(code)))
    assert result.returncode == 1
    reason = env.describe("badmsg")["FailureReason"]
    assert reason.startswith(f"ClientError: algo-1 ({env.nodes[0].name})") and "UTF-8" in reason


def test_max_runtime_stops_the_job(backend_env: BackendEnv) -> None:
    """MaxRuntimeInSeconds is enforced on the hosts, to the second: the job ends Stopped with that reason."""
    env = backend_env
    result = env.run_job(
        job_doc("slow", entrypoint=py("import time; time.sleep(300)"), max_runtime=3), "--stop-grace", "2"
    )
    assert result.returncode == 3, result.stderr
    described = env.describe("slow")
    assert described["ProcessingJobStatus"] == "Stopped"
    # The agents' own deadline, to the second (Slurm's --time is whole minutes: 1 here).
    assert described["Distproc"]["StopReason"] == "MaxRuntimeInSeconds (3 s) exceeded"
    assert {h["Status"] for h in described["Distproc"]["Hosts"]} == {"Stopped"}


def test_distproc_stop_from_another_process(backend_env: BackendEnv) -> None:
    """`distproc stop NAME` stops a running job: SIGINT, then SIGKILL after the grace period."""
    env = backend_env
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
        wait_until(env.running_everywhere("stopme"), "containers to run", process=run)
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


def test_ctrl_c_on_run_stops_the_job(backend_env: BackendEnv) -> None:
    """SIGINT to `distproc run` (Ctrl-C) stops every container; the container sees SIGINT first.

    Logs stream live, each line with its algo-K prefix, to `run` and to a
    `logs --follow` in another process.
    """
    env = backend_env
    code = (
        "import time\n"
        "print('running', flush=True)\n"
        "try:\n    time.sleep(300)\n"
        "except KeyboardInterrupt:\n    print('got SIGINT', flush=True); raise SystemExit(130)\n"
    )
    entrypoint, code_input = env.script("ctrlc", code)
    job = env.write_job(job_doc("ctrlc", entrypoint=entrypoint, inputs=[code_input]))
    run = env.start("run", "--inventory", str(env.inventory), str(job))
    follower: subprocess.Popen[str] | None = None
    try:
        wait_until(env.running_everywhere("ctrlc"), "containers to run", process=run)
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
    # Kept per host: each host's log holds its own lines only.
    for k in (1, 2, 3):
        own = env.cli("logs", "ctrlc", "--host", f"algo-{k}").stdout.splitlines()
        assert own == [f"[algo-{k}] running", f"[algo-{k}] got SIGINT"], own
