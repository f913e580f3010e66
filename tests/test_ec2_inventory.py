"""EC2 inventories: instances found with boto3 become hosts, through the same checks as static ones.

EC2's control plane cannot exist here, so it is faked by moto's standalone
server (a real HTTP endpoint on 127.0.0.1, reached through boto3 exactly as
AWS would be). moto shares one server between the tests of this module, so
each test tags its instances with its own Suite value and filters on it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distproc.errors import InventoryError
from distproc.inventory import Inventory, load_inventory, select_hosts
from distproc.inventory.ec2 import build_hosts, parse_ec2_config
from tests.s3server import MotoServer, start_moto_server

REPO = Path(__file__).resolve().parent.parent
AMI = "ami-12345678"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ec2(moto: MotoServer) -> Any:
    # One client for the module: building one loads EC2's large service model (~0.3 s).
    return moto.client("ec2")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """boto3 sees test credentials and nothing of this machine's AWS setup."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # One attempt: the error tests should fail at once, not after boto3's backoff.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


@dataclass
class Fleet:
    """Instances of one test, all tagged Suite=<unique>, and inventory files that find only them."""

    moto: MotoServer
    ec2: Any
    dir: Path
    suite: str

    def launch(self, instance_type: str = "m5.xlarge", count: int = 1, **tags: str) -> list[str]:
        tag_list = [{"Key": k, "Value": v} for k, v in {"Suite": self.suite, **tags}.items()]
        reply = self.ec2.run_instances(
            ImageId=AMI,
            MinCount=count,
            MaxCount=count,
            InstanceType=instance_type,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
        )
        return [i["InstanceId"] for i in reply["Instances"]]

    def write(self, body: str, name: str = "inv.aws_ec2.yml") -> Path:
        """An inventory on the moto endpoint whose filters find this test's instances, then ``body``."""
        head = f"plugin: amazon.aws.aws_ec2\nendpoint_url: {self.moto.endpoint_url}\nregions: [us-east-1]\n"
        # Indented lines at the top of ``body`` add filters to the Suite one.
        body = f"filters:\n  tag:Suite: {self.suite}\n" + textwrap.dedent(body)
        path = self.dir / name
        path.write_text(head + body, encoding="utf-8")
        return path

    def load(self, body: str = "") -> Inventory:
        return load_inventory(self.write(body))


@pytest.fixture
def fleet(moto: MotoServer, ec2: Any, tmp_path: Path) -> Fleet:
    return Fleet(moto, ec2, tmp_path, uuid.uuid4().hex[:12])


def error_of(action: Callable[[], object]) -> str:
    with pytest.raises(InventoryError) as caught:
        action()
    return str(caught.value)


def describe(fleet: Fleet, *ids: str) -> dict[str, Any]:
    reply = fleet.ec2.describe_instances(InstanceIds=list(ids))
    return {i["InstanceId"]: i for r in reply["Reservations"] for i in r["Instances"]}


# Which instances ----------------------------------------------------------------


def test_moto_reports_new_instances_running_at_once(fleet: Fleet) -> None:
    """moto answers run_instances with 'pending' but describes the instance as running right away."""
    reply = fleet.ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)
    instance = reply["Instances"][0]
    assert instance["State"]["Name"] == "pending"
    assert describe(fleet, instance["InstanceId"])[instance["InstanceId"]]["State"]["Name"] == "running"


def test_only_running_instances_matching_the_filters_are_hosts(fleet: Fleet) -> None:
    """A stopped instance and one with another tag are left out; the filter's two running workers stay."""
    workers = fleet.launch(count=3, Role="worker")
    fleet.launch(Role="other")
    fleet.ec2.stop_instances(InstanceIds=[workers[0]])
    inventory = fleet.load("  tag:Role: worker\nhostnames: [instance-id]\n")
    assert sorted(inventory.names()) == sorted(workers[1:])
    assert {h.groups for h in inventory.hosts} == {("aws_ec2",)}


