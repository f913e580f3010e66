"""`run --wait-for-hosts` on the 3-host cluster: jobs wait for busy hosts, in order of arrival.

Every job here needs all three hosts, so each one waits for the whole job
before it. The jobs that hold their hosts wait for a file the test writes
(HOLD); the test moves on when the job store shows the state it waits for.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.cluster import Cluster
from tests.cluster.jobs import Env, job_doc, wait_until

pytestmark = pytest.mark.cluster

HOLD = "import os, time\nwhile not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"
BUSY = "waiting for 3 hosts of ml.m5.xlarge: "


def _names_all(reason: str, cluster: Cluster) -> bool:
    """Whether the reason names every host: hosts failing alike are said once, as "h1..3" or "h1, h3"."""
    spelled = re.sub(
        r"\bh(\d+)\.\.(\d+)\b", lambda m: ", ".join(f"h{i}" for i in range(int(m[1]), int(m[2]) + 1)), reason
    )
    return all(re.search(rf"\b{h.name}\b", spelled) for h in cluster.hosts)


def _release(cluster: Cluster, job: str) -> None:
    for k, host in enumerate(cluster.hosts, start=1):
        code = host.work_dir / "jobs" / job / f"algo-{k}" / "ml" / "processing" / "input" / "code"
        if code.is_dir():
            (code / "release").write_text("")


def _field(env: Env, name: str, *keys: str) -> object:
    """A member of the job's describe document, or None while the job is not recorded yet."""
    if env.cli("describe", name).returncode != 0:
        return None
    doc: object = env.describe(name)
    for key in keys:
        assert isinstance(doc, dict)
        doc = doc.get(key)
    return doc


def _running(env: Env, name: str) -> bool:
    hosts = _field(env, name, "Distproc", "Hosts")
    return isinstance(hosts, list) and len(hosts) == 3 and all(h["Status"] == "InProgress" for h in hosts)


def _holding(env: Env, name: str, *extra: str) -> subprocess.Popen[str]:
    entry, code_input = env.script(name, HOLD)
    doc = job_doc(name, count=3, entrypoint=entry, inputs=[code_input])
    return env.start("run", "-i", str(env.inventory), "--no-live", *extra, str(env.write_job(doc)))


