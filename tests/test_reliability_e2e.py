"""Faults on the 3-host cluster: the coordinator killed mid-job, and the
status that comes out true, with the outputs kept and nothing left running."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from distproc.store.db import Store
from tests.cluster import Cluster
from tests.cluster.jobs import Env, file_output, job_doc, py, running_everywhere, wait_until

pytestmark = pytest.mark.cluster

# Writes an output, then waits for the test to release it.
HOLD = (
    "import json, os, time; me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
    "open('/opt/ml/processing/output/o/' + me, 'w').write(me)\n"
    "print('waiting', me, flush=True)\n"
    "while not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"
    "print('released', me, flush=True)\n"
)


def _release(cluster: Cluster, job: str) -> None:
    for k, host in enumerate(cluster.hosts, start=1):
        code = host.work_dir / "jobs" / job / f"algo-{k}" / "ml" / "processing" / "input" / "code"
        (code / "release").write_text("")


def _start_held(env: Env, cluster: Cluster, name: str, out_dir: Path, *run_args: str) -> subprocess.Popen[str]:
    """`distproc run [run_args]` of a HOLD job with its output to out_dir, once its containers run everywhere."""
    entry, code_input = env.script(name, HOLD)
    doc = job_doc(
        name,
        entrypoint=entry,
        inputs=[code_input],
        outputs=[file_output("o", str(out_dir), "/opt/ml/processing/output/o")],
    )
    run = env.start("run", *run_args, "-i", str(env.inventory), str(env.write_job(doc)))
    wait_until(running_everywhere(cluster, name), "containers to run", process=run)
    return run


def _kill_coordinator(run: subprocess.Popen[str]) -> None:
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=30)


def test_a_killed_coordinator_is_taken_over_by_attach(env: Env, cluster: Cluster) -> None:
    """SIGKILL on `run`: containers carry on, describe points at attach, attach finishes and records the job."""
    out_dir = env.data / "out"
    run = _start_held(env, cluster, "crash", out_dir)
    wait_until(lambda: env.cli("logs", "crash").stdout.count("waiting") == 3, "the output to reach the log files")
    _kill_coordinator(run)

    assert running_everywhere(cluster, "crash")(), "the containers outlive the coordinator"
    described = env.cli("describe", "crash")
    assert "InProgress" in described.stdout
    assert "distproc attach crash" in described.stderr

    attach = env.start("attach", "crash")
    try:
        _release(cluster, "crash")
        stdout, stderr = attach.communicate(timeout=120)
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.communicate()
    assert attach.returncode == 0, stderr
    # Output the agents produced after the crash reaches this attach, not what run already printed.
    assert stdout.count("released") == 3 and "waiting" not in stdout
    final = env.describe("crash")
    assert final["ProcessingJobStatus"] == "Completed"
    assert [h["ExitCode"] for h in final["Distproc"]["Hosts"]] == [0, 0, 0]
    assert sorted(p.name for p in out_dir.iterdir()) == ["algo-1", "algo-2", "algo-3"]
    log = env.cli("logs", "crash").stdout
    assert log.count("waiting") == 3 and log.count("released") == 3  # each line kept once
    # attach took over running containers: it says so once per host, and starts nothing twice.
    assert "container started" not in stderr and stderr.count("reattached to the running container") == 3, stderr
    started = [e["algo"] for e in Store(env.home).events("crash") if e["kind"] == "container_started"]
    assert sorted(started) == ["algo-1", "algo-2", "algo-3"]


def test_attach_carries_on_with_the_runs_options(env: Env, cluster: Cluster) -> None:
    """`run --stop-grace 3`, then SIGKILL: the attach that takes the job over stops it on Ctrl-C
    with the run's 3 s grace, not its own default (the job store keeps how `run` was asked to run it)."""
    run = _start_held(env, cluster, "graced", env.data / "graced-out", "--stop-grace", "3")
    _kill_coordinator(run)

    attach = env.start("attach", "graced")
    try:
        wait_until(
            lambda: Store(env.home).get_job("graced").coordinator_pid == attach.pid,
            "attach to take over",
            process=attach,
        )
        attach.send_signal(signal.SIGINT)  # Ctrl-C: attach stops the job, as run would have
        _, stderr = attach.communicate(timeout=120)
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.communicate()
    assert attach.returncode == 3, stderr  # Stopped
    assert "stopping job" in stderr and "grace_seconds=3.0" in stderr, stderr
    assert env.describe("graced")["ProcessingJobStatus"] == "Stopped"
    left = [h.name for k, h in enumerate(cluster.hosts, 1) if f"distproc-graced-algo-{k}" in cluster.containers(h)]
    assert left == []


def test_attach_is_refused_while_run_is_alive(env: Env, cluster: Cluster) -> None:
    """A job whose `run` still lives cannot be taken over; a finished one has nothing to attach to."""
    entry, code_input = env.script("alive", HOLD.replace("/opt/ml/processing/output/o/", "/tmp/"))
    run = env.start(
        "run", "-i", str(env.inventory), str(env.write_job(job_doc("alive", entrypoint=entry, inputs=[code_input])))
    )
    try:
        wait_until(running_everywhere(cluster, "alive"), "containers to run", process=run)
        refused = env.cli("attach", "alive")
        assert refused.returncode == 2
        assert f"still run by distproc pid {run.pid}" in refused.stderr
    finally:
        _release(cluster, "alive")
        run.communicate(timeout=120)
    assert run.returncode == 0
    done = env.cli("attach", "alive")
    assert done.returncode == 2 and "is Completed: there is nothing to attach to" in done.stderr


def test_max_runtime_holds_without_a_coordinator(env: Env, cluster: Cluster) -> None:
    """With the coordinator dead, the agents still enforce MaxRuntimeInSeconds; attach then records Stopped."""
    doc = job_doc("orphan", entrypoint=py("import time; time.sleep(300)"), max_runtime=4)
    run = env.start("run", "-i", str(env.inventory), "--stop-grace", "1", str(env.write_job(doc)))
    wait_until(running_everywhere(cluster, "orphan"), "containers to run", process=run)
    _kill_coordinator(run)
    started = time.monotonic()
    wait_until(lambda: all(cluster.containers(h) == [] for h in cluster.hosts), "the agents to end it", timeout=60)
    assert time.monotonic() - started < 30
    attach = env.cli("attach", "orphan")
    assert attach.returncode == 3, attach.stderr
    described = env.describe("orphan")
    assert described["ProcessingJobStatus"] == "Stopped"
    assert "MaxRuntimeInSeconds" in described["Distproc"]["StopReason"]