def test_a_state_filter_that_admits_stopped_instances_still_skips_them(fleet: Fleet) -> None:
    """Only running instances are hosts, even when the file's own filter asks for stopped ones too."""
    running, stopped = fleet.launch(count=2)
    fleet.ec2.stop_instances(InstanceIds=[stopped])
    inventory = fleet.load("  instance-state-name: [running, stopped]\nhostnames: [instance-id]\n")
    assert inventory.names() == (running,)


def test_pending_and_stopping_instances_are_skipped() -> None:
    """moto has no lasting pending state, so this is checked on plain describe-instances data."""
    config = parse_ec2_config({"plugin": "aws_ec2", "hostnames": ["instance-id"]}, "x.aws_ec2.yml")
    instances = [
        ("us-east-1", {"InstanceId": f"i-{state}", "State": {"Name": state}, "PrivateIpAddress": "10.0.0.1"})
        for state in ("pending", "running", "stopping", "shutting-down")
    ]
    assert [h.name for h in build_hosts(config, instances, Path("."))] == ["i-running"]


def test_filter_by_instance_type(fleet: Fleet) -> None:
    """An instance-type filter keeps only instances of that EC2 type."""
    gpu = fleet.launch("p3.2xlarge", Name="gpu")
    fleet.launch("m5.xlarge", Name="cpu")
    inventory = fleet.load("  instance-type: p3.2xlarge\nhostnames: [instance-id]\n")
    assert inventory.names() == tuple(gpu)


def test_include_and_exclude_filters(fleet: Fleet) -> None:
    """include_filters add a query's instances to the filters'; exclude_filters take any away."""
    fleet.launch(Name="a", Role="worker")
    fleet.launch(Name="b", Role="spare")
    fleet.launch(Name="c", Role="worker", Maintenance="true")
    fleet.launch(Name="d", Role="other")
    inventory = fleet.load(
        f"""\
          tag:Role: worker
        include_filters:
          - {{tag:Suite: {fleet.suite}, tag:Role: spare}}
        exclude_filters:
          - {{tag:Suite: {fleet.suite}, tag:Maintenance: "true"}}
        hostnames: [tag:Name]
        """
    )
    assert inventory.names() == ("a", "b")


# Names, addresses, types -------------------------------------------------------


def test_hostnames_take_the_first_source_an_instance_has(fleet: Fleet) -> None:
    """tag:Name where set, else the next source; the dict form joins a prefix with a separator."""
    named, unnamed = fleet.launch(Name="alpha")[0], fleet.launch()[0]
    inventory = fleet.load("hostnames: [tag:Name, instance-id]\n")
    assert sorted(inventory.names()) == sorted(["alpha", unnamed])
    facts = describe(fleet, named, unnamed)
    inventory = fleet.load("hostnames:\n  - {name: private-ip-address, prefix: tag:Name, separator: '-'}\n")
    assert sorted(inventory.names()) == sorted(
        [f"alpha-{facts[named]['PrivateIpAddress']}", facts[unnamed]["PrivateIpAddress"]]
    )


def test_default_hostname_and_address_are_ansibles(fleet: Fleet) -> None:
    """With no hostnames or address set: named and reached by public DNS name; others reach its private IP."""
    (instance_id,) = fleet.launch()
    facts = describe(fleet, instance_id)[instance_id]
    (host,) = fleet.load().hosts
    assert host.name == host.address == facts["PublicDnsName"] != ""
    assert host.private_address == facts["PrivateIpAddress"]
    assert host.vars["instance_id"] == instance_id
    assert host.vars["placement"]["region"] == "us-east-1"


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("distproc_address: private-ip-address", "PrivateIpAddress"),
        ("distproc_address: public-ip-address", "PublicIpAddress"),
        ("distproc_address: [tag:Missing, public-dns-name]", "PublicDnsName"),
        ("compose: {ansible_host: private_ip_address}", "PrivateIpAddress"),
        ("distproc_address: tag:Addr", "tag"),
    ],
)
def test_address_choices(fleet: Fleet, setting: str, field: str) -> None:
    """distproc_address (or compose's ansible_host) picks the address SSH connects to."""
    (instance_id,) = fleet.launch(Addr="bastion.example")
    facts = describe(fleet, instance_id)[instance_id]
    (host,) = fleet.load(f"hostnames: [instance-id]\n{setting}\n").hosts
    assert host.address == ("bastion.example" if field == "tag" else facts[field])
    assert host.private_address == facts["PrivateIpAddress"]


