"""distproc run, end to end, with a docker command other than plain `docker`
(`distproc_docker_command: env docker`): the agent cannot be certain which daemon
that command reaches, so it keeps the docker CLI (`docker run`, `docker logs
--follow`, `docker wait`, `docker kill`, `docker rm`) instead of the Engine API.
Jobs behave exactly as on the API path (tests/test_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.cluster.jobs import Env, file_output, job_doc

pytestmark = pytest.mark.cluster


def _cli_inventory(env: Env) -> Path:
    return env.cluster.write_inventory(env.data / "cli.yaml", group_vars={"distproc_docker_command": "env docker"})


def _run(env: Env, doc: dict[str, Any], *extra: str) -> Any:
    return env.cli("run", "--inventory", str(_cli_inventory(env)), *extra, str(env.write_job(doc)), timeout=240)


def _events(cluster: Cluster, job: str, k: int) -> list[dict[str, Any]]:
    path = cluster.hosts[k - 1].work_dir / "jobs" / job / f"algo-{k}" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_job_through_the_docker_cli_completes_with_output_message_and_exit_codes(env: Env) -> None:
    out = env.data / "out"
    code = (
        "import json, sys, time\n"
        "me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "print('stdout of', me, flush=True)\n"
        "time.sleep(0.2)\n"
        "print('stderr of', me, file=sys.stderr, flush=True)\n"
        "open('/opt/ml/processing/output/' + me, 'w').write(me)\n"
        "open('/opt/ml/output/message', 'w').write('[' + me + ']')\n"
    )
    entrypoint, code_input = env.script("viacli", code)
    doc = job_doc(
        "viacli",
        entrypoint=entrypoint,
        inputs=[code_input],
        outputs=[file_output("o", f"{out}/", "/opt/ml/processing/output")],
    )
    result = _run(env, doc)
    assert result.returncode == 0, result.stderr
    described = env.describe("viacli")
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["ExitMessage"] == "[algo-1][algo-2][algo-3]"
    assert [h["ExitCode"] for h in described["Distproc"]["Hosts"]] == [0, 0, 0]
    assert sorted(p.name for p in out.iterdir()) == ["algo-1", "algo-2", "algo-3"]
    logs = env.cli("logs", "viacli").stdout.splitlines()
    for k in (1, 2, 3):
        mine = [line for line in logs if line.startswith(f"[algo-{k}] ")]
        assert mine == [f"[algo-{k}] stdout of algo-{k}", f"[algo-{k}] stderr of algo-{k}"], logs
        started = [e for e in _events(env.cluster, "viacli", k) if e["kind"] == "container_started"]
        assert [e["docker"] for e in started] == ["cli"]


def test_a_failure_through_the_docker_cli_stops_the_others(env: Env) -> None:
    """algo-2 exits 3: Failed naming it; the sleepers get SIGINT through `docker kill` and are Stopped."""
    code = (
        "import json, time\n"
        "me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        "if me == 'algo-2':\n"
        "    open('/opt/ml/output/message', 'w').write('bad row')\n"
        "    raise SystemExit(3)\n"
        "time.sleep(120)\n"
    )
    entrypoint, code_input = env.script("viaclifail", code)
    result = _run(env, job_doc("viaclifail", entrypoint=entrypoint, inputs=[code_input]), "--stop-grace", "5")
    assert result.returncode == 1, result.stderr
    described = env.describe("viaclifail")
    assert described["FailureReason"].startswith("AlgorithmError: algo-2 (h2) exited with code 3: bad row")
    assert {h["Host"]: h["Status"] for h in described["Distproc"]["Hosts"]} == {
        "algo-1": "Stopped",
        "algo-2": "Failed",
        "algo-3": "Stopped",
    }
    kinds = [e["kind"] for e in _events(env.cluster, "viaclifail", 1)]
    assert "stopping" in kinds
