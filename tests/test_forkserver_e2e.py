"""`distproc run` through the coordinator's fork-server (distproc/forkserver) on the 3-host
test cluster: a job Completes as it does in-process, and Ctrl-C on the command (the client)
stops the job the server's child runs, Stopped with exit code 3 as without the server."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.cluster.jobs import Env, job_doc, running_everywhere, wait_until
from tests.forkserver_runtime import DISTPROC, HELLO, private_runtime, run_hello_served

pytestmark = pytest.mark.cluster


def test_a_job_run_through_the_fork_server_completes(env: Env) -> None:
    with private_runtime() as runtime:
        runtime.start_server(runtime.env(DISTPROC_HOME=str(env.home)))
        job = env.write_job(job_doc("viafork", entrypoint=HELLO))
        result = run_hello_served(runtime, env.home, env.inventory, job)
        assert result.returncode == 0, result.stderr
        assert "viafork: Completed" in result.stdout + result.stderr
        assert runtime.served() == [f'["run", "--inventory", "{env.inventory}", "{env.data / "viafork.json"}"]']
    described = env.describe("viafork")
    assert described["ProcessingJobStatus"] == "Completed"
    assert [h["Status"] for h in described["Distproc"]["Hosts"]] == ["Completed"] * 3


def test_ctrl_c_on_a_run_through_the_fork_server_stops_the_job(env: Env) -> None:
    code = (
        "import time\n"
        "try:\n    time.sleep(300)\n"
        "except KeyboardInterrupt:\n    print('got SIGINT', flush=True); raise SystemExit(130)\n"
    )
    entrypoint, code_input = env.script("forkctrlc", code)
    job = env.write_job(job_doc("forkctrlc", entrypoint=entrypoint, inputs=[code_input]))
    with private_runtime() as runtime:
        runtime.start_server(runtime.env(DISTPROC_HOME=str(env.home)))
        run = subprocess.Popen(
            [DISTPROC, "run", "--inventory", str(env.inventory), str(job)],
            env=runtime.env(DISTPROC_HOME=str(env.home)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(running_everywhere(env.cluster, "forkctrlc"), "containers to run", process=run)
            run.send_signal(signal.SIGINT)  # to the client only: it passes it on
            stdout, stderr = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert len(runtime.served()) == 1
    assert run.returncode == 3, stderr
    assert stdout.count("got SIGINT") == 3
    described = env.describe("forkctrlc")
    assert described["ProcessingJobStatus"] == "Stopped"
    assert described["Distproc"]["StopReason"] == "interrupted (Ctrl-C)"
