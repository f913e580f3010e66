"""Load: one job across every host of the session cluster, every host's outcome accounted for.

The cluster has DISTPROC_TEST_HOSTS hosts (3 by default); this test uses all
of them, whatever their number. `bench/load.py` runs the same job and checks
on a cluster of its own, 32 hosts by default (too slow for CI).
"""

from __future__ import annotations

import json

import pytest

from bench.load import check_load, expected_message, load_job
from tests.cluster import Cluster
from tests.cluster.jobs import Env

pytestmark = pytest.mark.cluster


def test_one_job_on_every_host_records_every_outcome(env: Env, cluster: Cluster) -> None:
    """InstanceCount = every host: Completed, each host's record, output, log and result; nothing left."""
    n = len(cluster.hosts)
    out_dir = env.data / "out"
    doc = load_job("load", n, cluster.image, out_dir)
    # About a second per host on the 2-core test machine; the margin is for a loaded machine, not a hang.
    result = env.cli("run", "-i", str(env.inventory), "--quiet", str(env.write_job(doc)), timeout=120 + 10 * n)
    assert result.returncode == 0, result.stderr

    described = env.describe("load")
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["ExitMessage"] == expected_message(n)
    records = described["Distproc"]["Hosts"]
    assert [(r["Host"], r["InventoryHost"], r["Status"], r["ExitCode"]) for r in records] == [
        (f"algo-{k}", h.name, "Completed", 0) for k, h in enumerate(cluster.hosts, 1)
    ]
    assert len({r["Address"] for r in records}) == n  # n distinct machines, not one host n times
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"algo-{k}.json" for k in range(1, n + 1))
    assert json.loads((out_dir / f"algo-{n}.json").read_text()) == {
        "current_host": f"algo-{n}",
        "hostname": f"algo-{n}",
        "hosts": n,
    }

    # The same checks bench/load.py makes: outcome, output, log, result.json, no container, no lease.
    checks = check_load(cluster, [h.name for h in cluster.hosts], env.home, "load", out_dir)
    assert len(checks) == 8
    assert [c.line() for c in checks if not c.ok] == []
