"""Seeing a job on the 3-host cluster: per-phase timeline, metrics, HTML report.

The hosts have no GPUs (none exist on these machines), so this proves the
no-GPU path for real: each host says why it has no GPU metrics.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from distproc.store.timeline import PHASE_NAMES
from tests.browser import Elements, run_chromium
from tests.cluster import Cluster
from tests.cluster.jobs import Env, file_input, file_output, job_doc

pytestmark = pytest.mark.cluster

# Every phase a host goes through on the fleet: not image_shipped (only with --ship-image),
# nor queued (only in a Slurm queue).
PHASES = [p for p in PHASE_NAMES if p not in ("image_shipped", "queued")]

# Busy for about a second, so the samplers see CPU work, then write an output.
WORK = (
    "import json, time; me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
    "end = time.time() + 1.2\n"
    "while time.time() < end: sum(range(10000))\n"
    "open('/opt/ml/processing/output/o/' + me, 'w').write(me)\n"
)


@pytest.fixture
def observed(env: Env, cluster: Cluster) -> tuple[Env, str]:
    """One finished 3-host job with a file:// input and output, sampled every 0.2 s."""
    (env.data / "in").mkdir()
    (env.data / "in" / "x.txt").write_text("x")
    entry, code_input = env.script("observe", WORK)
    doc = job_doc(
        "observe",
        entrypoint=entry,
        inputs=[code_input, file_input("in", str(env.data / "in"), "/opt/ml/processing/input/in")],
        outputs=[file_output("o", str(env.data / "out"), "/opt/ml/processing/output/o")],
    )
    result = env.run_job(doc, "--metrics-interval", "0.2")
    assert result.returncode == 0, result.stderr
    return env, "observe"


def test_describe_has_every_phase_in_order_for_every_host(observed: tuple[Env, str]) -> None:
    """Each host's timeline holds all seven phases, ended, in the order a host goes through them."""
    env, name = observed
    doc = env.describe(name)
    hosts = doc["Distproc"]["Hosts"]
    assert [h["Host"] for h in hosts] == ["algo-1", "algo-2", "algo-3"]
    for h in hosts:
        phases = {p["Phase"]: p for p in h["Timeline"]}
        assert sorted(phases) == sorted(PHASES), h["Timeline"]
        assert all(p["End"] is not None and p["End"] >= p["Start"] for p in phases.values())
        assert phases["connect"]["End"] <= phases["agent_ready"]["End"] <= phases["inputs_staged"]["Start"]
        assert phases["inputs_staged"]["End"] <= phases["image_pull"]["Start"]
        assert phases["image_pull"]["End"] <= phases["container_running"]["Start"]
        assert phases["container_running"]["End"] <= phases["outputs_uploaded"]["Start"]
        # The container busied itself for 1.2 s.
        assert phases["container_running"]["Seconds"] >= 1.2

    text = env.cli("describe", name, "--timeline")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert all(phase in lines[0] for phase in PHASES)
    assert [line.split()[0] for line in lines[2:]] == ["algo-1", "algo-2", "algo-3"]


def test_metrics_are_sampled_summarised_and_exported(observed: tuple[Env, str]) -> None:
    """Every host has CPU, memory, disk and network samples, a max/mean summary, and a note on its missing GPUs."""
    env, name = observed
    for h in env.describe(name)["Distproc"]["Hosts"]:
        summary = h["Metrics"]
        assert summary["samples"] >= 3, summary
        assert summary["cpu_percent"]["max"] > 0
        assert summary["mem_used_bytes"]["max"] >= summary["mem_used_bytes"]["mean"] > 0
        assert summary["disk_used_bytes"]["max"] > 0  # the staged input and the written output
        assert summary["gpus"] == []
        assert h["GpuNote"], "a host without GPU metrics says why"

    out = env.cli("metrics", name, "--csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["host"] for r in rows} == {"algo-1", "algo-2", "algo-3"}
    assert all(int(r["mem_total_bytes"]) > 0 for r in rows)

    series = json.loads(env.cli("metrics", name).stdout)
    assert sorted(series) == ["algo-1", "algo-2", "algo-3"]
    assert all(len(v["Samples"]) >= 3 for v in series.values())

    missing = env.cli("metrics", "no-such-job")
    assert missing.returncode == 2 and "no-such-job" in missing.stderr


def test_report_renders_offline_in_a_browser(observed: tuple[Env, str], tmp_path: Path) -> None:
    """`distproc report` writes one HTML file whose timeline and charts Chromium shows with the network off."""
    env, name = observed
    page = tmp_path / "report.html"
    out = env.cli("report", name, "-o", str(page))
    assert out.returncode == 0, out.stderr
    dom = Elements(run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout)
    assert [r["data-host"] for r in dom.with_class("host-row")] == ["algo-1", "algo-2", "algo-3"]
    bars = dom.with_class("phase-bar")
    assert {(b["data-host"], b["data-phase"]) for b in bars} == {
        (f"algo-{k}", phase) for k in (1, 2, 3) for phase in PHASES
    }
    assert {"timeline", "chart-cpu", "chart-mem", "chart-disk"} <= dom.ids()
    assert "chart-gpu-util" not in dom.ids()
    assert name in "".join(dom.text)