def test_waiting_jobs_start_when_the_hosts_are_given_back_in_order_of_arrival(env: Env, cluster: Cluster) -> None:
    a = _holding(env, "wait-a")
    b: subprocess.Popen[str] | None = None
    c: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: _running(env, "wait-a"), "job A to hold every host", process=a)

        # Without the flag: as before, a busy host fails the job at once.
        now = env.run_job(job_doc("wait-none", count=3, entrypoint=["true"]))
        assert now.returncode == 1, now.stderr
        reason = str(_field(env, "wait-none", "FailureReason"))
        assert reason.startswith("ClientError: too few free hosts: the job needs 3 x ml.m5.xlarge, 0 could be had")

        # A limit shorter than A: it fails naming the busy hosts and how long it waited.
        short = env.run_job(job_doc("wait-short", count=3, entrypoint=["true"]), "--wait-for-hosts=2")
        assert short.returncode == 1, short.stderr
        reason = str(_field(env, "wait-short", "FailureReason"))
        assert reason.startswith("ClientError: too few free hosts: the job needs 3 x ml.m5.xlarge, 0 could be had; ")
        assert "busy with job wait-a (lease renewed" in reason and _names_all(reason, cluster), reason
        assert re.search(r"; gave up after waiting \d+ s for them \(the wait's limit: 2 s\)$", reason), reason
        assert _field(env, "wait-short", "Distproc", "Hosts") == []

        # B waits for A's hosts; C, arriving later, waits behind B.
        b = _holding(env, "wait-b", "--wait-for-hosts")
        wait_until(lambda: _field(env, "wait-b", "Distproc", "WaitingFor") is not None, "B to wait", process=b)
        said = str(_field(env, "wait-b", "Distproc", "WaitingFor"))
        assert said == BUSY + ", ".join(f"{h.name} busy with job wait-a" for h in cluster.hosts)
        assert _field(env, "wait-b", "ProcessingJobStatus") == "InProgress"
        assert env.cli("describe", "wait-b").stdout.count(f"WaitingFor:     {said}") == 1
        c = env.start(
            "run", "-i", str(env.inventory), "--wait-for-hosts=600", "--no-live",
            str(env.write_job(job_doc("wait-c", count=3, entrypoint=["true"]))),
        )  # fmt: skip
        behind = "waiting behind job wait-b, which arrived earlier and wait for the same hosts"
        wait_until(lambda: _field(env, "wait-c", "Distproc", "WaitingFor") == behind, "C to wait behind B", process=c)

        _release(cluster, "wait-a")
        _, err = a.communicate(timeout=120)
        assert a.returncode == 0, err
        wait_until(lambda: _running(env, "wait-b"), "B to run on the hosts A gave back", process=b)
        # C now waits for B's hosts, not for B's turn.
        wait_until(
            lambda: str(_field(env, "wait-c", "Distproc", "WaitingFor")).startswith(BUSY + f"{cluster.hosts[0].name}"),
            "C to wait for B's hosts",
            process=c,
        )
        assert "busy with job wait-b" in str(_field(env, "wait-c", "Distproc", "WaitingFor"))
        assert _field(env, "wait-c", "Distproc", "Hosts") == []

        _release(cluster, "wait-b")
        _, err_b = b.communicate(timeout=120)
        assert b.returncode == 0, err_b
        assert "waiting for hosts" in err_b and BUSY in err_b  # the log line on B's terminal
        _, err_c = c.communicate(timeout=120)
        assert c.returncode == 0, err_c
    finally:
        _release(cluster, "wait-a")
        _release(cluster, "wait-b")
        for p in (a, b, c):
            if p is not None and p.poll() is None:
                p.communicate(timeout=120)
    doc_b, doc_c = env.describe("wait-b"), env.describe("wait-c")
    assert doc_b["ProcessingJobStatus"] == doc_c["ProcessingJobStatus"] == "Completed"
    assert doc_b["Distproc"]["WaitingFor"] is None and doc_c["Distproc"]["WaitingFor"] is None
    assert doc_c["ProcessingStartTime"] >= doc_b["ProcessingEndTime"]  # served after B, as it arrived
    for host in cluster.hosts:
        assert not (host.work_dir / "lease.json").exists(), f"lease left on {host.name}"


def test_a_job_waiting_for_hosts_is_stopped_cleanly(env: Env, cluster: Cluster) -> None:
    a = _holding(env, "hold-s")
    w: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: _running(env, "hold-s"), "the holding job to run", process=a)
        w = env.start(
            "run", "-i", str(env.inventory), "--wait-for-hosts", "--no-live",
            str(env.write_job(job_doc("wait-s", count=3, entrypoint=["true"]))),
        )  # fmt: skip
        wait_until(lambda: _field(env, "wait-s", "Distproc", "WaitingFor") is not None, "the job to wait", process=w)
        stop = env.cli("stop", "wait-s")
        assert stop.returncode == 0, stop.stderr
        _, err = w.communicate(timeout=60)
        assert w.returncode != 0, err
        doc = env.describe("wait-s")
        assert (doc["ProcessingJobStatus"], doc["Distproc"]["StopReason"]) == (
            "Stopped",
            "stopped by request (distproc stop)",
        )
        assert doc["Distproc"]["Hosts"] == [] and doc["Distproc"]["WaitingFor"] is None
        assert _running(env, "hold-s")  # the holder was never touched
    finally:
        _release(cluster, "hold-s")
        _, err = a.communicate(timeout=120)
        if w is not None and w.poll() is None:
            w.kill()
    assert a.returncode == 0, err