def test_instance_without_the_address_asked_for_is_an_error(fleet: Fleet) -> None:
    """A missing address source names the host and the source instead of dropping the host."""
    (instance_id,) = fleet.launch()
    message = error_of(lambda: fleet.load("hostnames: [instance-id]\ndistproc_address: tag:Addr\n"))
    assert f"host {instance_id} ({instance_id}): has no tag:Addr to connect to" in message


def test_instance_type_from_the_ec2_type_a_map_or_a_tag(fleet: Fleet) -> None:
    """ec2 gives ml.<EC2 type>; the map overrides it; tag:KEY reads a tag; no tag means untyped."""
    fleet.launch("p4d.24xlarge", Name="big", Serves="ml.g5.xlarge,ml.g5.2xlarge")
    fleet.launch("m5.large", Name="small")
    inventory = fleet.load("hostnames: [tag:Name]\n")
    assert {h.name: h.instance_type for h in inventory.hosts} == {
        "big": ("ml.p4d.24xlarge",),
        "small": ("ml.m5.large",),
    }
    inventory = fleet.load(
        "hostnames: [tag:Name]\ndistproc_instance_type_map: {m5.large: [ml.m5.large, ml.t3.medium]}\n"
    )
    assert [h.name for h in select_hosts(inventory, "ml.t3.medium", 1)] == ["small"]
    inventory = fleet.load("hostnames: [tag:Name]\ndistproc_instance_type_from: tag:Serves\n")
    assert {h.name: h.instance_type for h in inventory.hosts} == {
        "big": ("ml.g5.xlarge", "ml.g5.2xlarge"),
        "small": (),
    }


def test_vars_and_compose_apply_to_every_host(fleet: Fleet) -> None:
    """vars are checked like a static file's (key path from the file's folder); compose reads attributes."""
    fleet.launch(Name="a", Rack="r1")
    fleet.launch(Name="b", Rack="r2")
    inventory = fleet.load(
        """\
        hostnames: [tag:Name]
        vars:
          ansible_user: ubuntu
          ansible_ssh_private_key_file: keys/id_ed25519
          distproc_gpus: all
          distproc_work_dir: /data/distproc/
          distproc_known_hosts: ~/.ssh/fleet_known_hosts
        compose:
          rack: tags.Rack
          distproc_gpu_mode: "'runtime'"
        """
    )
    for host in inventory.hosts:
        assert host.user == "ubuntu"
        assert host.key_file == str(fleet.dir / "keys" / "id_ed25519")
        assert host.gpus == "all" and host.gpu_mode == "runtime"
        assert host.work_dir == "/data/distproc"
        assert host.known_hosts == os.path.expanduser("~/.ssh/fleet_known_hosts")
    assert [h.vars["rack"] for h in inventory.hosts] == ["r1", "r2"]


def test_compose_of_a_missing_attribute_is_skipped_unless_strict(fleet: Fleet) -> None:
    """As in Ansible: a compose value the instance lacks leaves the variable unset; strict makes it an error."""
    fleet.launch(Name="a")
    (host,) = fleet.load("hostnames: [tag:Name]\ncompose: {rack: tags.Rack}\n").hosts
    assert "rack" not in host.vars
    message = error_of(lambda: fleet.load("hostnames: [tag:Name]\nstrict: true\ncompose: {rack: tags.Rack}\n"))
    assert "host a (" in message and "compose.rack: the instance has no tags.Rack" in message


def test_hosts_are_ordered_by_name_with_numbers_by_value(fleet: Fleet) -> None:
    """worker-2 comes before worker-10 whatever the launch order, and every load gives the same order."""
    for name in ("worker-10", "worker-2", "worker-1", "worker-11"):
        fleet.launch(Name=name)
    first = fleet.load("hostnames: [tag:Name]\n")
    assert first.names() == ("worker-1", "worker-2", "worker-10", "worker-11")
    assert fleet.load("hostnames: [tag:Name]\n").names() == first.names()


