"""Shared fixtures. ``cluster``: the real multi-host test cluster (tests/cluster.py).

A test that uses ``cluster`` (directly or through another fixture) must carry
``@pytest.mark.cluster`` (module-wide: ``pytestmark = pytest.mark.cluster``),
so that ``-m "not cluster"`` selects exactly the tests that need no root,
namespaces, sshd or dockerd. Collection stops with an error otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, ClusterConfig, ClusterError, preflight, running_cluster

# The first test that uses the cluster also pays for building it: a cold build
# runs debootstrap (about a minute here, more on a slow mirror).
CLUSTER_BUILD_ALLOWANCE_S = 900


def _uses_cluster(item: pytest.Item) -> bool:
    return "cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [i.nodeid for i in items if _uses_cluster(i) and not i.get_closest_marker("cluster")]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the `cluster` fixture but lack @pytest.mark.cluster:\n  " + "\n  ".join(unmarked)
        )
    first = next((i for i in items if _uses_cluster(i)), None)
    if first is not None:
        marker = first.get_closest_marker("timeout")
        current = marker.args[0] if marker and marker.args else config.getini("timeout")
        try:
            base = float(current or 0)
        except (TypeError, ValueError):
            base = 0.0
        if base > 0:
            first.add_marker(pytest.mark.timeout(base + CLUSTER_BUILD_ALLOWANCE_S), append=False)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The test cluster: N hosts (netns + sshd + dockerd each) and a local dockerd.

    Built once per session (N from DISTPROC_TEST_HOSTS, default 3), torn down
    at the end. Fails (never skips) when the machine cannot host it.
    """
    try:
        cfg = ClusterConfig.from_env()
    except ClusterError as e:
        pytest.fail(str(e), pytrace=False)
    problems = preflight(cfg)
    if problems:
        pytest.fail("cannot build the test cluster:\n  - " + "\n  - ".join(problems), pytrace=False)
    try:
        with running_cluster(cfg) as c:
            yield c
    except ClusterError as e:
        pytest.fail(f"test cluster: {e}", pytrace=False)
