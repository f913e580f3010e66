"""Shared fixtures come from the test cluster's pytest plugin, tests/cluster/plugin.py:
``cluster`` (the real multi-host test cluster), ``env``, ``moto`` and ``s3env``.

A test that uses ``cluster`` (directly or through another fixture) must carry
``@pytest.mark.cluster`` (module-wide: ``pytestmark = pytest.mark.cluster``),
so that ``-m "not cluster"`` selects exactly the tests that need no root,
namespaces, sshd or dockerd. Collection stops with an error otherwise.

``slurm`` (the real Slurm test cluster) comes from tests/slurm/plugin.py; a test
that uses it carries ``@pytest.mark.slurm`` and ``@pytest.mark.cluster``.
"""

pytest_plugins = ["tests.cluster.plugin", "tests.slurm.plugin"]