def test_two_instances_with_one_name_are_an_error(fleet: Fleet) -> None:
    """Ansible would merge them into one host; distproc names both instances instead."""
    first, second = fleet.launch(count=2, Name="twin")
    message = error_of(lambda: fleet.load("hostnames: [tag:Name]\n"))
    assert "are both named twin" in message and first in message and second in message


def test_every_page_is_read(fleet: Fleet) -> None:
    """With 5 instances a page, 12 instances take three requests; all 12 are hosts."""
    ids = [fleet.launch()[0] for _ in range(12)]  # one reservation each: moto pages by reservation
    page = fleet.ec2.describe_instances(Filters=[{"Name": "tag:Suite", "Values": [fleet.suite]}], MaxResults=5)
    assert page.get("NextToken")  # the server really does page at this size
    inventory = fleet.load("hostnames: [instance-id]\ndistproc_page_size: 5\n")
    assert sorted(inventory.names()) == sorted(ids)


def test_the_example_file_reads_its_instances(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """inventory/ec2.aws_ec2.yml, pointed at moto by AWS_ENDPOINT_URL_EC2, finds its tagged GPU workers."""
    role = {"Role": "distproc-worker"}
    fleet.launch("p4d.24xlarge", Name="gpu-2", **role)
    fleet.launch("p4d.24xlarge", Name="gpu-1", **role)
    fleet.launch("p4d.24xlarge", Name="gpu-3", Maintenance="true", **role)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", fleet.moto.endpoint_url)
    inventory = load_inventory(REPO / "inventory" / "ec2.aws_ec2.yml")
    hosts = select_hosts(inventory, "ml.p4d.24xlarge", 2)
    assert [h.name for h in hosts] == ["gpu-1", "gpu-2"]
    assert all(h.user == "ubuntu" and h.gpus == "all" and h.address == h.private_address for h in hosts)


# Errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("filters: {tag:Role: {a: 1}}", "filters.tag:Role: must be a string or a list of strings (got a mapping)"),
        ("filter: {tag:Role: x}", "filter: is not an EC2 inventory option; did you mean filters?"),
        ("aws_secret_access_key: x", "aws_secret_access_key: credentials are not read from the inventory file"),
        ("regions: [us east 1]", "regions[0]: must be a region name like us-east-1"),
        ("hostnames: [name]", "hostnames[0]: must be tag:KEY or one of instance-id"),
        ("hostnames: ['tag:Name=web']", "hostnames[0]: tag:KEY=VALUE and tag:A,B are not supported"),
        ("compose: {ansible_user: ubuntu}", "compose.ansible_user: 'ubuntu' is not an instance attribute"),
        ("compose: {ansible_host: private_ip_address | default('x')}", "compose.ansible_host: distproc reads only"),
        ("vars: {ansible_host: 10.0.0.1}", "vars.ansible_host: would give every instance the same address"),
        ("vars: {distproc_gpus: x}", 'vars: distproc_gpus must be a non-negative integer or "all"'),
        ("vars: {distproc_gpu: 1}", "vars: distproc_gpu is not a variable distproc knows; did you mean distproc_gpus?"),
        ("vars: {ansible_user: '{{ u }}'}", "vars: ansible_user is a Jinja template"),
        ("distproc_page_size: 3", "distproc_page_size: must be a whole number from 5 to 1000"),
        (
            "distproc_instance_type_from: name",
            "distproc_instance_type_from: must be ec2 (ml. + the EC2 type) or tag:KEY",
        ),
        ("endpoint_url: ftp://x", "endpoint_url: must be an http:// or https:// URL"),
        ("strict: yes please", "strict: must be true or false"),
        (
            "distproc_address: private-ip-address\ncompose: {ansible_host: public_ip_address}",
            "distproc_address: and compose.ansible_host both set the address",
        ),
        (
            "vars: {distproc_instance_type: ml.m5.xlarge}\ndistproc_instance_type_from: ec2",
            "distproc_instance_type_from: and vars.distproc_instance_type both set the instance type",
        ),
    ],
)
def test_bad_options_name_the_file_and_the_field(tmp_path: Path, body: str, expected: str) -> None:
    """Each bad option is an InventoryError naming the file and the option's path, before any AWS call."""
    path = tmp_path / "bad.aws_ec2.yml"
    # An endpoint nothing listens on: reaching it would be a different error.
    # A key given twice is refused, so the default endpoint is left out where the case sets its own.
    endpoint = "" if body.startswith("endpoint_url:") else "endpoint_url: http://127.0.0.1:9\n"
    path.write_text(f"plugin: aws_ec2\n{endpoint}{body}\n", encoding="utf-8")
    assert f"{path}: {expected}" in error_of(lambda: load_inventory(path))


