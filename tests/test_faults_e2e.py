"""Faults injected into one host mid-job, on the 3-host cluster (tests/faults.py).

Each test ends with a true status, a FailureReason naming the host and the
cause, and, through the `env` fixture, no container and no lease left on any
host (checked with each host's own Docker daemon, not through distproc).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import faults
from tests.cluster import Cluster
from tests.test_e2e import Env, env, job_doc, running_everywhere, wait_until  # noqa: F401

pytestmark = pytest.mark.cluster

# Prints one line, then waits for the test to release it (or to be stopped).
HOLD = (
    "import json, os, time\n"
    "me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
    "print('up', me, flush=True)\n"
    "while not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"
    "print('released', me, flush=True)\n"
)

# Short windows so each fault plays out in seconds rather than minutes.
FAST = ("--reconnect-window", "5", "--orphan-timeout", "15", "--stop-grace", "2")


def _job_dir(cluster: Cluster, job: str, k: int) -> Path:
    return cluster.hosts[k - 1].work_dir / "jobs" / job / f"algo-{k}"


def _release(cluster: Cluster, job: str) -> None:
    for k in range(1, len(cluster.hosts) + 1):
        (_job_dir(cluster, job, k) / "ml" / "processing" / "input" / "code" / "release").write_text("")


def _start(env: Env, name: str, *flags: str, environment: dict[str, str] | None = None) -> subprocess.Popen[str]:
    entry, code_input = env.script(name, HOLD)
    doc = job_doc(name, entrypoint=entry, inputs=[code_input], environment=environment)
    run = env.start("run", "-i", str(env.inventory), *flags, str(env.write_job(doc)))
    wait_until(running_everywhere(env.cluster, name), "containers to run everywhere", process=run)
    return run


def _finish(run: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    out, err = run.communicate(timeout=timeout)
    return run.returncode, out, err


def _statuses(described: dict[str, Any]) -> dict[str, str]:
    return {h["Host"]: h["Status"] for h in described["Distproc"]["Hosts"]}


def _host_result(cluster: Cluster, job: str, k: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((_job_dir(cluster, job, k) / "result.json").read_text())
    return doc


def _gone_from(cluster: Cluster, host: str, job: str) -> bool:
    return not any(job in name for name in cluster.containers(host))


def test_a_network_cut_mid_job_fails_the_job_and_the_host_stops_its_own_container(env: Env, cluster: Cluster) -> None:
    """h2's link goes down: the job fails naming h2 and the lost contact, the others are stopped,
    and h2's agent, followed by nobody, stops its container after the orphan timeout."""
    run = _start(env, "netcut", *FAST)
    with faults.network_cut(cluster, "h2"):
        code, _, err = _finish(run)
        assert code == 1, err
        described = env.describe("netcut")
        assert described["ProcessingJobStatus"] == "Failed"
        assert described["FailureReason"].startswith(
            "InternalServerError: algo-2 (h2): lost contact with the host for 5 s while its container ran"
        ), described["FailureReason"]
        assert "stops the container once no coordinator has followed it for 15 s" in described["FailureReason"]
        assert _statuses(described) == {"algo-1": "Stopped", "algo-2": "Failed", "algo-3": "Stopped"}
        # Cut off from everyone, h2 still runs the container until its own orphan timeout.
        wait_until(lambda: _gone_from(cluster, "h2", "netcut"), "h2's agent to stop its orphaned container", 120)
        result = _host_result(cluster, "netcut", 2)
        assert result["stopped"] is True
        assert "no coordinator followed the job" in result["stop_reason"]
        assert not (cluster.host("h2").work_dir / "lease.json").exists(), "the orphaned host gave its lease back"


def test_sshd_killed_and_back_within_the_window_the_job_completes(env: Env, cluster: Cluster) -> None:
    """Every sshd of h2 killed mid-job, then started again: the coordinator reconnects, the job
    completes, and no output line is lost or repeated."""
    run = _start(env, "sshdback")
    wait_until(lambda: env.cli("logs", "sshdback").stdout.count("up algo") == 3, "the first lines in the logs")
    try:
        faults.kill_sshd("h2")
        assert running_everywhere(cluster, "sshdback")(), "containers do not depend on sshd"
    finally:
        faults.start_sshd(cluster, "h2")
    _release(cluster, "sshdback")
    code, _out, err = _finish(run)
    assert code == 0, err
    assert "reconnecting" in err
    assert env.describe("sshdback")["ProcessingJobStatus"] == "Completed"
    h2_log = env.cli("logs", "sshdback", "--host", "algo-2").stdout
    assert h2_log.count("up algo-2") == 1 and h2_log.count("released algo-2") == 1, h2_log


