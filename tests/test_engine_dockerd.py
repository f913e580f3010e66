"""The runner's Docker engines against real daemons: the Engine API on the Unix socket
(ApiEngine) and, where it matters, the docker CLI (CliEngine) on the same container.

Most tests use the root namespace's daemon (`cluster.local_docker_host`); the ones
that run the whole agent use h1's, which has no route out (a pull fails at once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distproc.agent import engine as engine_mod
from distproc.agent import runner
from distproc.agent.engine import ApiEngine, CliEngine, Engine, Started, for_access
from distproc.agent.task import DockerAccess, HostTask, JobDir, parse_task
from tests.cluster import Cluster
from tests.task_docs import task_doc

pytestmark = pytest.mark.cluster

SH = "distproc-test:busybox"
PY = "distproc-test:py"


@pytest.fixture
def api(cluster: Cluster) -> Iterator[ApiEngine]:
    engine = for_access(DockerAccess(("docker",), cluster.local_docker_host))
    assert isinstance(engine, ApiEngine), "the local daemon should be spoken to through its socket"
    yield engine
    for name in cluster.containers("local"):
        if name.startswith("distproc-engt-"):
            engine.remove(name)


@pytest.fixture
def cli(cluster: Cluster) -> CliEngine:
    return CliEngine(DockerAccess(("docker",), cluster.local_docker_host))


_count = [0]


def make_task(
    *, image: str = SH, entrypoint: list[str] | None = None, arguments: list[str] | None = None, **over: Any
) -> HostTask:
    _count[0] += 1
    doc = task_doc(
        job_name=f"engt-{os.getpid()}-{_count[0]}",
        algo="algo-1",
        add_hosts=[["algo-1", "127.0.0.1"]],
        image=image,
        entrypoint=entrypoint,
        arguments=arguments,
        **over,
    )
    return parse_task(doc)


def start(engine: Engine, task: HostTask, tmp_path: Path) -> Started:
    """Started; the output the engine took from the start (the API's attach) goes to
    tmp_path/<container>.attached.log."""
    ml = tmp_path / "ml"
    ml.mkdir(exist_ok=True)
    started = engine.start(task, str(ml), str(tmp_path / "container.env"), str(attached_log(task, tmp_path)))
    assert (started.status, started.error) == (0, "")
    assert (started.output is not None) == (engine.kind == "api"), "the API attaches; the CLI does not"
    return started


def attached_log(task: HostTask, tmp_path: Path) -> Path:
    return tmp_path / f"{task.container_name}.attached.log"


def start_failing(engine: Engine, task: HostTask, tmp_path: Path) -> tuple[int, str]:
    started = engine.start(task, str(tmp_path), str(tmp_path / "container.env"), str(attached_log(task, tmp_path)))
    assert started.output is None, "a container that did not start has no output to follow"
    return started.status, started.error


def wait(engine: Engine, name: str, timeout: float = 60) -> int | None:
    waiter = engine.wait(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = waiter.poll(0.25)
        if outcome is not None:
            assert outcome.ok, outcome
            return outcome.exit_code
    raise AssertionError(f"container {name} did not end within {timeout} s")


def logs(engine: Engine, name: str, path: Path) -> bytes:
    engine.follow_logs(name, None, str(path)).end()
    return path.read_bytes()


def until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def test_the_api_is_used_exactly_when_the_socket_is_certain_and_answers(cluster: Cluster) -> None:
    assert isinstance(for_access(DockerAccess(("docker",), cluster.hosts[0].docker_host)), ApiEngine)
    assert isinstance(for_access(DockerAccess(("env", "docker"), cluster.local_docker_host)), CliEngine)
    assert isinstance(for_access(DockerAccess(("docker",), "unix:///run/dp/no-such/docker.sock")), CliEngine)


@pytest.mark.parametrize("how", ["attached", "followed"])
def test_output_streams_as_it_comes_stdout_and_stderr_in_order(api: ApiEngine, tmp_path: Path, how: str) -> None:
    """The output, attached from the start or followed from the log (as after a daemon restart),
    is written while the container runs; stdout and stderr land interleaved as written;
    the exit code comes from the wait."""
    script = "echo out1; sleep 0.3; echo err1 >&2; sleep 0.3; printf 'out2 no newline'; sleep 2; echo; exit 3"
    task = make_task(entrypoint=["sh", "-c", script])
    started = start(api, task, tmp_path)
    assert started.output is not None
    if how == "attached":
        log, follower = attached_log(task, tmp_path), started.output
    else:
        started.output.cut_now()  # type: ignore[attr-defined]
        log = tmp_path / "container.log"
        follower = api.follow_logs(task.container_name, None, str(log))
    # Docker hands on whole lines only (a partial one when the container ends).
    until(lambda: log.exists() and b"err1\n" in log.read_bytes(), "output before the exit")
    running = api.state(task.container_name)
    assert running is not None and running.running
    assert wait(api, task.container_name) == 3
    follower.end()
    assert log.read_bytes() == b"out1\nerr1\nout2 no newline\n"
    state = api.state(task.container_name)
    assert state is not None and (state.running, state.exit_code, state.oom_killed) == (False, 3, False)


def test_the_attached_output_has_what_the_container_wrote_the_moment_it_started(api: ApiEngine, tmp_path: Path) -> None:
    """Attached before the start: the first bytes of a container that writes and exits at once
    are there every time (the daemon registers the attach before it answers)."""
    for i in range(8):
        task = make_task(entrypoint=["sh", "-c", f"echo first-{i}; echo err-{i} >&2"])
        started = start(api, task, tmp_path)
        assert wait(api, task.container_name) == 0
        assert started.output is not None
        started.output.end()
        assert sorted(attached_log(task, tmp_path).read_bytes().splitlines()) == [
            f"err-{i}".encode(),
            f"first-{i}".encode(),
        ]
        api.remove(task.container_name)


def test_binary_and_big_output_is_what_the_cli_gives(api: ApiEngine, cli: CliEngine, tmp_path: Path) -> None:
    """Bytes of every value, long lines (split by the daemon) and 2 MB of lines: the API's
    demultiplexed stream is byte for byte what `docker logs` writes."""
    script = (
        "printf 'to stderr\\n' >&2; sleep 0.3; "
        "printf 'nul:\\000 ctl:\\001\\033 hi:\\377\\376 utf8:\\303\\251\\n'; "
        "head -c 40000 /dev/zero | tr '\\000' x; echo; "
        "seq 1 300000"
    )
    task = make_task(entrypoint=["sh", "-c", script])
    started = start(api, task, tmp_path)
    via_api = tmp_path / "api.log"
    follower = api.follow_logs(task.container_name, None, str(via_api))
    assert wait(api, task.container_name) == 0
    follower.end()
    assert started.output is not None
    started.output.end()
    via_cli = logs(cli, task.container_name, tmp_path / "cli.log")
    got = via_api.read_bytes()
    assert got == via_cli
    # The attached stream has not been through the log driver, which replaced the bytes
    # that are not UTF-8 (below); all else is the same.
    assert attached_log(task, tmp_path).read_bytes().replace(b"\xff\xfe", b"\xef\xbf\xbd\xef\xbf\xbd") == got
    expected_tail = "".join(f"{i}\n" for i in range(1, 300001)).encode()
    # The json-file log driver keeps NUL and control bytes; it replaces bytes that are not
    # UTF-8 with U+FFFD, for `docker logs` as for the API.
    head = b"to stderr\nnul:\x00 ctl:\x01\x1b hi:\xef\xbf\xbd\xef\xbf\xbd utf8:\xc3\xa9\n"
    assert got == head + b"x" * 40000 + b"\n" + expected_tail
    assert len(got) > 2_000_000
    # A second follower after the exit gets the whole output again, and ends by itself.
    assert logs(api, task.container_name, tmp_path / "again.log") == got


def test_kill_with_grace_then_sigkill(api: ApiEngine, tmp_path: Path) -> None:
    """SIGINT reaches a container that handles it; one that ignores it runs on until SIGKILL (137)."""
    handles = make_task(
        entrypoint=["sh", "-c", "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done"]
    )
    start(api, handles, tmp_path)
    log = tmp_path / "handles.log"
    follower = api.follow_logs(handles.container_name, None, str(log))
    until(lambda: log.exists() and b"ready" in log.read_bytes(), "the trap to be set")
    api.kill(handles.container_name, "SIGINT")
    assert wait(api, handles.container_name) == 7
    follower.end()
    assert log.read_bytes() == b"ready\ngot-int\n"
    api.kill(handles.container_name, "SIGINT")  # already gone: no error

    ignores = make_task(entrypoint=["sh", "-c", "trap '' INT; echo ready; sleep 600"])
    start(api, ignores, tmp_path)
    log2 = tmp_path / "ignores.log"
    follower = api.follow_logs(ignores.container_name, None, str(log2))
    until(lambda: log2.exists() and b"ready" in log2.read_bytes(), "the trap to be set")
    api.kill(ignores.container_name, "SIGINT")
    time.sleep(1.0)
    state = api.state(ignores.container_name)
    assert state is not None and state.running
    api.kill(ignores.container_name, "SIGKILL")
    assert wait(api, ignores.container_name) == 137
    follower.end()


def test_remove_running_or_gone_and_state_of_nothing(api: ApiEngine, cluster: Cluster, tmp_path: Path) -> None:
    task = make_task(entrypoint=["sleep", "600"])
    start(api, task, tmp_path)
    assert task.container_name in cluster.containers("local", all=False)
    assert api.remove(task.container_name) is True
    assert task.container_name not in cluster.containers("local")
    assert api.remove(task.container_name) is True  # not there: gone all the same
    assert api.state(task.container_name) is None
    assert api.exit_code(task.container_name) is None
    assert api.daemon_answers()


def test_remove_through_the_cli_says_whether_the_container_is_gone(
    cli: CliEngine, cluster: Cluster, tmp_path: Path
) -> None:
    task = make_task(entrypoint=["sleep", "600"])
    start(cli, task, tmp_path)
    assert cli.remove(task.container_name) is True
    assert task.container_name not in cluster.containers("local")
    assert cli.remove(task.container_name) is True  # not there: gone all the same
    unreachable = CliEngine(DockerAccess(("docker",), f"unix://{tmp_path}/no-daemon.sock"))
    assert unreachable.remove(task.container_name) is False


def test_a_container_over_its_memory_limit_is_reported_oom_killed(api: ApiEngine, tmp_path: Path) -> None:
    task = make_task(image=PY, entrypoint=["python3", "-c", "hog = b'x' * (512 << 20)"], memory_limit_bytes=64 << 20)
    start(api, task, tmp_path)
    assert wait(api, task.container_name) == 137
    state = api.state(task.container_name)
    assert state is not None and state.oom_killed and state.exit_code == 137


def test_a_missing_image_and_a_name_in_use_read_as_the_cli_says_them(
    api: ApiEngine, cli: CliEngine, tmp_path: Path
) -> None:
    """The runner tells these apart by Docker's words: "No such image" (pull, then start
    again) and "is already in use" (remove, then start again)."""
    missing = make_task(image="distproc-test:absent")
    status, err = start_failing(api, missing, tmp_path)
    assert status == 125 and runner._missing_image(err), err
    assert err.startswith("docker: Error response from daemon: No such image: distproc-test:absent")
    cli_status, cli_err = start_failing(cli, missing, tmp_path)
    assert runner._missing_image(cli_err) and cli_status == 125
    assert not (tmp_path / "container.env").exists()

    task = make_task(entrypoint=["sleep", "600"])
    start(api, task, tmp_path)
    status, err = start_failing(api, task, tmp_path)
    assert status == 125 and "is already in use" in err, err
    api.remove(task.container_name)
    start(api, task, tmp_path)  # the name is free again
    api.remove(task.container_name)


def test_a_container_that_cannot_start_gives_the_cli_status_and_words(
    api: ApiEngine, cli: CliEngine, tmp_path: Path
) -> None:
    task = make_task(entrypoint=["/no/such/program"])
    before = set(threading.enumerate())
    status, err = start_failing(api, task, tmp_path)
    # The API attached before the start that failed: that stream is cut, not left reading.
    assert not [t for t in set(threading.enumerate()) - before if t.name == "docker-output"]
    api.remove(task.container_name)
    cli_status, cli_err = start_failing(cli, task, tmp_path)
    api.remove(task.container_name)
    assert status == cli_status == 127, (err, cli_err)
    assert "no such file or directory" in err and "/no/such/program" in err
    assert err.startswith("docker: Error response from daemon: ")
    assert engine_mod.docker_error_text(cli_err).startswith("docker: Error response from daemon: ")


@pytest.mark.parametrize(
    "entrypoint, arguments, argv",
    [
        (None, None, ["from-entrypoint", "from-cmd"]),
        (["/usr/local/bin/probe", "e1"], None, ["e1"]),
        (None, ["a1", "a 2"], ["from-entrypoint", "a1", "a 2"]),
        (["/usr/local/bin/probe", "e1"], ["a1"], ["e1", "a1"]),
    ],
    ids=["neither", "entrypoint-only", "arguments-only", "both"],
)
def test_the_daemon_merges_entrypoint_and_cmd_as_the_contract_says(
    api: ApiEngine,
    cli: CliEngine,
    tmp_path: Path,
    entrypoint: list[str] | None,
    arguments: list[str] | None,
    argv: list[str],
) -> None:
    """The image: ENTRYPOINT [probe, from-entrypoint], CMD [from-cmd]. Through the API and
    through `docker run`, the container sees the same argv."""
    seen = []
    for engine in (api, cli):
        task = make_task(image=PY, entrypoint=entrypoint, arguments=arguments)
        start(engine, task, tmp_path)
        assert wait(engine, task.container_name) == 0
        out = logs(engine, task.container_name, tmp_path / f"{engine.kind}.log")
        engine.remove(task.container_name)
        seen.append(json.loads(out.decode().strip().splitlines()[-1])["argv"])
    assert seen[0] == seen[1] == ["/usr/local/bin/probe", *argv]


def test_hostname_extra_hosts_env_mount_and_labels_reach_the_container(
    api: ApiEngine, cluster: Cluster, tmp_path: Path
) -> None:
    env = [["PLAIN", "v"], ["NL", "line one\nline two"], ["Q", 'it\'s "q" $(x)']]
    task = make_task(
        image=PY,
        entrypoint=[
            "python3",
            "-c",
            "import json, os, socket; print(json.dumps({'host': socket.gethostname(), "
            "'algo1': socket.gethostbyname('algo-1'), 'env': {k: os.environ.get(k) for k in ('PLAIN', 'NL', 'Q')}, "
            "'ml': os.listdir('/opt/ml')}))",
        ],
        environment=env,
    )
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "marker").write_text("x")
    start(api, task, tmp_path)
    assert wait(api, task.container_name) == 0
    seen = json.loads(logs(api, task.container_name, tmp_path / "c.log"))
    assert seen == {"host": "algo-1", "algo1": "127.0.0.1", "env": dict(env), "ml": ["marker"]}
    inspect = json.loads(cluster.docker("local", "container", "inspect", task.container_name).stdout)[0]
    labels = inspect["Config"]["Labels"]  # the image's own, plus ours
    assert (labels["distproc.job"], labels["distproc.algo"]) == (task.job_name, "algo-1")
    assert inspect["HostConfig"]["NetworkMode"] == "host"
    assert not (tmp_path / "container.env").exists()


# --- the whole agent run, on h1 ---


def _jobdir(tmp_path: Path, task_doc_: dict[str, Any]) -> JobDir:
    root = tmp_path / "work" / "jobs" / task_doc_["job_name"] / task_doc_["algo"]
    root.mkdir(parents=True, mode=0o700)
    (root / "task.json").write_text(json.dumps(task_doc_))
    (root / "task.json").chmod(0o600)
    (root / "ml" / "output").mkdir(parents=True)
    (root / "ml" / "processing" / "in").mkdir(parents=True)
    return JobDir(str(root))


def _agent_run(jobdir: JobDir) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "distproc.agent", "run", jobdir.root],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _events(jobdir: JobDir) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(jobdir.events).read_text().splitlines()]


@pytest.mark.parametrize("command, kind", [(["docker"], "api"), (["env", "docker"], "cli")], ids=["api", "cli"])
def test_the_agent_runs_a_job_through_either_engine(
    cluster: Cluster, tmp_path: Path, command: list[str], kind: str
) -> None:
    """Environment (newlines included), output, message and exit code; no env file, no container left."""
    h1 = cluster.hosts[0]
    doc = task_doc(
        job_name="engt-run-" + kind,
        algo="algo-1",
        add_hosts=[["algo-1", h1.address]],
        image=PY,
        entrypoint=[
            "python3",
            "-c",
            "import os, sys, time; print(repr(os.environ['NL']), flush=True); time.sleep(0.3); "
            "print('to-err', file=sys.stderr, flush=True); "
            "open('/opt/ml/output/message', 'w').write('done ' + os.environ['A']); sys.exit(4)",
        ],
        environment=[["A", "1"], ["NL", "x\ny"]],
        docker={"command": command, "host": h1.docker_host},
        metrics_interval_seconds=0,
    )
    jobdir = _jobdir(tmp_path, doc)
    result = _agent_run(jobdir)
    assert (result["status"], result["exit_code"], result["message"]) == ("Failed", 4, "done 1")
    assert result["error"] is None
    assert Path(jobdir.log).read_text() == "'x\\ny'\nto-err\n"
    kinds = [(e["kind"], e.get("docker")) for e in _events(jobdir)]
    assert ("container_started", kind) in kinds
    assert ("image_ready", None) in kinds
    assert not os.path.exists(jobdir.env_file)
    assert f"distproc-engt-run-{kind}-algo-1" not in cluster.containers(h1)
    # Said in the result, so the job's cleanup does not ask Docker again.
    assert result["container_removed"] is True


def test_the_agent_pulls_a_missing_image_and_fails_with_client_error(cluster: Cluster, tmp_path: Path) -> None:
    h1 = cluster.hosts[0]
    doc = task_doc(
        job_name="engt-noimage",
        algo="algo-1",
        image="distproc-test:absent",
        docker={"command": ["docker"], "host": h1.docker_host},
        metrics_interval_seconds=0,
    )
    jobdir = _jobdir(tmp_path, doc)
    result = _agent_run(jobdir)
    assert result["error_class"] == "ClientError"
    assert result["error"].startswith("cannot pull image distproc-test:absent"), result["error"]
    assert [e["kind"] for e in _events(jobdir)][-2:] == ["image_pull_started", "finished"]


def _sleeping_on(host: Any, job_name: str) -> dict[str, Any]:
    """A task document: a container that sleeps for ten minutes on `host`'s daemon, through its API."""
    return task_doc(
        job_name=job_name,
        algo="algo-1",
        image=SH,
        entrypoint=["sleep", "600"],
        add_hosts=[["algo-1", host.address]],
        docker={"command": ["docker"], "host": host.docker_host},
    )