def test_other_plugins_are_refused(tmp_path: Path) -> None:
    """An Ansible plugin file distproc cannot read says so instead of reading it as groups."""
    path = tmp_path / "x.gcp_compute.yml"
    path.write_text("plugin: google.cloud.gcp_compute\nprojects: [p]\n", encoding="utf-8")
    assert "plugin: 'google.cloud.gcp_compute' is not an inventory plugin distproc reads" in error_of(
        lambda: load_inventory(path)
    )


def test_no_region_anywhere_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without regions: and without a boto3 default region, the error says where to set one."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    path = tmp_path / "x.aws_ec2.yml"
    path.write_text("plugin: aws_ec2\n", encoding="utf-8")
    assert "regions: none given, and boto3 has no default region" in error_of(lambda: load_inventory(path))


def test_unreachable_endpoint_is_an_inventory_error_naming_it(tmp_path: Path) -> None:
    """Connection refused becomes one InventoryError that names the endpoint, not a botocore traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # Bound but not listening: connections to it are refused while the test runs.
        path = tmp_path / "x.aws_ec2.yml"
        path.write_text(f"plugin: aws_ec2\nendpoint_url: http://127.0.0.1:{port}\n", encoding="utf-8")
        with pytest.raises(InventoryError) as caught:
            load_inventory(path)
    assert f"cannot reach the EC2 endpoint http://127.0.0.1:{port} (us-east-1)" in str(caught.value)
    assert type(caught.value.__cause__).__module__.startswith("botocore")


def test_no_credentials_is_an_inventory_error(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 finding no credentials is reported as such."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert "no AWS credentials for" in error_of(fleet.load)


def test_refused_credentials_are_an_inventory_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that checks credentials and refuses them: the error says so, with EC2's code."""
    server = start_moto_server(auth=True)
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        path = tmp_path / "x.aws_ec2.yml"
        path.write_text(f"plugin: aws_ec2\nendpoint_url: {server.endpoint_url}\n", encoding="utf-8")
        message = error_of(lambda: load_inventory(path))
    finally:
        server.stop()
    assert f"{server.endpoint_url} (us-east-1) refused the AWS credentials (AuthFailure)" in message


# Wiring -------------------------------------------------------------------------


def test_cli_validate_prints_the_plan_from_an_ec2_inventory(fleet: Fleet) -> None:
    """`distproc validate --inventory FILE job.json` lists algo-K <- instance, in name order."""
    fleet.launch("m5.xlarge", Name="node-b")
    fleet.launch("m5.xlarge", Name="node-a")
    inventory = fleet.write("hostnames: [tag:Name]\ndistproc_address: private-ip-address\n")
    job = fleet.dir / "job.json"
    cluster = {"ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 1}}
    request = {"ProcessingJobName": "ec2-plan", "ProcessingResources": cluster, "AppSpecification": {"ImageUri": "img"}}
    job.write_text(json.dumps(request), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    env |= {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "DISTPROC_HOME": str(fleet.dir)}
    done = subprocess.run(
        [sys.executable, "-m", "distproc", "validate", "--inventory", str(inventory), str(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if "<-" in line]
    assert [(words[0], words[2]) for words in lines] == [("algo-1", "node-a"), ("algo-2", "node-b")]


def test_importing_distproc_does_not_import_boto3() -> None:
    """boto3 loads only when an EC2 inventory is read, so `import distproc` stays light."""
    code = "import sys, distproc, distproc.inventory.ec2; print('boto3' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
