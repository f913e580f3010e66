"""The Slurm inventory document (distproc/backends/slurm/inventory.py): what it accepts and refuses, by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distproc.backends.slurm.inventory import (
    PartitionMapping,
    is_slurm_document,
    load_slurm_inventory,
    parse_slurm_inventory,
    slurm_inventory_at,
)
from distproc.errors import InventoryError

SSH_FILE = """\
slurm:
  submit:
    ansible_host: login.hpc.example.org
    ansible_user: alice
    ansible_ssh_private_key_file: keys/id_ed25519
    distproc_known_hosts: keys/known_hosts
  account: proj42
  qos: normal
  shared_dir: /shared/distproc/
  instance_types:
    ml.m5.xlarge: cpu
    ml.g4dn.12xlarge: {partition: gpu, gpus: 4, gpu_type: t4, qos: gpu-high}
    ml.p3.8xlarge: {partition: v100, gpus: 4, gpu_flag: gpus-per-node, account: other}
"""


def parse(body: dict[str, Any]) -> Any:
    return parse_slurm_inventory({"slurm": body}, Path("/inv/slurm.yaml"))


def local(**extra: Any) -> dict[str, Any]:
    return {"submit": {"ansible_connection": "local"}, "instance_types": {"ml.m5.xlarge": "cpu"}, **extra}


def problems(body: Any) -> str:
    with pytest.raises(InventoryError) as info:
        parse_slurm_inventory(body, Path("/inv/slurm.yaml"))
    message = str(info.value)
    assert message.startswith("/inv/slurm.yaml")
    return message


def test_an_ssh_submit_node_and_three_partitions(tmp_path: Path) -> None:
    path = tmp_path / "slurm.yaml"
    path.write_text(SSH_FILE)
    inv = load_slurm_inventory(path)
    assert inv.submit.connection == "ssh"
    assert (inv.submit.address, inv.submit.user, inv.submit.port) == ("login.hpc.example.org", "alice", 22)
    # Relative paths are the file's folder's, as for any inventory host.
    assert inv.submit.key_file == str(tmp_path / "keys" / "id_ed25519")
    assert inv.submit.known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert (inv.account, inv.qos, inv.exclusive, inv.shared_dir) == ("proj42", "normal", True, "/shared/distproc")
    assert inv.mapping_for("ml.m5.xlarge") == PartitionMapping("ml.m5.xlarge", "cpu", account="proj42", qos="normal")
    assert inv.mapping_for("ml.g4dn.12xlarge") == PartitionMapping(
        "ml.g4dn.12xlarge", "gpu", gpus=4, gpu_type="t4", account="proj42", qos="gpu-high"
    )
    assert inv.mapping_for("ml.p3.8xlarge") == PartitionMapping(
        "ml.p3.8xlarge", "v100", gpus=4, gpu_flag="gpus-per-node", account="other", qos="normal"
    )


def test_values_are_frozen() -> None:
    inv = parse(local())
    with pytest.raises(AttributeError):
        inv.exclusive = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        inv.instance_types["ml.t3.medium"] = inv.mapping_for("ml.m5.xlarge")  # type: ignore[index]


def test_this_machine_as_the_submit_node_and_defaults() -> None:
    inv = parse(local())
    assert inv.submit.connection == "local"
    assert (inv.account, inv.qos, inv.exclusive, inv.shared_dir) == (None, None, True, None)
    assert parse(local(exclusive=False)).exclusive is False
    assert (inv.docker_host, inv.work_dir, inv.python) == (None, "/var/tmp/distproc", "python3")


def test_the_nodes_s3_endpoint_and_region() -> None:
    inv = parse(local(s3_endpoint_url="https://minio.example.org:9000", aws_region="eu-west-1"))
    assert (inv.s3_endpoint_url, inv.aws_region) == ("https://minio.example.org:9000", "eu-west-1")
    assert (parse(local()).s3_endpoint_url, parse(local()).aws_region) == (None, None)


def test_the_nodes_docker_work_dir_and_python() -> None:
    inv = parse(local(docker_host="unix:///run/docker-{node}.sock", work_dir="/scratch/dp/", python="/usr/bin/python3"))
    assert (inv.docker_host, inv.work_dir, inv.python) == (
        "unix:///run/docker-{node}.sock",
        "/scratch/dp",
        "/usr/bin/python3",
    )


def test_slurm_inventory_at_tells_a_slurm_file_from_a_fleet_file(tmp_path: Path) -> None:
    slurm = tmp_path / "slurm.yaml"
    slurm.write_text("slurm:\n  submit: {ansible_connection: local}\n  instance_types: {ml.m5.xlarge: cpu}\n")
    fleet = tmp_path / "hosts.yaml"
    fleet.write_text("all:\n  hosts:\n    h1: {ansible_host: 10.0.0.1}\n")
    found = slurm_inventory_at(slurm)
    assert found is not None and found.mapping_for("ml.m5.xlarge").partition == "cpu"
    assert slurm_inventory_at(fleet) is None
    # Unreadable files are left to the fleet's reader, whose errors say why.
    assert slurm_inventory_at(tmp_path / "missing.yaml") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("slurm:\n  submit: {ansible_connection: local}\n")
    with pytest.raises(InventoryError, match=r"slurm\.instance_types"):
        slurm_inventory_at(bad)


def test_the_cli_reads_an_inventory_file_into_a_typed_target(tmp_path: Path) -> None:
    """cli._load: a Slurm file gives the cluster and the job's partition, a fleet file the chosen hosts."""
    import argparse
    import json

    from distproc.cli import FleetTarget, SlurmTarget, _load

    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "ProcessingJobName": "j",
                "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}},
                "AppSpecification": {"ImageUri": "busybox"},
            }
        )
    )
    slurm = tmp_path / "slurm.yaml"
    slurm.write_text("slurm:\n  submit: {ansible_connection: local}\n  instance_types: {ml.m5.xlarge: cpu}\n")
    fleet = tmp_path / "hosts.yaml"
    fleet.write_text("all:\n  hosts:\n    h1: {ansible_host: 10.0.0.1, distproc_instance_type: ml.m5.xlarge}\n")
    _, target = _load(argparse.Namespace(job=job, inventory=slurm))
    assert isinstance(target, SlurmTarget)
    assert (target.mapping.partition, target.inventory.path) == ("cpu", slurm)
    _, target = _load(argparse.Namespace(job=job, inventory=fleet))
    assert isinstance(target, FleetTarget) and [h.name for h in target.hosts] == ["h1"]
    assert _load(argparse.Namespace(job=job, inventory=None))[1] is None


