"""The inventory's checks a first-time user trips over: keys given twice, every problem at once,
misspelt ansible_*/distproc_* names, instance types no job can ask for, and the file size cap."""

from __future__ import annotations

import doctest
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from distproc.errors import InventoryError
from distproc.inventory import Host, Inventory, load_inventory, select_hosts
from distproc.inventory._document import MAX_INVENTORY_BYTES
from distproc.spec import validate_request
from distproc.spec.instance_types import closest, processing_instance_types

Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(text: str, name: str = "inv.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


def refusal(path: Path) -> InventoryError:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return caught.value


# Keys given twice -----------------------------------------------------------


def test_a_host_listed_twice_in_one_mapping_is_refused_with_line_and_key(write: Write) -> None:
    """PyYAML would keep the second node1 and drop the first's variables without a word."""
    path = write(
        """\
        all:
          hosts:
            node1: {ansible_host: 10.0.0.1}
            node2:
            node1: {ansible_user: admin}
        """
    )
    error = refusal(path)
    assert str(error) == (
        f"{path}: line 5: key 'node1' is given twice in one mapping (first at line 3); "
        "YAML keeps only the last, so merge the two or rename one"
    )


def test_a_group_variable_given_twice_is_refused(write: Write) -> None:
    """Anywhere in the document: here two ansible_user keys under one group's vars, with the other problems."""
    path = write(
        """\
        all:
          children:
            gpu:
              vars:
                ansible_user: ubuntu
                distproc_gpus: all
                ansible_user: root
              hosts:
                g1:
                  distproc_gpus: lots
        """
    )
    message = str(refusal(path))
    assert message.startswith(f"{path}: 2 problems:\n")
    assert "  - line 7: key 'ansible_user' is given twice in one mapping (first at line 5)" in message
    assert "  - host g1: distproc_gpus must be a non-negative integer or \"all\" (got 'lots')" in message


def test_a_key_given_twice_in_an_ec2_file_is_refused(write: Write) -> None:
    """EC2 inventory files are read by the same loader, before any AWS call."""
    path = write("plugin: aws_ec2\nregions: [us-east-1]\nregions: [eu-west-1]\n", name="x.aws_ec2.yml")
    assert f"{path}: line 3: key 'regions' is given twice" in str(refusal(path))


def test_yaml_merge_keys_may_be_overridden(write: Write) -> None:
    """A key that overrides one merged in with '<<' is not a duplicate; Ansible files use this."""
    path = write(
        """\
        all:
          vars:
            base: &base {ansible_user: ubuntu, distproc_gpus: 1}
          hosts:
            a:
              <<: *base
              distproc_gpus: 2
        """
    )
    host = load_inventory(path).hosts[0]
    assert (host.user, host.gpus) == ("ubuntu", 2)


# Every problem at once ------------------------------------------------------


def test_every_problem_is_reported_each_with_its_host_or_group_and_variable(write: Write) -> None:
    """Three problems in three places: one error lists all three, and keeps them as data."""
    path = write(
        """\
        all:
          children:
            web:
              hots:
                w1:
          hosts:
            a: {ansible_port: 99999}
            b: {distproc_gpu_mode: cuda}
        """
    )
    error = refusal(path)
    assert str(error) == (
        f"{path}: 3 problems:\n"
        "  - group web: unknown key 'hots'; a group has only 'hosts', 'vars' and 'children'\n"
        "  - host a: ansible_port must be a whole number from 1 to 65535 (got 99999)\n"
        '  - host b: distproc_gpu_mode must be "gpus" (docker --gpus) or "runtime" (docker --runtime nvidia) '
        "(got 'cuda')"
    )
    assert [p.path for p in error.problems] == ["group web", "host a", "host b"]


def test_one_host_with_several_bad_variables_gets_each_reported(write: Write) -> None:
    path = write("all:\n  hosts:\n    a: {ansible_port: x, distproc_gpus: -1, distproc_work_dir: rel}\n")
    message = str(refusal(path))
    assert message.startswith(f"{path}: 3 problems:\n")
    for variable in ("ansible_port", "distproc_gpus", "distproc_work_dir"):
        assert f"  - host a: {variable} must be" in message


def test_a_group_variables_problem_is_listed_once_for_all_its_hosts(write: Write) -> None:
    """A bad group value reaches every host; the list names them in one line instead of one line each."""
    hosts = "".join(f"        n{i}:\n" for i in range(10))
    path = write(f"all:\n  vars: {{distproc_gpus: many}}\n  hosts:\n{textwrap.indent(hosts, '  ')}")
    message = str(refusal(path))
    assert message == (
        f"{path}: hosts n0, n1, n2, n3, n4, n5, n6, n7 and 2 more: "
        "distproc_gpus must be a non-negative integer or \"all\" (got 'many')"
    )


def test_the_list_stops_at_fifty_and_counts_the_rest(write: Write) -> None:
    hosts = "".join(f"    h{i}: {{ansible_port: bad{i}}}\n" for i in range(60))
    path = write(f"all:\n  hosts:\n{hosts}")
    error = refusal(path)
    lines = str(error).splitlines()
    assert lines[0] == f"{path}: 60 problems:"
    assert lines[1].startswith("  - host h0: ansible_port must be")
    assert lines[50].startswith("  - host h49: ")
    assert lines[51:] == ["  and 10 more"]
    assert len(error.problems) == 60


# ansible_* and distproc_* names ---------------------------------------------


def test_a_misspelt_ansible_variable_is_refused_with_a_hint(write: Write) -> None:
    """ansible_hots would leave the host reached by its inventory name; at host or group level."""
    path = write(
        """\
        all:
          vars: {ansible_usr: ubuntu}
          hosts:
            node1: {ansible_hots: 10.0.0.5}
        """
    )
    message = str(refusal(path))
    assert message.startswith(f"{path}: 2 problems:\n")
    assert "  - group all: ansible_usr is not a variable Ansible or distproc knows; did you mean ansible_user?" in (
        message
    )
    assert "  - host node1: ansible_hots is not a variable Ansible or distproc knows; did you mean ansible_host?" in (
        message
    )


def test_a_misspelt_distproc_variable_is_refused_where_it_is_written(write: Write) -> None:
    path = write("all:\n  children:\n    gpu:\n      vars: {distproc_gpu: all}\n      hosts: {g1: , g2: }\n")
    message = str(refusal(path))
    assert message.startswith(f"{path}: group gpu: distproc_gpu is not a variable distproc knows; ")
    assert "did you mean distproc_gpus?" in message


@pytest.mark.parametrize(
    "name",
    [
        "ansible_become",
        "ansible_become_user",
        "ansible_become_method",
        "ansible_become_password",
        "ansible_python_interpreter",
        "ansible_ruby_interpreter",
        "ansible_ssh_common_args",
        "ansible_ssh_extra_args",
        "ansible_ssh_pipelining",
        "ansible_host_key_checking",
        "ansible_shell_type",
        "ansible_shell_executable",
        "ansible_password",
        "ansible_timeout",
        "ansible_sudo_pass",
        "ansible_winrm_transport",
        "ansible_network_os",
    ],
)
def test_ansible_variables_distproc_ignores_are_accepted(write: Write, name: str) -> None:
    """Real inventories set Ansible's behavioural variables; they load and stay in Host.vars."""
    path = write(f"all:\n  vars: {{{name}: 'yes', rack: r1}}\n  hosts:\n    a:\n")
    host = load_inventory(path).hosts[0]
    assert (host.vars[name], host.vars["rack"]) == ("yes", "r1")


def test_an_unknown_name_from_an_ec2_compose_is_refused(write: Write) -> None:
    path = write(
        "plugin: aws_ec2\nendpoint_url: http://127.0.0.1:9\ncompose: {ansible_hots: \"'10.0.0.5'\"}\n",
        name="x.aws_ec2.yml",
    )
    assert f"{path}: vars: ansible_hots is not a variable Ansible or distproc knows; did you mean ansible_host?" in (
        str(refusal(path))
    )


# Instance types ---------------------------------------------------------------


def test_an_instance_type_no_job_can_ask_for_is_refused_with_a_hint(write: Write) -> None:
    """distproc_instance_type: m5.xlarge was accepted, and the job then told 'did you mean m5.xlarge?'."""
    path = write("all:\n  hosts:\n    a: {distproc_instance_type: [ml.m5.large, m5.xlarge, ML.C5.XLARGE]}\n")
    message = str(refusal(path))
    assert message.startswith(f"{path}: 2 problems:\n")
    assert (
        "  - host a: distproc_instance_type: m5.xlarge is not an instance type a processing job can ask for; "
        "did you mean ml.m5.xlarge?"
    ) in message
    assert "ML.C5.XLARGE is not an instance type a processing job can ask for; did you mean ml.c5.xlarge?" in message


def test_an_ec2_files_instance_type_is_checked_too(write: Write) -> None:
    path = write(
        "plugin: aws_ec2\nendpoint_url: http://127.0.0.1:9\nvars: {distproc_instance_type: m5.xlarge}\n",
        name="x.aws_ec2.yml",
    )
    assert "vars: distproc_instance_type: m5.xlarge is not an instance type" in str(refusal(path))


@pytest.mark.parametrize(
    ("written", "meant"),
    [("m5.xlarge", "ml.m5.xlarge"), ("ML.M5.XLARGE", "ml.m5.xlarge"), ("ml.m5.xlarg", "ml.m5.xlarge")],
)
def test_the_hint_supplies_ml_and_ignores_case(written: str, meant: str) -> None:
    assert closest(written, processing_instance_types()) == meant


def test_a_family_processing_does_not_have_gets_no_misleading_hint() -> None:
    """ml.p4d.24xlarge is not a SageMaker Processing type; ml.r5d.24xlarge (one letter off) is no GPU host."""
    assert "ml.p4d.24xlarge" not in processing_instance_types()
    assert closest("p4d.24xlarge", processing_instance_types()) is None
    assert closest("p4d.24xlarge", ["ml.p4d.24xlarge", "ml.r5d.24xlarge"]) == "ml.p4d.24xlarge"


@pytest.mark.parametrize("written", ["m5.xlarge", "ML.M5.XLARGE"])
def test_the_job_validator_gives_the_same_hint(written: str) -> None:
    request = {"ProcessingResources": {"ClusterConfig": {"InstanceType": written}}}
    rules = [str(v) for v in validate_request(request) if "InstanceType" in v.path]
    assert rules == [
        f'ProcessingResources.ClusterConfig.InstanceType: must be a known ProcessingInstanceType (got "{written}"; '
        "did you mean ml.m5.xlarge?)"
    ]


def test_host_selection_gives_the_same_hint() -> None:
    hosts = (Host(name="a", address="a", instance_type=("ml.m5.xlarge",)),)
    with pytest.raises(InventoryError) as caught:
        select_hosts(Inventory(Path("x.yaml"), hosts), "ML.M5.XLARGE", 1)
    assert str(caught.value).endswith("did you mean ml.m5.xlarge?")


# The size cap -------------------------------------------------------------------


def test_dev_zero_is_refused_quickly_naming_the_file_and_the_cap() -> None:
    """At most cap + 1 bytes are read: no MemoryError, and no read that never ends."""
    error = refusal(Path("/dev/zero"))
    assert str(error) == "/dev/zero: larger than 16 MiB, the most an inventory file may be; is this the inventory file?"


def test_a_file_one_byte_over_the_cap_is_refused_and_one_at_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    head = b"all:\n  hosts:\n    a:\n"
    path.write_bytes(head + b"#" * (MAX_INVENTORY_BYTES - len(head) - 1) + b"\n")
    assert load_inventory(path).names() == ("a",)
    with path.open("ab") as file:
        file.write(b"#")
    assert str(refusal(path)) == (
        f"{path}: larger than 16 MiB, the most an inventory file may be; is this the inventory file?"
    )


def test_docstring_examples_of_the_name_and_type_checks_hold() -> None:
    from distproc.inventory import _names
    from distproc.spec import instance_types

    for module in (_names, instance_types):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
