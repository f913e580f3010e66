"""SlurmBackend's per-node host description (no Slurm needed): the docker_host template."""

from __future__ import annotations

from pathlib import Path

import pytest

from distproc.backends.slurm.backend import SlurmBackend
from distproc.backends.slurm.inventory import SlurmInventory, parse_slurm_inventory
from distproc.errors import DistprocError


def inventory(tmp_path: Path) -> SlurmInventory:
    return parse_slurm_inventory(
        {"slurm": {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": "cpu"}}},
        tmp_path / "slurm.yaml",
    )


def test_each_node_gets_its_own_docker_host_and_its_slurm_address(tmp_path: Path) -> None:
    backend = SlurmBackend(inventory(tmp_path), docker_host="unix:///run/{node}/docker.sock")
    host = backend.reach({"slurm_job_id": "42", "name": "sl2", "address": "198.19.90.12"}, "/j").host
    assert host.docker_host == "unix:///run/sl2/docker.sock"
    # What --add-host gives every container for this node's algo-K.
    assert host.private_address == "198.19.90.12"


def test_without_a_template_the_nodes_default_docker_is_used(tmp_path: Path) -> None:
    host = SlurmBackend(inventory(tmp_path)).reach({"slurm_job_id": "1", "name": "n1", "address": "n1"}, "/j").host
    assert host.docker_host is None


def test_other_braces_are_kept_as_written(tmp_path: Path) -> None:
    backend = SlurmBackend(inventory(tmp_path), docker_host="unix:///run/{x}/{node}.sock")
    assert backend.reach({"slurm_job_id": "1", "name": "n1", "address": "a"}, "/j").host.docker_host == (
        "unix:///run/{x}/n1.sock"
    )


def test_a_template_of_more_than_one_line_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DistprocError, match="docker_host: must be one line"):
        SlurmBackend(inventory(tmp_path), docker_host="unix:///run/x\nDOCKER_TLS=1")
