"""The pytest plugin of the Slurm test cluster (registered by tests/conftest.py).

Fixture ``slurm``: a real Slurm cluster (munged, slurmctld, N slurmds in their
own network namespaces), one per session; ``slurm_docker``: a dockerd in each
node's namespace (tests/slurm/docker.py). A test that uses it must carry both
``@pytest.mark.slurm`` and ``@pytest.mark.cluster`` (it needs root and
namespaces, so ``-m "not cluster"`` leaves it out; ``-m slurm`` picks it);
tests/cluster/plugin.py stops collection otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from tests.cluster.constants import ClusterError
from tests.slurm.docker import node_dockerds
from tests.slurm.layout import SlurmConfig
from tests.slurm.testbed import SlurmCluster, preflight, running_slurm


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """The Slurm test cluster: sl1..slN (DISTPROC_TEST_SLURM_NODES, default 3). Fails (never skips)."""
    try:
        cfg = SlurmConfig.from_env()
    except ClusterError as e:
        pytest.fail(str(e), pytrace=False)
    problems = preflight(cfg)
    if problems:
        pytest.fail("cannot build the Slurm test cluster:\n  - " + "\n  - ".join(problems), pytrace=False)
    try:
        with running_slurm(cfg) as c:
            yield c
    except ClusterError as e:
        pytest.fail(f"Slurm test cluster: {e}", pytrace=False)


@pytest.fixture(scope="session")
def slurm_docker(slurm: SlurmCluster) -> Iterator[Mapping[str, str]]:
    """One dockerd per Slurm node, in its namespace, with distproc-test:busybox: node -> DOCKER_HOST."""
    try:
        with node_dockerds(slurm.config) as hosts:
            yield hosts
    except ClusterError as e:
        pytest.fail(f"Slurm nodes' dockerds: {e}", pytrace=False)