def test_sshd_killed_for_good_fails_the_job_naming_the_host(env: Env, cluster: Cluster) -> None:
    """Every sshd of h2 killed and left dead: the job fails naming h2 and the refused connection;
    h2's agent stops its container after the orphan timeout."""
    run = _start(env, "sshddead", *FAST)
    try:
        faults.kill_sshd("h2")
        code, _, err = _finish(run)
        assert code == 1, err
        described = env.describe("sshddead")
        reason = described["FailureReason"]
        assert reason.startswith("InternalServerError: algo-2 (h2): lost contact with the host for 5 s"), reason
        assert "refused" in reason.lower() or "connection lost" in reason.lower(), reason
        assert _statuses(described) == {"algo-1": "Stopped", "algo-2": "Failed", "algo-3": "Stopped"}
        wait_until(lambda: _gone_from(cluster, "h2", "sshddead"), "h2's agent to stop its orphaned container", 120)
        assert "no coordinator followed the job" in _host_result(cluster, "sshddead", 2)["stop_reason"]
    finally:
        faults.start_sshd(cluster, "h2")


def test_dockerd_killed_mid_job_fails_the_job_naming_the_host_and_the_daemon(env: Env, cluster: Cluster) -> None:
    """h2's dockerd killed with SIGKILL and started again: the agent notices through `docker wait`,
    waits for the daemon, and the job fails naming h2 and its Docker daemon; nothing is left."""
    run = _start(env, "dockerdead", "--stop-grace", "2")
    try:
        faults.kill_dockerd("h2")
    finally:
        faults.start_dockerd("h2")
    code, _, err = _finish(run)
    assert code == 1, err
    described = env.describe("dockerdead")
    reason = described["FailureReason"]
    assert reason.startswith(
        "InternalServerError: algo-2 (h2): the host's Docker daemon stopped while the container ran"
    ), reason
    assert _statuses(described) == {"algo-1": "Stopped", "algo-2": "Failed", "algo-3": "Stopped"}
    events = (_job_dir(cluster, "dockerdead", 2) / "events.jsonl").read_text()
    assert '"docker_unreachable"' in events and '"docker_back"' in events


def test_a_container_killed_for_memory_fails_the_job_as_an_algorithm_error(env: Env, cluster: Cluster) -> None:
    """With distproc_memory_limit 64m, algo-2 allocates 512 MiB: the kernel kills it and the
    FailureReason says so, with the limit; the other hosts are stopped."""
    inventory = cluster.write_inventory(env.data / "limited.yaml", group_vars={"distproc_memory_limit": "64m"})
    code_text = (
        "import json, time\n"
        "me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "if me == 'algo-2':\n"
        "    hog = b'x' * (512 << 20)\n"
        "time.sleep(300)\n"
    )
    entry, code_input = env.script("oom", code_text)
    doc = job_doc("oom", entrypoint=entry, inputs=[code_input])
    result = env.cli("run", "-i", str(inventory), "--stop-grace", "2", str(env.write_job(doc)), timeout=240)
    assert result.returncode == 1, result.stderr
    described = env.describe("oom")
    assert described["FailureReason"] == (
        "AlgorithmError: algo-2 (h2): the kernel killed the container for using more than its memory "
        "limit of 64 MiB (distproc_memory_limit) (out of memory, exit code 137)"
    )
    assert _statuses(described) == {"algo-1": "Stopped", "algo-2": "Failed", "algo-3": "Stopped"}


def test_a_host_unreachable_at_start_with_no_spare_fails_before_anything_runs(env: Env, cluster: Cluster) -> None:
    """h2 refuses SSH when the job starts and there is no spare: nothing runs anywhere, the
    FailureReason names h2 and the cause, and h1's and h3's leases are given back."""
    faults.kill_sshd("h2")
    try:
        doc = job_doc("nostart", entrypoint=["python3", "-c", "print('never')"])
        result = env.run_job(doc)
    finally:
        faults.start_sshd(cluster, "h2")
    assert result.returncode == 1, result.stderr
    described = env.describe("nostart")
    reason = described["FailureReason"]
    assert reason.startswith("InternalServerError: too few free hosts: the job needs 3 x ml.m5.xlarge, 2 could"), reason
    assert "h2: " in reason and "refused" in reason.lower(), reason
    for host in ("h1", "h3"):
        assert not (cluster.host(host).work_dir / "jobs" / "nostart").exists(), f"{host} was prepared"
