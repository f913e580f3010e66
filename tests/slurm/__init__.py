"""The Slurm test cluster: a real slurmctld, one slurmd per network namespace, a private munged.

Started by the harness's own code (tests/slurm/testbed.py), like the SSH test
cluster's sshd and dockerd; the Debian packages come from .ci/run. Tests use
the session fixture ``slurm`` (tests/slurm/plugin.py) and carry the markers
``slurm`` and ``cluster``. See docs/testing.md and docs/slurm.md.
"""

from tests.slurm.layout import SlurmConfig
from tests.slurm.testbed import SlurmCluster, SlurmNode

__all__ = ["SlurmCluster", "SlurmConfig", "SlurmNode"]
