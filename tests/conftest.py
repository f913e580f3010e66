"""Shared fixtures come from the test cluster's pytest plugin, tests/cluster/plugin.py:
``cluster`` (the real multi-host test cluster), ``env``, ``moto`` and ``s3env``.

A test that uses ``cluster`` (directly or through another fixture) must carry
``@pytest.mark.cluster`` (module-wide: ``pytestmark = pytest.mark.cluster``),
so that ``-m "not cluster"`` selects exactly the tests that need no root,
namespaces, sshd or dockerd. Collection stops with an error otherwise.

``slurm`` (the real Slurm test cluster) comes from tests/slurm/plugin.py; a test
that uses it carries ``@pytest.mark.slurm`` and ``@pytest.mark.cluster``.
"""

from collections.abc import Iterator

import pytest
import structlog

pytest_plugins = ["tests.cluster.plugin", "tests.slurm.plugin"]


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """Each test starts with the structlog configuration the one before it found.

    A test that runs a command in-process (``cli.main``) configures structlog
    to print to that test's captured stderr, which pytest closes afterwards; a
    later test that logs in-process (a JobRunner) would write to the closed file.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