def test_an_instance_type_the_cluster_does_not_map_is_refused_naming_it() -> None:
    inv = parse(local())
    with pytest.raises(InventoryError, match=r"slurm\.instance_types has no 'ml\.p3\.2xlarge'.*maps: ml\.m5\.xlarge"):
        inv.mapping_for("ml.p3.2xlarge")


@pytest.mark.parametrize(
    ("body", "field", "what"),
    [
        ({"instance_types": {"ml.m5.xlarge": "cpu"}}, "slurm.submit", "missing"),
        ({"submit": "login1", "instance_types": {"ml.m5.xlarge": "cpu"}}, "slurm.submit", "mapping of host variables"),
        (
            {"submit": {"ansible_user": "a"}, "instance_types": {"ml.m5.xlarge": "cpu"}},
            "slurm.submit.ansible_host",
            "missing",
        ),
        (local(instance_types=None), "slurm.instance_types", "missing"),
        (local(instance_types={}), "slurm.instance_types", "non-empty mapping"),
        (local(instance_types={"m5.xlarge": "cpu"}), "slurm.instance_types.m5.xlarge", "did you mean ml.m5.xlarge"),
        (
            local(instance_types={"ml.m5.xlarge": "cpu; rm -rf /"}),
            "slurm.instance_types.ml.m5.xlarge.partition",
            "Slurm name",
        ),
        (local(instance_types={"ml.m5.xlarge": {"gpus": 1}}), "slurm.instance_types.ml.m5.xlarge.partition", "missing"),
        (
            local(instance_types={"ml.m5.xlarge": ["cpu"]}),
            "slurm.instance_types.ml.m5.xlarge",
            "partition name or a mapping",
        ),
        (local(instance_types={"ml.p3.2xlarge": {"partition": "g", "gpus": -1}}), "ml.p3.2xlarge.gpus", "whole number"),
        (
            local(instance_types={"ml.p3.2xlarge": {"partition": "g", "gpus": True}}),
            "ml.p3.2xlarge.gpus",
            "whole number",
        ),
        (local(instance_types={"ml.p3.2xlarge": {"partition": "g", "gpus": 65}}), "ml.p3.2xlarge.gpus", "0..64"),
        (local(instance_types={"ml.p3.2xlarge": {"partition": "g", "gpu_type": "v100"}}), "gpu_type", "without gpus"),
        (
            local(instance_types={"ml.p3.2xlarge": {"partition": "g", "gpus": 1, "gpu_flag": "gpus"}}),
            "gpu_flag",
            "gres",
        ),
        (
            local(instance_types={"ml.p3.2xlarge": {"partition": "g", "nodes": 2}}),
            "ml.p3.2xlarge.nodes",
            "unknown setting",
        ),
        (local(account="a b"), "slurm.account", "Slurm name"),
        (local(qos=7), "slurm.qos", "Slurm name"),
        (local(exclusive="yes"), "slurm.exclusive", "true or false"),
        (local(shared_dir="shared"), "slurm.shared_dir", "absolute path"),
        (local(shared_dir="/shared/../etc"), "slurm.shared_dir", "without '..'"),
        (local(partition="cpu"), "slurm.partition", "unknown setting"),
        (local(docker_host="/run/docker.sock"), "slurm.docker_host", "unix://"),
        (local(docker_host="unix:///a\nb"), "slurm.docker_host", "Docker address"),
        (local(work_dir="var/tmp"), "slurm.work_dir", "absolute path"),
        (local(work_dir="/"), "slurm.work_dir", "below /"),
        (local(python="python3 -X dev"), "slurm.python", "without spaces"),
        (local(s3_endpoint_url="minio:9000"), "slurm.s3_endpoint_url", "http:// or https://"),
        (local(s3_endpoint_url="http://a b"), "slurm.s3_endpoint_url", "without spaces"),
        (local(aws_region="US East"), "slurm.aws_region", "region name"),
        (
            {"submit": {"ansible_connection": "local", "distproc_gpus": 4}, "instance_types": {"ml.m5.xlarge": "c"}},
            "slurm.submit.distproc_gpus",
            "compute host",
        ),
        # The fleet's own host checks apply to the submit node (here: a port out of range).
        (
            {"submit": {"ansible_host": "l", "ansible_port": 70000}, "instance_types": {"ml.m5.xlarge": "c"}},
            "slurm.submit",
            "port",
        ),
    ],
)
def test_what_cannot_be_mapped_is_refused_naming_the_field(body: dict[str, Any], field: str, what: str) -> None:
    message = problems({"slurm": body})
    assert field in message
    assert what in message


def test_every_problem_is_listed_at_once() -> None:
    message = problems({"slurm": local(account="a b", qos="q;q", exclusive=1)})
    assert "3 problems" in message
    for field in ("slurm.account", "slurm.qos", "slurm.exclusive"):
        assert field in message


@pytest.mark.parametrize(
    ("doc", "what"),
    [
        ("nope", "one top-level mapping, slurm:"),
        ({"slurm": local(), "all": {}}, "also has: all"),
        ({"slurm": ["a"]}, "must be a mapping"),
    ],
)
def test_the_document_shape(doc: Any, what: str) -> None:
    assert what in problems(doc)


def test_is_slurm_document() -> None:
    assert is_slurm_document({"slurm": {}})
    assert not is_slurm_document({"all": {"hosts": {}}})
    assert not is_slurm_document(None)


def test_file_reading_is_bounded_and_refuses_duplicate_keys(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("slurm:\n  qos: a\n  qos: b\n")
    with pytest.raises(InventoryError, match="qos"):
        load_slurm_inventory(twice)
    with pytest.raises(InventoryError, match="cannot read the inventory"):
        load_slurm_inventory(tmp_path / "missing.yaml")
