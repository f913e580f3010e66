"""The warm agent (agent/warm.py) on the 3-host cluster: a second job on the same
hosts is served by it with no process started on the host, an sshd that forwards
to no socket falls back to the cold path, its socket and folder are private, and
it exits after its idle time.

Each test has work folders of its own (short paths: a Unix socket's is at most
107 bytes), so the warm agents of other tests neither help nor get in the way.
Each host's python is a wrapper that notes the agent verb it runs: the count is
of processes the host really started.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import faults
from tests.cluster import Cluster
from tests.cluster.jobs import Env, job_doc, running_everywhere, wait_until
from tests.cluster.process import _cmdline

pytestmark = pytest.mark.cluster


@dataclass
class Counted:
    """An inventory whose hosts have work folders of their own and count the agent processes they start."""

    inventory: Path
    work: dict[str, Path]
    calls: dict[str, Path]

    def started(self, host: str) -> Counter[str]:
        path = self.calls[host]
        return Counter(path.read_text().split()) if path.exists() else Counter()

    def reset(self) -> None:
        for path in self.calls.values():
            path.unlink(missing_ok=True)

    def warm_files(self, host: str, suffix: str) -> list[Path]:
        folder = self.work[host] / "agent" / "warm"
        return sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []

    def warm_pid(self, host: str) -> int:
        (pid_file,) = self.warm_files(host, ".pid")
        return int(pid_file.read_text())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


def _stop_warm_agents(counted: Counted) -> None:
    for host in counted.work:
        for pid_file in counted.warm_files(host, ".pid"):
            pid = int(pid_file.read_text())
            if _alive(pid) and "warm" in _cmdline(pid):
                os.kill(pid, signal.SIGTERM)
                wait_until(lambda pid=pid: not _alive(pid), f"{host}'s warm agent to exit")  # type: ignore[misc]


@pytest.fixture
def counted(env: Env, tmp_path: Path) -> Iterator[Counted]:
    root = Path(tempfile.mkdtemp(prefix="dpw-", dir="/tmp"))
    work = {h.name: root / h.name for h in env.cluster.hosts}
    calls = {h.name: tmp_path / f"calls-{h.name}.log" for h in env.cluster.hosts}
    extra = {}
    for h in env.cluster.hosts:
        work[h.name].mkdir()
        wrapper = tmp_path / f"python3-{h.name}"
        wrapper.write_text(
            f'#!/bin/sh\ncase "$1" in *distproc-agent-*) echo "$2" >> {calls[h.name]} ;; esac\n'
            'exec /usr/bin/python3 "$@"\n'
        )
        wrapper.chmod(0o755)
        extra[h.name] = {"ansible_python_interpreter": str(wrapper), "distproc_work_dir": str(work[h.name])}
    inventory = env.cluster.write_inventory(tmp_path / "counted.yaml", extra_host_vars=extra)
    result = Counted(inventory, work, calls)
    try:
        yield result
    finally:
        _stop_warm_agents(result)
        shutil.rmtree(root, ignore_errors=True)


def _run(env: Env, counted: Counted, name: str, count: int = 3) -> None:
    counted.reset()
    doc = job_doc(name, count=count, entrypoint=["sh", "-c", "echo hi"])
    result = env.cli("run", "--inventory", str(counted.inventory), str(env.write_job(doc)))
    assert result.returncode == 0, result.stderr


def test_a_second_job_is_served_by_the_warm_agent_and_the_hosts_start_no_agent(
    env: Env, counted: Counted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first job starts the agent cold (and with it the warm agent); the second asks the
    warm agent over a forwarded socket: no host starts an agent process, the warm agent is the
    same process on the same socket, and each job got its own folder and result."""
    monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", "600")
    _run(env, counted, "warmfirst")
    for host in counted.work:
        assert counted.started(host)["claim"] >= 1, counted.started(host)
    wait_until(lambda: all(counted.warm_files(h, ".sock") for h in counted.work), "the warm agents to listen")
    before = {h: (counted.warm_pid(h), counted.warm_files(h, ".sock")[0].stat().st_ino) for h in counted.work}

    _run(env, counted, "warmsecond")
    for k, host in enumerate(counted.work, 1):
        assert counted.started(host) == Counter(), f"{host} started an agent process: {counted.started(host)}"
        pid, inode = before[host]
        assert _alive(pid) and "warm" in " ".join(_cmdline(pid))
        assert (counted.warm_pid(host), counted.warm_files(host, ".sock")[0].stat().st_ino) == (pid, inode)
        record = counted.work[host] / "jobs" / "warmsecond" / f"algo-{k}"
        assert (record / "result.json").exists() and not (record / "task.json").exists()
    assert "hi" in env.cli("logs", "warmsecond").stdout