def test_a_stop_with_no_agent_kills_by_identity_through_the_api(cluster: Cluster, tmp_path: Path) -> None:
    """`agent stop` on a job whose runner is gone: the container is killed and removed, the result written."""
    h1 = cluster.hosts[0]
    jobdir = _jobdir(tmp_path, _sleeping_on(h1, "engt-orphan"))
    task = jobdir.load_task()
    engine = for_access(task.docker)
    assert isinstance(engine, ApiEngine)
    start(engine, task, tmp_path)
    assert runner.request_stop(jobdir, "test") == {"state": "killed-without-agent"}
    assert task.container_name not in cluster.containers(h1)
    result = json.loads(Path(jobdir.result).read_text())
    assert result["status"] == "Stopped" and result["stop_reason"] == "test"


def test_cleanup_removes_the_container_unless_the_run_said_it_had(cluster: Cluster, tmp_path: Path) -> None:
    """A run that ended by itself removed its container and said so: cleanup asks Docker nothing more.
    A run that did not say so (killed, say) may have left it: cleanup removes it."""
    from distproc.agent.cli import cleanup_job

    h1 = cluster.hosts[0]
    doc = _sleeping_on(h1, "engt-cleanup")
    jobdir = _jobdir(tmp_path, doc)
    task = jobdir.load_task()
    start(for_access(task.docker), task, tmp_path)
    Path(jobdir.result).write_text(json.dumps({"status": "Completed", "container_removed": True}))
    assert cleanup_job(jobdir)["removed"] is True
    assert task.container_name in cluster.containers(h1, all=False), "taken at its word: Docker not asked"

    jobdir = _jobdir(tmp_path / "again", doc)
    Path(jobdir.result).write_text(json.dumps({"status": "Failed", "container_removed": False}))
    assert cleanup_job(jobdir)["removed"] is True
    assert task.container_name not in cluster.containers(h1)
