"""The pytest plugin of the test cluster (registered by tests/conftest.py).

Fixtures: ``cluster`` (the real multi-host cluster, one per session), ``env``
(a test's own distproc home and inventory on it), ``moto`` (an S3 endpoint on
the cluster's bridge, one per module) and ``s3env`` (``env`` with that endpoint).

A test that uses ``cluster`` (directly or through another fixture) must carry
``@pytest.mark.cluster`` (module-wide: ``pytestmark = pytest.mark.cluster``),
so that ``-m "not cluster"`` selects exactly the tests that need no root,
namespaces, sshd or dockerd. Collection stops with an error otherwise. The
same holds for the ``slurm`` fixture (tests/slurm/plugin.py): its tests carry
both ``@pytest.mark.slurm`` and ``@pytest.mark.cluster``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cluster.build import running_cluster
from tests.cluster.config import ClusterConfig
from tests.cluster.constants import ClusterError
from tests.cluster.jobs import Env, S3Env
from tests.cluster.model import Cluster
from tests.cluster.preflight import preflight

if TYPE_CHECKING:  # boto3 is imported only by the sessions that start the S3 endpoint
    from tests.s3server import MotoServer

# The first test that uses the cluster also pays for building it: a cold build
# runs debootstrap (about a minute here, more on a slow mirror).
CLUSTER_BUILD_ALLOWANCE_S = 900


def _backend_of(item: pytest.Item) -> object:
    """The backend a contract test runs on (tests/backends.py: the ``backend_env`` fixture's param), or None."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("backend_env") if callspec is not None else None


def _uses_cluster(item: pytest.Item) -> bool:
    # backend_env asks for `cluster` or `slurm` by its param, at run time.
    return "cluster" in getattr(item, "fixturenames", ()) or _backend_of(item) == "fleet"


def _uses_slurm(item: pytest.Item) -> bool:
    return "slurm" in getattr(item, "fixturenames", ()) or _backend_of(item) == "slurm"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [i.nodeid for i in items if _uses_cluster(i) and not i.get_closest_marker("cluster")]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the `cluster` fixture but lack @pytest.mark.cluster:\n  " + "\n  ".join(unmarked)
        )
    # The Slurm test cluster (tests/slurm/) also needs root and namespaces: `-m "not cluster"`
    # must leave its tests out, and `-m slurm` must pick exactly them.
    unmarked = [
        i.nodeid
        for i in items
        if _uses_slurm(i) and not (i.get_closest_marker("cluster") and i.get_closest_marker("slurm"))
    ]
    mismarked = [i.nodeid for i in items if i.get_closest_marker("slurm") and not _uses_slurm(i)]
    if unmarked or mismarked:
        raise pytest.UsageError(
            "these tests use the `slurm` fixture but lack @pytest.mark.slurm and @pytest.mark.cluster,"
            " or carry @pytest.mark.slurm without using it:\n  " + "\n  ".join(unmarked + mismarked)
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


@pytest.fixture
def env(cluster: Cluster, tmp_path: Path) -> Iterator[Env]:
    data = tmp_path / "data"
    data.mkdir()
    e = Env(cluster, tmp_path / "home", data, cluster.write_inventory(tmp_path / "inventory.yaml"))
    yield e
    for host in cluster.hosts:
        left = cluster.containers(host)
        assert left == [], f"containers left on {host.name}: {left}"
        lease = host.work_dir / "lease.json"
        assert not lease.exists(), f"lease left on {host.name}: {lease.read_text() if lease.exists() else ''}"


@pytest.fixture(scope="module")
def moto(cluster: Cluster) -> Iterator[MotoServer]:
    from tests.s3server import start_moto_server

    server = start_moto_server(cluster.bridge_address)
    yield server
    server.stop()


@pytest.fixture
def s3env(cluster: Cluster, moto: MotoServer, tmp_path: Path) -> Iterator[S3Env]:
    data = tmp_path / "data"
    data.mkdir()
    extra = {
        h.name: {"distproc_s3_endpoint_url": moto.endpoint_url, "distproc_aws_region": "us-east-1"}
        for h in cluster.hosts
    }
    inventory = cluster.write_inventory(tmp_path / "inventory.yaml", extra_host_vars=extra)
    e = S3Env(cluster, tmp_path / "home", data, inventory)
    e.moto = moto
    yield e
    for host in cluster.hosts:
        assert cluster.containers(host) == [], f"containers left on {host.name}"
        lease = host.work_dir / "lease.json"
        assert not lease.exists(), f"lease left on {host.name}: {lease.read_text() if lease.exists() else ''}"
