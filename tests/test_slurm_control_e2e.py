"""A Slurm job seen and stopped from another shell, as a fleet job is (`describe`, `stop`, the timeline).

End to end on the real Slurm test cluster (tests/slurm/): `distproc run
--inventory slurm-cluster.yaml` in one subprocess, `distproc describe` and
`distproc stop` in others, which know the job only from the job store (the
backend it ran on and its Slurm job id are recorded there). No mocks.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from distproc.store.db import Store
from tests.cluster.constants import BUSYBOX_IMAGE
from tests.cluster.jobs import wait_until
from tests.slurm import SlurmCluster
from tests.slurm.docker import DOCKER_HOST_TEMPLATE

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]

EXIT_FAILED = 1
EXIT_STOPPED = 3


class Shell:
    """`distproc` commands against one job store and the test cluster, as a user's shells would run them."""

    def __init__(self, slurm: SlurmCluster, tmp_path: Path) -> None:
        self.slurm = slurm
        self.home = tmp_path / "home"
        self.env = {**os.environ, "SLURM_CONF": str(slurm.conf), "DISTPROC_HOME": str(self.home)}
        body = {
            "submit": {"ansible_connection": "local"},
            "instance_types": {"ml.m5.xlarge": slurm.partition},
            "docker_host": DOCKER_HOST_TEMPLATE,
            "work_dir": str(slurm.local_dir / "work"),  # node-local: no shared filesystem assumed
            "python": "/usr/bin/python3",
        }
        self.inventory = tmp_path / "slurm-cluster.yaml"
        self.inventory.write_text(yaml.safe_dump({"slurm": body}))
        self.tmp_path = tmp_path

    def start_run(self, name: str, count: int, script: str) -> subprocess.Popen[str]:
        job = {
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count}},
            "AppSpecification": {"ImageUri": BUSYBOX_IMAGE, "ContainerEntrypoint": ["sh", "-c", script]},
        }
        path = self.tmp_path / f"{name}.json"
        path.write_text(json.dumps(job))
        return subprocess.Popen(
            [sys.executable, "-m", "distproc", "run", "--no-live", "--inventory", str(self.inventory), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distproc", *args],
            capture_output=True,
            text=True,
            timeout=180,
            env=self.env,
            check=False,
        )

    def describe(self, name: str) -> dict[str, Any] | None:
        """The job's `describe --json` document, None while it is not recorded yet."""
        out = self.cli("describe", name, "--json")
        return json.loads(out.stdout) if out.returncode == 0 else None

    def in_queue(self, name: str) -> str:
        return self.slurm.run("squeue", "--noheader", "--states=PENDING,RUNNING", "--name", name).stdout.strip()


def hold_every_node(slurm: SlurmCluster) -> str:
    n = len(slurm.nodes)
    holder = slurm.run("sbatch", "--parsable", f"-N{n}", "-o", "/dev/null", "--wrap", "srun sleep 300").stdout.strip()
    slurm.wait_job(holder, {"RUNNING"})
    return holder


def test_a_pending_job_shows_slurms_reason_and_is_stopped_from_another_process(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    shell = Shell(slurm, tmp_path)
    reason = f"waiting for {n} nodes in partition {slurm.partition}: Resources"
    holder = hold_every_node(slurm)
    try:
        run = shell.start_run("slurm-stop-pending", n, "echo never")
        try:

            def waiting() -> bool:
                doc = shell.describe("slurm-stop-pending")
                return doc is not None and doc["Distproc"]["WaitingFor"] == reason

            wait_until(waiting, "describe to show Slurm's pending reason", timeout=120, process=run)
            doc = shell.describe("slurm-stop-pending")
            assert doc is not None
            assert doc["ProcessingJobStatus"] == "InProgress"
            assert doc["Distproc"]["Backend"] == "slurm"
            assert doc["Distproc"]["Queued"]["End"] is None  # still queued
            text = shell.cli("describe", "slurm-stop-pending").stdout
            assert f"WaitingFor:     {reason}" in text and "Status:         InProgress" in text
            # The store knows the Slurm job: another process finds and cancels it.
            job_id = str(Store(shell.home).get_job("slurm-stop-pending").backend["slurm_job_id"])
            assert slurm.job(job_id)["JobState"] == "PENDING"

            stop = shell.cli("stop", "slurm-stop-pending")
            assert stop.returncode == 0, stop.stderr
            assert f"cancelled Slurm job {job_id} while it was pending" in stop.stdout
            _, err = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
    finally:
        slurm.run("scancel", holder, check=False)
    assert run.returncode == EXIT_STOPPED, err
    assert "slurm-stop-pending: Stopped" in err
    assert shell.in_queue("slurm-stop-pending") == ""
    assert slurm.job(job_id).get("JobState", "CANCELLED") == "CANCELLED"
    doc = shell.describe("slurm-stop-pending")
    assert doc is not None
    assert doc["ProcessingJobStatus"] == "Stopped"
    assert doc["Distproc"]["StopReason"] == "stopped by request (distproc stop)"
    assert doc["Distproc"]["WaitingFor"] is None
    assert doc["Distproc"]["Hosts"] == []
    queued = doc["Distproc"]["Queued"]  # the wait in the queue, ended by the stop
    assert queued["End"] is not None and queued["Seconds"] >= 0


def test_a_running_job_is_stopped_from_another_process_and_leaves_nothing_behind(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    shell = Shell(slurm, tmp_path)
    name = "slurm-stop-running"
    # SIGINT does not end `sleep` in a shell that traps nothing: the agent's SIGKILL after the grace does.
    run = shell.start_run(name, n, "echo started; sleep 300")
    try:

        def running() -> bool:
            doc = shell.describe(name)
            hosts = doc["Distproc"]["Hosts"] if doc is not None else []
            return len(hosts) == n and all(h["Status"] == "InProgress" for h in hosts)

        wait_until(running, "every node's container to run", timeout=180, process=run)
        stop = shell.cli("stop", name)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert all(f"algo-{k}: " in stop.stdout for k in range(1, n + 1)), stop.stdout
        _, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == EXIT_STOPPED, err
    assert f"{name}: Stopped" in err
    doc = shell.describe(name)
    assert doc is not None
    assert doc["ProcessingJobStatus"] == "Stopped"
    assert doc["Distproc"]["StopReason"] == "stopped by request (distproc stop)"
    assert {h["Status"] for h in doc["Distproc"]["Hosts"]} == {"Stopped"}
    # No container left under any node's dockerd; no Slurm job left.
    for node, docker_host in slurm_docker.items():
        left = subprocess.run(
            ["docker", "-H", docker_host, "ps", "-aq", "--filter", f"name=distproc-{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert left == "", f"{node}: containers left: {left}"
    assert shell.in_queue(name) == ""
    # The queued phase (submission to allocation) is every host's first, before it connects.
    for host in doc["Distproc"]["Hosts"]:
        phases = {p["Phase"]: p for p in host["Timeline"]}
        assert phases["queued"]["End"] is not None, host["Timeline"]
        assert phases["queued"]["Start"] <= phases["queued"]["End"] <= phases["connect"]["Start"]
    assert doc["Distproc"]["Queued"]["Start"] == phases["queued"]["Start"]
    assert "queued" in shell.cli("describe", name, "--timeline").stdout.splitlines()[0]


def test_attach_takes_over_a_slurm_job_whose_run_died_and_gives_back_the_allocation(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    shell = Shell(slurm, tmp_path)
    name = "slurm-attach"
    # Each container ends once the test says so (a file it makes in it): the job outlives its `run`.
    go = "/tmp/go"
    script = f"echo started; while [ ! -e {go} ]; do sleep 0.2; done; echo finished"
    run = shell.start_run(name, n, script)
    try:

        def running() -> bool:
            doc = shell.describe(name)
            hosts = doc["Distproc"]["Hosts"] if doc is not None else []
            return len(hosts) == n and all(h["Status"] == "InProgress" for h in hosts)

        wait_until(running, "every node's container to run", timeout=180, process=run)
    finally:
        run.kill()  # SIGKILL: the coordinator dies, the agents carry on
        run.communicate()
    described = shell.cli("describe", name)
    assert f"distproc attach {name}" in described.stderr
    attach = subprocess.Popen(
        [sys.executable, "-m", "distproc", "attach", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=shell.env,
    )
    try:
        wait_until(lambda: Store(shell.home).get_job(name).coordinator_pid == attach.pid, "attach to take over")
        for host in Store(shell.home).get_job(name).hosts:  # let every container end
            docker = ["docker", "-H", slurm_docker[host.host]]
            subprocess.run(
                [*docker, "exec", f"distproc-{name}-{host.algo}", "touch", go], capture_output=True, check=True
            )
        _, err = attach.communicate(timeout=180)
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.communicate()
    assert attach.returncode == 0, err
    assert f"{name}: Completed" in err
    for k in range(1, n + 1):
        assert f"[algo-{k}] finished" in shell.cli("logs", name, "--host", f"algo-{k}").stdout
    # attach, not run, ended the job: the allocation went with it, and no container is left.
    assert shell.in_queue(name) == ""
    for node, docker_host in slurm_docker.items():
        left = subprocess.run(
            ["docker", "-H", docker_host, "ps", "-aq", "--filter", f"name=distproc-{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert left == "", f"{node}: containers left: {left}"


def test_stop_of_a_running_job_whose_run_died_cancels_the_allocation_and_records_it_stopped(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    shell = Shell(slurm, tmp_path)
    name = "slurm-stop-orphan"
    run = shell.start_run(name, n, "echo started; sleep 300")
    try:

        def running() -> bool:
            doc = shell.describe(name)
            hosts = doc["Distproc"]["Hosts"] if doc is not None else []
            return len(hosts) == n and all(h["Status"] == "InProgress" for h in hosts)

        wait_until(running, "every node's container to run", timeout=180, process=run)
    finally:
        run.kill()  # SIGKILL: nobody is left to cancel the allocation
        run.communicate()
    assert shell.in_queue(name) != ""  # the allocation outlives its run
    stop = shell.cli("stop", name)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "allocation: cancelled" in stop.stdout, stop.stdout
    assert shell.in_queue(name) == ""
    for node, docker_host in slurm_docker.items():
        left = subprocess.run(
            ["docker", "-H", docker_host, "ps", "-aq", "--filter", f"name=distproc-{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert left == "", f"{node}: containers left: {left}"
    doc = shell.describe(name)
    assert doc is not None
    assert doc["ProcessingJobStatus"] == "Stopped"
    assert doc["Distproc"]["StopReason"] == "stopped by request (distproc stop)"
    assert {h["Status"] for h in doc["Distproc"]["Hosts"]} == {"Stopped"}
    # The nodes' leases went with the cleanup: the next job gets every node.
    again = shell.start_run("slurm-after-orphan", n, "echo again")
    _, err = again.communicate(timeout=240)
    assert again.returncode == 0, err


def _queued_then_orphaned(shell: Shell, name: str, n: int, script: str) -> str:
    """`distproc run` of the job until Slurm queues it behind a holder, then SIGKILL: its Slurm job id."""
    reason = f"waiting for {n} nodes in partition {shell.slurm.partition}: Resources"
    run = shell.start_run(name, n, script)
    try:

        def waiting() -> bool:
            doc = shell.describe(name)
            return doc is not None and doc["Distproc"]["WaitingFor"] == reason

        wait_until(waiting, "describe to show Slurm's pending reason", timeout=120, process=run)
    finally:
        run.kill()  # SIGKILL while queued: nobody is left to wait for the allocation
        run.communicate()
    job_id = str(Store(shell.home).get_job(name).backend["slurm_job_id"])
    assert shell.slurm.job(job_id)["JobState"] == "PENDING"  # the queued Slurm job outlives its run
    return job_id


def test_attach_takes_over_a_job_whose_run_died_while_queued_and_runs_it_once_slurm_allocates(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    shell = Shell(slurm, tmp_path)
    name = "slurm-attach-queued"
    holder = hold_every_node(slurm)
    try:
        job_id = _queued_then_orphaned(shell, name, n, "echo ran on $(hostname)")
        attach = subprocess.Popen(
            [sys.executable, "-m", "distproc", "attach", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=shell.env,
        )
        try:
            wait_until(
                lambda: Store(shell.home).get_job(name).coordinator_pid == attach.pid,
                "attach to take over the queued job",
                process=attach,
            )
            # It waits for the recorded Slurm job: it submitted no second one.
            queue = slurm.run("squeue", "--noheader", "--name", name, "--format=%i %T").stdout.split()
            assert queue == [job_id, "PENDING"]
            slurm.run("scancel", holder)
            _, err = attach.communicate(timeout=240)
        finally:
            if attach.poll() is None:
                attach.kill()
                attach.communicate()
    finally:
        # Nothing left to hold the nodes from the next test, whatever happened (the job too).
        slurm.run("scancel", holder, check=False)
        slurm.run("scancel", "--name", name, check=False)
    assert attach.returncode == 0, err
    assert f"{name}: Completed" in err
    assert f"waiting for {n} nodes in partition {slurm.partition}: Resources" in err  # Slurm's reason, as run shows it
    for k in range(1, n + 1):
        assert "ran on" in shell.cli("logs", name, "--host", f"algo-{k}").stdout
    doc = shell.describe(name)
    assert doc is not None
    assert doc["ProcessingJobStatus"] == "Completed"
    assert [h["Status"] for h in doc["Distproc"]["Hosts"]] == ["Completed"] * n
    assert doc["Distproc"]["WaitingFor"] is None
    assert doc["Distproc"]["Queued"]["End"] is not None  # the wait run began, ended by attach's allocation
    assert shell.in_queue(name) == ""
    for node, docker_host in slurm_docker.items():
        left = subprocess.run(
            ["docker", "-H", docker_host, "ps", "-aq", "--filter", f"name=distproc-{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert left == "", f"{node}: containers left: {left}"


def test_attach_of_a_queued_job_slurm_cancelled_meanwhile_records_it_failed_with_slurms_word(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    n = len(slurm.nodes)
    shell = Shell(slurm, tmp_path)
    name = "slurm-attach-vanished"
    holder = hold_every_node(slurm)
    try:
        job_id = _queued_then_orphaned(shell, name, n, "echo never")
        slurm.run("scancel", job_id)  # by hand, while nobody runs the job
        slurm.wait_job(job_id, {"CANCELLED"})
        attach = shell.cli("attach", name)
    finally:
        slurm.run("scancel", holder, check=False)
        slurm.run("scancel", "--name", name, check=False)
    assert attach.returncode == EXIT_FAILED, attach.stdout + attach.stderr
    why = f"InternalServerError: Slurm job {job_id} ended before it ran: CANCELLED"
    assert f"{name}: Failed" in attach.stderr and f"FailureReason: {why}" in attach.stderr, attach.stderr
    doc = shell.describe(name)
    assert doc is not None
    assert doc["ProcessingJobStatus"] == "Failed"
    assert doc["FailureReason"].startswith(why)
    assert doc["Distproc"]["Hosts"] == []
    assert doc["Distproc"]["WaitingFor"] is None
    assert doc["Distproc"]["Queued"]["End"] is not None
    assert shell.in_queue(name) == ""


class Terminal:
    """A pseudo-terminal a `distproc` subprocess writes to, as a user's would be; what it drew, escapes removed."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        # Read as it comes: a terminal nobody reads fills, and the writer blocks.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer closed its end
                return
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)

    def text(self) -> str:
        with self._lock:
            raw = b"".join(self._chunks).decode("utf-8", "replace")
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw).replace("\r", "")

    def done(self) -> str:
        """Everything drawn, once the writer has ended."""
        self._reader.join(timeout=30)
        os.close(self.master)
        return self.text()


def test_the_live_view_of_a_slurm_run_shows_slurms_reason_then_each_hosts_final_status(
    slurm: SlurmCluster, slurm_docker: Mapping[str, str], tmp_path: Path
) -> None:
    """`distproc run` on a terminal (a pty: both its streams are one): the live view, not plain lines."""
    n = len(slurm.nodes)
    shell = Shell(slurm, tmp_path)
    name = "slurm-live-view"
    job = {
        "ProcessingJobName": name,
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": n}},
        "AppSpecification": {"ImageUri": BUSYBOX_IMAGE, "ContainerEntrypoint": ["sh", "-c", "echo hello"]},
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(job))
    reason = f"queued: waiting for {n} nodes in partition {slurm.partition}: Resources"
    holder = hold_every_node(slurm)
    terminal = Terminal()
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "distproc", "run", "--inventory", str(shell.inventory), str(path)],
            stdin=subprocess.DEVNULL,
            stdout=terminal.slave,
            stderr=terminal.slave,
            env={**shell.env, "COLUMNS": "200", "TERM": "xterm"},
        )
        os.close(terminal.slave)  # the child holds it: its exit ends the reader
        try:
            wait_until(lambda: reason in terminal.text(), "the live view to show Slurm's reason", 120, run)
            slurm.run("scancel", holder)
            run.wait(timeout=240)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    finally:
        slurm.run("scancel", holder, check=False)
        slurm.run("scancel", "--name", name, check=False)
    drawn = terminal.done()
    assert run.returncode == 0, drawn
    assert f"{name}: Completed" in drawn
    assert drawn.index(reason) < drawn.index("algo-1")  # the wait in Slurm's queue is drawn before any host's row
    # The block's header and, last drawn, each host's row with its final status and exit code.
    assert re.search(r"^ALGO\s+HOST\s+PHASE\s+STAGED\s+ELAPSED\s+EXIT$", drawn, re.MULTILINE), drawn
    for k in range(1, n + 1):
        rows = re.findall(rf"^algo-{k}\s+(\S+)\s+(\S+).*\s(\S+)$", drawn, re.MULTILINE)
        assert rows, drawn
        host, status, code = rows[-1]
        assert host in {node.name for node in slurm.nodes} and (status, code) == ("Completed", "0"), rows[-1]
