"""Each host's SSH connection kept between commands (hosts/transport/keeper.py) on the 3-host
test cluster, with the fork-server on (DISTPROC_FORKSERVER=1): the first command starts the
keeper, later jobs' warm-agent channels ride on its connections, so a host's sshd accepts no
new connection for them (its own log, LogLevel INFO, says each one it accepts); a keeper that
is stopped is not needed for a job to run."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from tests.cluster.jobs import Env, job_doc, wait_until
from tests.forkserver_runtime import HELLO, Runtime, private_runtime, run_hello_served

pytestmark = pytest.mark.cluster


def _accepted(env: Env) -> dict[str, int]:
    """How many SSH connections each host's sshd has accepted so far."""
    return {
        h.name: (env.cluster.dir / h.name / "sshd.log").read_text(errors="replace").count("Accepted publickey")
        for h in env.cluster.hosts
    }


def _run(env: Env, runtime: Runtime, name: str) -> None:
    result = run_hello_served(runtime, env.home, env.inventory, env.write_job(job_doc(name, entrypoint=HELLO)))
    assert result.returncode == 0, result.stderr
    assert [h["Status"] for h in env.describe(name)["Distproc"]["Hosts"]] == ["Completed"] * 3


def _keeper_pid(runtime: Runtime) -> int:
    [line] = [line for line in runtime.keeper_log() if " serving pid=" in line]
    return int(line.split("serving pid=")[1])


def test_later_jobs_open_no_ssh_connection_and_need_no_keeper(env: Env) -> None:
    with private_runtime() as runtime:
        runtime.start_server(runtime.env(DISTPROC_HOME=str(env.home)))
        _run(env, runtime, "keep-a")  # warms the hosts' agents; its command starts the keeper
        wait_until(lambda: any(" serving pid=" in line for line in runtime.keeper_log()), "the keeper to serve")
        sock = next(runtime.folder.glob("keeper-*.sock"))
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(runtime.folder).st_mode) == 0o700

        _run(env, runtime, "keep-b")  # the keeper connects to each host once
        before = _accepted(env)
        _run(env, runtime, "keep-c")
        _run(env, runtime, "keep-d")
        # Two more 3-host jobs, and not one SSH connection more on any host: each job's channels
        # rode on the keeper's connections.
        assert _accepted(env) == before
        log = runtime.keeper_log()
        assert sum(" connecting " in line for line in log) == 3, log
        assert sum(" channel " in line for line in log) == 9, log

        # Stopped, the keeper is not needed: the next job goes over its own connections
        # (one more on each host) and starts a new keeper for the one after.
        pid = _keeper_pid(runtime)
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), "the keeper to exit")
        assert runtime.keeper_log()[-1].endswith("stopped")
        _run(env, runtime, "keep-e")
        assert _accepted(env) == {host: n + 1 for host, n in before.items()}


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