def test_the_warm_agent_socket_and_folder_are_private(
    env: Env, counted: Counted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Socket 0600 in a 0700 folder, both the SSH user's; the socket is named by the agent's hash."""
    monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", "600")
    _run(env, counted, "warmmodes", count=1)
    host = next(iter(counted.work))
    wait_until(lambda: bool(counted.warm_files(host, ".sock")), "the warm agent to listen")
    folder = counted.work[host] / "agent" / "warm"
    (sock,) = counted.warm_files(host, ".sock")
    (bundle,) = (counted.work[host] / "agent").glob("distproc-agent-*")
    assert sock.name == bundle.name.removeprefix("distproc-agent-") + ".sock"
    for path, mode in ((folder, 0o700), (sock, 0o600)):
        st = path.lstat()
        assert stat.S_IMODE(st.st_mode) == mode, f"{path}: {oct(st.st_mode)}"
        assert st.st_uid == 0  # the cluster's SSH user, dproot, is uid 0
    assert stat.S_ISSOCK(sock.lstat().st_mode)


def test_a_host_whose_sshd_forwards_to_no_socket_takes_the_cold_path(
    env: Env, counted: Counted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """h1's sshd is set to AllowStreamLocalForwarding no while its warm agent runs: the job
    still completes, h1 by starting the agent cold, the other hosts through their warm agents."""
    monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", "600")
    _run(env, counted, "refusedfirst")
    wait_until(lambda: all(counted.warm_files(h, ".sock") for h in counted.work), "the warm agents to listen")
    h1 = env.cluster.hosts[0]
    with _sshd_option(env.cluster, h1.name, "AllowStreamLocalForwarding no"):
        _run(env, counted, "refusedsecond")
        assert counted.started(h1.name)["claim"] == 1, counted.started(h1.name)
        for host in list(counted.work)[1:]:
            assert counted.started(host) == Counter(), counted.started(host)
    assert env.describe("refusedsecond")["ProcessingJobStatus"] == "Completed"


def test_the_warm_agent_exits_after_its_idle_time(env: Env, counted: Counted, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a short idle time the warm agent ends by itself, removing its socket."""
    monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", "2")
    _run(env, counted, "idleexit", count=1)
    host = next(iter(counted.work))
    wait_until(lambda: bool(counted.warm_files(host, ".pid")), "the warm agent to start")
    pid = counted.warm_pid(host)
    wait_until(lambda: not _alive(pid), "the warm agent to exit after its idle time", timeout=60)
    assert counted.warm_files(host, ".sock") == []


class _sshd_option:
    """One more line in a host's sshd_config, for the block; sshd re-reads its config on SIGHUP."""

    def __init__(self, cluster: Cluster, host: str, line: str) -> None:
        self.cluster, self.host, self.line = cluster, host, line

    def _restart(self, config: Path) -> None:
        log = config.parent / "sshd.log"
        before = log.read_text(errors="replace").count("Server listening")
        pid = int((config.parent / "sshd.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        wait_until(
            lambda: log.read_text(errors="replace").count("Server listening") > before, f"{self.host}'s sshd to restart"
        )

    def __enter__(self) -> None:
        self.config = _sshd_config(self.cluster, self.host)
        self.original = self.config.read_text()
        self.config.write_text(self.original + self.line + "\n")
        self._restart(self.config)

    def __exit__(self, *exc: object) -> None:
        self.config.write_text(self.original)
        self._restart(self.config)


def _sshd_config(cluster: Cluster, host: str) -> Path:
    work = cluster.host(host).work_dir  # <cluster dir>/<host>/work
    return work.parent / "sshd_config"


HOLD = (
    "import os, time\n"
    "print('up', flush=True)\n"
    "while not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"
)


def test_a_job_served_warm_and_cut_off_from_its_coordinator_ends_the_connection(
    env: Env, counted: Counted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on the cold path (test_faults_e2e.py): h2's link is cut mid-job; h2, followed by nobody,
    stops its container after the orphan timeout and ends the coordinator's SSH connection
    (sshd's process at the far end of the warm agent's socket), though no packet comes back.
    The warm agent itself stays."""
    monkeypatch.setenv("DISTPROC_AGENT_IDLE_SECONDS", "600")
    _run(env, counted, "cutfirst")
    wait_until(lambda: bool(counted.warm_files("h2", ".sock")), "h2's warm agent to listen")
    warm = counted.warm_pid("h2")
    counted.reset()
    before = set(faults.sshd_pids("h2"))
    entry, code_input = env.script("cutwarm", HOLD)
    doc = job_doc("cutwarm", entrypoint=entry, inputs=[code_input])
    flags = ("--reconnect-window", "20", "--orphan-timeout", "15", "--stop-grace", "2")
    run = env.start("run", "-i", str(counted.inventory), *flags, str(env.write_job(doc)))
    wait_until(running_everywhere(env.cluster, "cutwarm"), "containers to run everywhere", process=run)
    assert "claim" not in counted.started("h2"), "h2's claim was not served warm"
    connection = set(faults.sshd_pids("h2")) - before
    assert connection, "the job's coordinator holds a connection to h2"
    with faults.network_cut(env.cluster, "h2"):
        _, err = run.communicate(timeout=180)
        assert run.returncode == 1, err
        wait_until(lambda: "distproc-cutwarm-algo-2" not in env.cluster.containers("h2"), "h2's orphan stop", 120)
        wait_until(
            lambda: not connection & set(faults.sshd_pids("h2")),
            "h2's warm-served call to end the coordinator's connection",
            30,
        )
    assert _alive(warm) and counted.warm_pid("h2") == warm
    assert "claim" not in counted.started("h2")
