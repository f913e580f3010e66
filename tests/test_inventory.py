"""The inventory: Ansible's YAML format read into typed hosts, and host selection."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distproc.inventory
from distproc.errors import InventoryError
from distproc.inventory import (
    Host,
    Inventory,
    _document,
    _hosts,
    _load,
    _model,
    _ranges,
    _select,
    load_inventory,
    select_hosts,
)
from distproc.inventory._ranges import PatternError, expand_ranges, parse_host_pattern

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "inventory").glob("*.yaml"))
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"

Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write a dedented inventory into tmp_path and return its path."""

    def _write(text: str, name: str = "inv.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


def by_name(inventory: Inventory) -> dict[str, Host]:
    return {host.name: host for host in inventory.hosts}


def error_of(path: Path) -> str:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return str(caught.value)


def thaw(value: object) -> Any:
    """The frozen vars back as plain JSON-like data, to compare with ansible-inventory."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


PRECEDENCE = """\
all:
  vars: {v: all, from_all: 1, level: all}
  hosts:
    solo:
  children:
    gpu:
      vars: {v: gpu, level: gpu}
      hosts:
        shared: {own: first}
      children:
        rack:
          vars: {v: rack}
          hosts:
            deep: {v: host}
            shared:
    alpha:
      vars: {same_depth: alpha, prio: alpha}
      hosts:
        shared: {own: second}
    zulu:
      vars: {same_depth: zulu, prio: zulu, ansible_group_priority: 0}
      hosts:
        shared:
"""


def test_precedence_all_then_parent_then_child_then_host(write: Write) -> None:
    """Variables merge all < parent group < child group < host."""
    hosts = by_name(load_inventory(write(PRECEDENCE)))
    assert hosts["solo"].vars["v"] == "all"
    assert hosts["deep"].vars["v"] == "host"
    assert hosts["deep"].vars["level"] == "gpu"
    assert hosts["deep"].vars["from_all"] == 1
    assert hosts["shared"].vars["v"] == "rack"


def test_same_depth_groups_merge_by_priority_then_name(write: Write) -> None:
    """Equal-depth groups: alphabetically last wins, unless ansible_group_priority says more."""
    shared = by_name(load_inventory(write(PRECEDENCE)))["shared"]
    assert shared.vars["same_depth"] == "alpha"  # zulu's priority 0 sorts it before alpha
    assert "ansible_group_priority" not in shared.vars


def test_host_listed_twice_takes_the_later_listing(write: Write) -> None:
    """A host's own variables from several listings merge in file order."""
    shared = by_name(load_inventory(write(PRECEDENCE)))["shared"]
    assert shared.vars["own"] == "second"


def test_children_give_groups_through_ancestry(write: Write) -> None:
    """A host in a child group is in its parents too; groups list lowest precedence first."""
    hosts = by_name(load_inventory(write(PRECEDENCE)))
    assert hosts["deep"].groups == ("gpu", "rack")
    assert hosts["shared"].groups == ("zulu", "alpha", "gpu", "rack")
    assert hosts["solo"].groups == ()


def test_group_defined_twice_merges_and_top_level_groups_join_all(write: Write) -> None:
    """A group named in two places is one group; a top-level group sits under all."""
    path = write(
        """\
        all:
          vars: {a: 1}
          children:
            g:
              vars: {x: 1, y: 1}
              hosts: {h1: }
        g:
          vars: {y: 2}
          hosts: {h2: }
        """
    )
    hosts = by_name(load_inventory(path))
    assert thaw(hosts["h1"].vars) == {"a": 1, "x": 1, "y": 2}
    assert hosts["h2"].groups == ("g",)


def test_lone_strings_name_one_host_or_one_child(write: Write) -> None:
    """As in Ansible, 'hosts: name' and 'children: name' stand for a one-entry mapping."""
    path = write("all:\n  children:\n    g:\n      hosts: justone\n      children: sub\n")
    (host,) = load_inventory(path).hosts
    assert (host.name, host.groups) == ("justone", ("g",))


def test_null_unsets_an_inherited_value(write: Write) -> None:
    """A child's null undoes its parent's value, so the default applies."""
    path = write(
        """\
        all:
          vars: {ansible_user: admin, distproc_gpus: 4}
          hosts:
            h: {ansible_user: null, distproc_gpus: null}
        """
    )
    host = load_inventory(path).hosts[0]
    assert (host.user, host.gpus) == (None, 0)


def test_inventory_order_is_first_appearance_in_the_file(write: Write) -> None:
    """Hosts keep the order they first appear in, nested groups included."""
    path = write(
        """\
        all:
          children:
            b:
              hosts: {h3: , h1: }
              children:
                c:
                  hosts: {h4: , h3: }
          hosts: {h2: , h1: }
        """
    )
    assert load_inventory(path).names() == ("h3", "h1", "h4", "h2")


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        (
            "gpu[01:04].example",
            ["gpu01.example", "gpu02.example", "gpu03.example", "gpu04.example"],
        ),
        ("node[a:c]", ["nodea", "nodeb", "nodec"]),
        ("n[1:10:4]", ["n1", "n5", "n9"]),
        ("n[:2]", ["n0", "n1", "n2"]),
        ("n[1:03]", ["n1", "n2", "n3"]),
        ("n[y:B]", ["ny", "nz", "nA", "nB"]),
        ("r[1:2]n[a:b]", ["r1na", "r1nb", "r2na", "r2nb"]),
        ("plain.example", ["plain.example"]),
    ],
)
def test_ranges_expand_as_ansible_does(pattern: str, names: list[str]) -> None:
    """Numeric (padded), letter, stepped and multiple ranges expand in Ansible's order."""
    assert expand_ranges(pattern) == names


@pytest.mark.parametrize(
    ("pattern", "names", "port"),
    [
        ("web[1:2]:2222", ["web1", "web2"], 2222),
        ("10.0.0.1:2200", ["10.0.0.1"], 2200),
        ("fe80::1", ["fe80::1"], None),
        ("[fe80::1]:22", ["fe80::1"], 22),
    ],
)
def test_host_patterns_carry_ports_and_ipv6(pattern: str, names: list[str], port: int | None) -> None:
    """name:PORT sets the port; IPv6 addresses are names, bracketed when they carry a port."""
    assert parse_host_pattern(pattern) == (names, port)


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("n[3:1]", "begin is after end"),
        ("n[c:a]", "begin is after end"),
        ("n[01:3]", "same width"),
        ("n[1:]", "no end"),
        ("n[a:3]", "both ends"),
        ("n[1:2:0]", "step"),
        ("n[1-3]", "[begin:end]"),
        ("n[1:2", "bracket"),
        ("a:b", "port"),
        ("a:99999", "port"),
        ("a b", "whitespace"),
        ("n[0:99999999]", "more than"),
        ("a:b:c", "IPv6"),
    ],
)
def test_bad_host_patterns_name_file_group_and_pattern(write: Write, pattern: str, fragment: str) -> None:
    """A malformed host pattern is an InventoryError naming the file, group and pattern."""
    path = write(f'all:\n  children:\n    grp:\n      hosts:\n        "{pattern}":\n')
    message = error_of(path)
    assert str(path) in message
    assert "group grp" in message
    assert repr(pattern) in message
    assert fragment in message


def test_port_in_host_name_sets_ansible_port_unless_vars_say_otherwise(write: Write) -> None:
    """'h:2222' sets ansible_port; the entry's own ansible_port still wins."""
    path = write('all:\n  hosts:\n    "a:2222":\n    "b:2222": {ansible_port: 2300}\n')
    hosts = by_name(load_inventory(path))
    assert (hosts["a"].port, hosts["b"].port) == (2222, 2300)


def test_defaults_for_a_bare_host(write: Write) -> None:
    """A host with no variables gets every documented default."""
    host = load_inventory(write("all:\n  hosts:\n    h1:\n")).hosts[0]
    assert host == Host(name="h1", address="h1")
    assert (host.port, host.user, host.key_file, host.connection) == (22, None, None, "ssh")
    assert (host.instance_type, host.gpus, host.gpu_mode) == ((), 0, "gpus")
    assert (host.docker_command, host.docker_host) == (("docker",), None)
    assert (host.work_dir, host.private_address, host.python) == (
        "/var/tmp/distproc",
        "h1",
        "python3",
    )
    assert (host.known_hosts, host.groups, dict(host.vars)) == (None, (), {})


def test_every_variable_is_read(write: Write) -> None:
    """Each supported variable lands in its typed field."""
    path = write(
        """\
        all:
          hosts:
            h1:
              ansible_host: 203.0.113.5
              ansible_port: "2201"
              ansible_user: ops
              ansible_ssh_private_key_file: keys/id_ed25519
              ansible_connection: paramiko
              distproc_instance_type: [ml.p3.2xlarge, ml.p3.8xlarge, ml.p3.2xlarge]
              distproc_gpus: 2
              distproc_gpu_mode: runtime
              distproc_docker_command: "sudo -n docker --config '/etc/my docker'"
              distproc_docker_host: tcp://127.0.0.1:2375
              distproc_work_dir: /data/distproc/
              distproc_private_address: 10.1.0.5
              distproc_python: /opt/py/bin/python3
              distproc_known_hosts: ~/cluster_known_hosts
        """
    )
    host = load_inventory(path).hosts[0]
    assert (host.address, host.port, host.user, host.connection) == (
        "203.0.113.5",
        2201,
        "ops",
        "ssh",
    )
    assert host.key_file == str(path.parent / "keys" / "id_ed25519")
    assert host.instance_type == ("ml.p3.2xlarge", "ml.p3.8xlarge")
    assert (host.gpus, host.gpu_mode) == (2, "runtime")
    assert host.docker_command == ("sudo", "-n", "docker", "--config", "/etc/my docker")
    assert host.docker_host == "tcp://127.0.0.1:2375"
    assert (host.work_dir, host.private_address) == ("/data/distproc", "10.1.0.5")
    assert host.python == "/opt/py/bin/python3"
    assert host.known_hosts == os.path.expanduser("~/cluster_known_hosts")


def test_python_interpreter_wins_and_auto_falls_back(write: Write) -> None:
    """ansible_python_interpreter beats distproc_python; Ansible's 'auto' falls back to it."""
    path = write(
        """\
        all:
          vars: {distproc_python: /usr/bin/python3.11}
          hosts:
            a: {ansible_python_interpreter: /usr/bin/python3}
            b: {ansible_python_interpreter: auto_silent}
            c: {ansible_python_interpreter: auto, distproc_python: null}
        """
    )
    hosts = by_name(load_inventory(path))
    assert [hosts[n].python for n in "abc"] == [
        "/usr/bin/python3",
        "/usr/bin/python3.11",
        "python3",
    ]


def test_old_ansible_names_are_read_and_must_agree(write: Write) -> None:
    """ansible_ssh_host/port/user stand in for the new names; disagreeing with them is an error."""
    path = write("all:\n  hosts:\n    h: {ansible_ssh_host: 10.0.0.9, ansible_ssh_port: 2022}\n")
    host = load_inventory(path).hosts[0]
    assert (host.address, host.port) == ("10.0.0.9", 2022)
    path = write("all:\n  hosts:\n    h: {ansible_host: a.example, ansible_ssh_host: b.example}\n")
    message = error_of(path)
    assert "host h" in message and "ansible_host" in message and "ansible_ssh_host" in message


@pytest.mark.parametrize(
    ("name", "connection"),
    [("ssh", "ssh"), ("paramiko", "ssh"), ("smart", "ssh"), ("local", "local")],
)
def test_connection_kinds(write: Write, name: str, connection: str) -> None:
    """paramiko and smart count as ssh; local is local."""
    path = write(f"all:\n  hosts:\n    h: {{ansible_connection: {name}}}\n")
    assert load_inventory(path).hosts[0].connection == connection


def test_local_host_is_reached_on_loopback(write: Write) -> None:
    """A local-connection host named localhost gets private address 127.0.0.1."""
    path = write(
        """\
        all:
          hosts:
            localhost: {ansible_connection: local}
            other: {ansible_connection: local, ansible_host: 192.0.2.7}
            sshself: {ansible_host: localhost}
        """
    )
    hosts = by_name(load_inventory(path))
    assert hosts["localhost"].private_address == "127.0.0.1"
    assert hosts["other"].private_address == "192.0.2.7"
    assert hosts["sshself"].private_address == "localhost"


def test_absolute_and_tilde_key_paths(write: Write) -> None:
    """Key files: ~ is expanded, absolute paths stay, relative ones follow the inventory."""
    path = write(
        "all:\n  hosts:\n    a: {ansible_ssh_private_key_file: ~/.ssh/k}\n"
        "    b: {ansible_private_key_file: /etc/k}\n"
        "    c: {ansible_ssh_private_key_file: ../k}\n"
    )
    hosts = by_name(load_inventory(path))
    assert hosts["a"].key_file == os.path.expanduser("~/.ssh/k")
    assert hosts["b"].key_file == "/etc/k"
    assert hosts["c"].key_file == str(path.parent.parent / "k")


def test_empty_instance_type_list_serves_nothing(write: Write) -> None:
    """distproc_instance_type: [] is valid and matches no job."""
    host = load_inventory(write("all:\n  hosts:\n    h: {distproc_instance_type: []}\n")).hosts[0]
    assert host.instance_type == ()
    assert not host.serves("ml.m5.xlarge")


def test_vars_are_read_only_all_the_way_down(write: Write) -> None:
    """Host.vars is a read-only mapping; nested lists and mappings are frozen too."""
    path = write("all:\n  hosts:\n    h: {extra: {list: [1, {k: v}]}}\n")
    host = load_inventory(path).hosts[0]
    assert isinstance(host.vars, MappingProxyType)
    extra = host.vars["extra"]
    assert isinstance(extra, MappingProxyType)
    assert extra["list"][1] == {"k": "v"}
    assert isinstance(extra["list"], tuple)
    with pytest.raises(TypeError):
        host.vars["extra"] = 1  # type: ignore[index]
    assert hash(host) == hash(load_inventory(path).hosts[0])


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("ansible_port", "0", "from 1 to 65535"),
        ("ansible_port", "ssh", "from 1 to 65535"),
        ("ansible_port", "true", "from 1 to 65535"),
        ("ansible_host", "'two words'", "without spaces"),
        ("ansible_host", "[a]", "non-empty single-line string"),
        ("ansible_user", "''", "non-empty"),
        ("ansible_connection", "winrm", "must be ssh or local"),
        ("distproc_instance_type", "7", "instance type"),
        ("distproc_instance_type", "[ml.m5.xlarge, 3]", "instance type"),
        ("distproc_gpus", "x", 'non-negative integer or "all"'),
        ("distproc_gpus", "-1", 'non-negative integer or "all"'),
        ("distproc_gpus", "yes", 'non-negative integer or "all"'),
        ("distproc_gpu_mode", "nvidia", "runtime"),
        ("distproc_docker_command", "[]", "list of words"),
        ("distproc_docker_command", '"docker \'unclosed"', "cannot be split"),
        ("distproc_docker_command", "{a: b}", "list of words"),
        ("distproc_docker_host", "/run/docker.sock", "unix://"),
        ("distproc_work_dir", "relative/dir", "absolute"),
        ("distproc_work_dir", "/", "absolute path below /"),
        ("distproc_private_address", "3", "single-line string"),
        ("distproc_known_hosts", "[a]", "single-line string"),
        ("distproc_python", "{}", "single-line string"),
        ("distproc_memory_limit", "lots", "at least 6m"),
        ("distproc_memory_limit", "1m", "at least 6m"),
        ("distproc_memory_limit", "-5", "at least 6m"),
        ("distproc_memory_limit", "2t", "at least 6m"),
    ],
)
def test_bad_values_name_file_host_and_variable(write: Write, variable: str, value: str, fragment: str) -> None:
    """Each wrongly typed or out-of-range variable is refused with file, host and variable named."""
    path = write(f"all:\n  hosts:\n    gpu1:\n      {variable}: {value}\n")
    message = error_of(path)
    assert message.startswith(f"{path}: host gpu1: {variable} ")
    assert fragment in message


def test_gpus_message_matches_the_documented_form(write: Write) -> None:
    """The distproc_gpus error reads exactly as documented."""
    path = write("all:\n  hosts:\n    gpu1: {distproc_gpus: x}\n")
    assert error_of(path) == (f"{path}: host gpu1: distproc_gpus must be a non-negative integer or \"all\" (got 'x')")


def test_unknown_distproc_variable_is_refused_with_a_suggestion(write: Write) -> None:
    """A misspelt distproc_* variable is an error that suggests the right name."""
    message = error_of(write("all:\n  hosts:\n    h: {distproc_gpu: 4}\n"))
    assert "host h: distproc_gpu is not a variable" in message
    assert "did you mean distproc_gpus?" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            'all:\n  vars: {ansible_user: \'{{ lookup("env", "USER") }}\'}\n  hosts: {h: }\n',
            "group all",
        ),
        ("all:\n  hosts:\n    h: {distproc_gpus: '{{ n }}'}\n", "host h"),
        ("all:\n  hosts:\n    h: {x: [1, {y: '{% if a %}b{% endif %}'}]}\n", "host h"),
    ],
)
def test_jinja_templates_are_refused(write: Write, text: str, where: str) -> None:
    """A value holding {{ or {% anywhere, nested too, is refused: distproc does not template."""
    message = error_of(write(text))
    assert f": {where}: " in message
    assert "does not template" in message


def test_unsafe_tag_keeps_braces_literal(write: Write) -> None:
    """An Ansible !unsafe value is plain data, so its braces are allowed."""
    path = write("all:\n  hosts:\n    h: {fmt: !unsafe '{{.ID}}'}\n")
    value = load_inventory(path).hosts[0].vars["fmt"]
    assert value == "{{.ID}}"
    assert type(value) is str


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- all\n", "top level must be a mapping"),
        ("just text\n", "top level must be a mapping"),
        ("{}\n", "an empty mapping"),
        ("all: [a, b]\n", "group all: must be a mapping"),
        ("all:\n  hosts: [a, b]\n", "group all: hosts must be a mapping"),
        ("all:\n  children: [a]\n", "group all: children must be a mapping"),
        ("all:\n  vars: [a]\n", "group all: variables must be a mapping"),
        ("all:\n  vars: {1: x}\n", "variable name 1"),
        ("all:\n  hosts:\n    h: [x]\n", "host h: variables must be a mapping"),
        ("all:\n  hosts:\n    12: \n", "host name 12 must be a string"),
        ("all:\n  host:\n    h: \n", "unknown key 'host'"),
        ("all:\n  children:\n    g:\n      children:\n        g: \n", "cannot contain itself"),
        ("g:\n  children:\n    h:\n      children:\n        g: \n", "cannot contain itself"),
        ("all:\n  children:\n    all: \n", "cannot be a child"),
        ("all:\n  children:\n    'bad name': \n", "without whitespace"),
        ("all:\n  vars: {ansible_group_priority: high}\n", "ansible_group_priority"),
        ("a: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n", "Ansible Vault"),
        ("all:\n  vars: {loop: &y {k: *y}}\n", "group all: loop contains itself"),
        ("all:\n  hosts:\n    h: {l: &x [1, *x]}\n", "host h: l contains itself"),
    ],
)
def test_malformed_documents_are_inventory_errors(write: Write, text: str, fragment: str) -> None:
    """Structural mistakes are InventoryErrors that name the file and the problem."""
    path = write(text)
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert fragment in message


def test_yaml_syntax_error_reports_line_and_column(write: Write) -> None:
    """A YAML syntax error becomes an InventoryError with the line and column."""
    path = write("all:\n  hosts:\n    h1: {a: 1\n    h2:\n")
    message = error_of(path)
    assert message.startswith(f"{path}: YAML error at line ")
    assert "line 4, column 7" in message


def test_missing_file_and_folder_are_inventory_errors(tmp_path: Path) -> None:
    """A path that is not a readable file is an InventoryError naming it."""
    for path in (tmp_path / "nope.yaml", tmp_path):
        message = error_of(path)
        assert message.startswith(f"{path}: cannot read the inventory")


def test_group_vars_folder_beside_the_file_is_refused(write: Write) -> None:
    """A group_vars/ folder Ansible would read, and distproc would not, is an error."""
    path = write("all:\n  hosts:\n    h:\n")
    (path.parent / "group_vars").mkdir()
    message = error_of(path)
    assert "group_vars" in message and "does not read" in message


def test_alias_bombs_are_bounded(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    """YAML aliases that name a group exponentially often are refused, not expanded."""
    monkeypatch.setattr(_document, "MAX_ENTRIES", 5_000)  # same mechanism, less waiting
    lines = ["all:", "  children:", "    g0: &g0 {hosts: {h: }}"]
    for level in range(1, 30):
        below = f"*g{level - 1}"
        lines.append(f"    g{level}: &g{level} {{children: {{a{level}: {below}, b{level}: {below}}}}}")
    message = error_of(write("\n".join(lines) + "\n"))
    assert "more than" in message and "entries" in message


def test_deeply_nested_yaml_is_an_inventory_error(write: Write) -> None:
    """Nesting deep enough to exhaust the parser's stack is reported, not a crash."""
    path = write("all: " + "[" * 20000 + "]" * 20000 + "\n")
    message = error_of(path)
    # Our own depth check or PyYAML's (6.0.4 and later): the same InventoryError either way.
    assert message.startswith(f"{path}: nested too deeply to read"), message


@pytest.mark.parametrize("nesting", ["[" * 100_000 + "]" * 100_000, "{a: " * 50_000 + "1" + "}" * 50_000])
def test_yaml_nested_100000_deep_is_refused_without_crashing_the_process(write: Write, nesting: str) -> None:
    """libyaml's composer recurses in C: the depth is measured on its event stream before it runs."""
    path = write("all: " + nesting + "\n")
    code = "import sys; from distproc.inventory import load_inventory; load_inventory(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr[-300:])  # an exception, not a signal
    assert f"{path}: nested too deeply to read" in done.stderr


def test_libyaml_and_pure_python_read_an_inventory_alike(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast loader (libyaml, where PyYAML has it) and PyYAML's own give the same hosts."""
    from distproc.inventory import _document

    assert _document._FastLoader is not None, "PyYAML here is built with libyaml"
    text = textwrap.dedent(
        """
        all:
          vars: {ansible_user: ops, distproc_gpus: 0}
          children:
            gpu:
              vars: {distproc_instance_type: ml.g5.xlarge, distproc_gpus: all}
              hosts:
                g[01:03]: {ansible_host: 10.0.0.1, note: !unsafe "{{ raw }}"}
            cpu:
              hosts:
                c1: {ansible_host: 10.0.1.1, ansible_port: 2222, distproc_instance_type: ml.m5.xlarge}
                c2: {ansible_host: "10.0.1.2", distproc_instance_type: ml.m5.xlarge, x: [1, 2.5, yes, null, ~, 0x1F]}
        """
    )
    path = write(text)
    fast = load_inventory(path)
    monkeypatch.setattr(_document, "_FastLoader", None)
    assert load_inventory(path) == fast
    assert [h.name for h in fast.hosts] == ["g01", "g02", "g03", "c1", "c2"]


# Selection -----------------------------------------------------------------


def fleet(*hosts: Host) -> Inventory:
    return Inventory(path=Path("inventory/x.yaml"), hosts=hosts)


def typed(name: str, *types: str, **fields: Any) -> Host:
    return Host(name=name, address=fields.pop("address", name), instance_type=types, **fields)


def test_select_takes_the_first_matching_hosts_in_order() -> None:
    """select_hosts returns the first `count` hosts that serve the type, in inventory order."""
    inventory = fleet(typed("a", "m5"), typed("b", "p3"), typed("c", "m5"), typed("d", "m5"))
    assert [h.name for h in select_hosts(inventory, "m5", 2)] == ["a", "c"]


def test_select_matches_any_type_in_a_list() -> None:
    """A host serving several instance types is chosen for any of them."""
    inventory = fleet(typed("a", "m5", "p3"), typed("b", "p3"))
    assert [h.name for h in select_hosts(inventory, "m5", 1)] == ["a"]
    assert [h.name for h in select_hosts(inventory, "p3", 2)] == ["a", "b"]


def test_too_few_hosts_lists_what_exists() -> None:
    """Too few matches: the message lists the matches, the other types and the untyped hosts."""
    inventory = fleet(
        typed("gpu1", "ml.p3.2xlarge"),
        typed("a", "ml.m5.xlarge"),
        typed("gpu2", "ml.p3.2xlarge"),
        typed("b", "ml.m5.xlarge"),
        typed("c", "ml.m5.xlarge"),
        typed("d"),
    )
    with pytest.raises(InventoryError) as caught:
        select_hosts(inventory, "ml.p3.2xlarge", 4)
    assert str(caught.value) == (
        "job needs 4 hosts of type ml.p3.2xlarge but inventory/x.yaml has 2: gpu1, gpu2 "
        "(other types: ml.m5.xlarge ×3: a, b, c; untyped: d); "  # noqa: RUF001
        "a host without distproc_instance_type serves no job"
    )


def test_too_few_hosts_suggests_a_close_type_and_shortens_long_lists() -> None:
    """With no match, a near-miss type is suggested; long name lists are cut with a count."""
    inventory = fleet(*(typed(f"n{i}", "ml.m5.xlarge") for i in range(12)))
    with pytest.raises(InventoryError) as caught:
        select_hosts(inventory, "ml.m5.xlarg", 1)
    message = str(caught.value)
    assert "needs 1 host of type ml.m5.xlarg but inventory/x.yaml has 0 (" in message
    assert "n7 and 4 more" in message
    assert message.endswith("did you mean ml.m5.xlarge?")


def test_empty_inventory_says_it_has_no_hosts() -> None:
    """Selecting from an inventory without hosts says exactly that."""
    with pytest.raises(InventoryError, match=r"inventory/x\.yaml has no hosts$"):
        select_hosts(fleet(), "m5", 1)


def test_count_must_be_positive() -> None:
    """A count below 1 is a programming error, not an inventory problem."""
    with pytest.raises(ValueError, match="at least 1"):
        select_hosts(fleet(typed("a", "m5")), "m5", 0)


def test_hosts_sharing_machine_and_work_dir_are_refused() -> None:
    """Two chosen hosts with one address, port and work_dir would clobber each other."""
    inventory = fleet(typed("a", "m5", address="10.0.0.1"), typed("b", "m5", address="10.0.0.1"))
    with pytest.raises(InventoryError) as caught:
        select_hosts(inventory, "m5", 2)
    message = str(caught.value)
    assert message.startswith("inventory/x.yaml: hosts a and b are both 10.0.0.1 port 22")
    assert "distproc_work_dir" in message
    assert [h.name for h in select_hosts(inventory, "m5", 1)] == ["a"]


def test_same_machine_with_distinct_work_dirs_or_ports_is_fine() -> None:
    """One address is fine for several hosts when work_dir or port tells them apart."""
    inventory = fleet(
        typed("a", "m5", address="10.0.0.1"),
        typed("b", "m5", address="10.0.0.1", work_dir="/var/tmp/distproc-b"),
        typed("c", "m5", address="10.0.0.1", port=2222),
    )
    assert len(select_hosts(inventory, "m5", 3)) == 3


def test_local_hosts_are_one_machine_whatever_their_address() -> None:
    """Local-connection hosts share this machine, so they need distinct work dirs."""
    inventory = fleet(
        typed("x", "m5", address="localhost", connection="local"),
        typed("y", "m5", address="127.0.0.1", connection="local", port=2200),
    )
    with pytest.raises(InventoryError, match="both this machine"):
        select_hosts(inventory, "m5", 2)


# The example inventories ------------------------------------------------------


def test_local_example_is_the_embedded_default() -> None:
    """inventory/local.yaml is one local ml.m5.xlarge host working in /var/tmp/distproc."""
    (host,) = load_inventory(REPO / "inventory" / "local.yaml").hosts
    assert (host.name, host.connection, host.instance_type) == (
        "localhost",
        "local",
        ("ml.m5.xlarge",),
    )
    assert (host.work_dir, host.private_address) == ("/var/tmp/distproc", "127.0.0.1")


def test_three_hosts_example_has_private_addresses() -> None:
    """inventory/three-hosts.yaml gives three typed hosts with group and host variables."""
    inventory = load_inventory(REPO / "inventory" / "three-hosts.yaml")
    chosen = select_hosts(inventory, "ml.m5.xlarge", 3)
    assert [(h.name, h.private_address) for h in chosen] == [
        ("node1", "10.0.0.11"),
        ("node2", "10.0.0.12"),
        ("node3", "10.0.0.13"),
    ]
    assert {(h.user, h.python) for h in chosen} == {("distproc", "/usr/bin/python3")}
    assert {h.key_file for h in chosen} == {os.path.expanduser("~/.ssh/distproc_ed25519")}


def test_gpu_example_expands_ranges_and_overrides_per_rack() -> None:
    """inventory/gpu-hosts.yaml gives 8 GPU hosts from ranges, rack_b on the nvidia runtime."""
    inventory = load_inventory(REPO / "inventory" / "gpu-hosts.yaml")
    gpus = select_hosts(inventory, "ml.p3.16xlarge", 8)
    assert gpus[0].name == "gpu01.rack-a.example.internal"
    assert {h.gpus for h in gpus} == {"all"}
    assert [h.gpu_mode for h in gpus] == ["gpus"] * 4 + ["runtime"] * 4
    assert gpus[7].docker_command == ("sudo", "-n", "docker")
    assert select_hosts(inventory, "ml.m5.4xlarge", 1)[0].name == "prep1.example.internal"


def ansible_view(path: Path, home: Path) -> tuple[set[str], dict[str, Any]]:
    """Host names and merged host variables as Ansible's own ansible-inventory sees them."""
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
    }
    done = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    hostvars: dict[str, Any] = listing.pop("_meta")["hostvars"]
    names = set(hostvars)
    for group in listing.values():
        names.update(group.get("hosts", ()))
    return names, hostvars


@pytest.mark.skipif(not ANSIBLE_INVENTORY.exists(), reason="ansible-core is not installed")
@pytest.mark.parametrize("example", [*EXAMPLES, "precedence"], ids=lambda p: getattr(p, "name", p))
def test_ansible_sees_the_same_hosts_and_variables(example: Path | str, write: Write, tmp_path: Path) -> None:
    """ansible-inventory --list finds the same hosts and merged variables as load_inventory."""
    path = write(PRECEDENCE) if example == "precedence" else Path(example)
    names, hostvars = ansible_view(path, tmp_path)
    inventory = load_inventory(path)
    assert set(inventory.names()) == names
    assert len(inventory.hosts) == len(names)
    for host in inventory.hosts:
        theirs = hostvars.get(host.name, {})
        assert thaw(host.vars) == theirs
        assert host.address == theirs.get("ansible_host", host.name)
        expected_types = theirs.get("distproc_instance_type", [])
        expected_types = [expected_types] if isinstance(expected_types, str) else expected_types
        assert list(host.instance_type) == expected_types


def test_docstring_examples_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples in the inventory package's docstrings run as written."""
    monkeypatch.chdir(REPO)
    for module in (distproc.inventory, _hosts, _load, _model, _ranges, _select):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__


# Properties ----------------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "all",
        "hosts",
        "vars",
        "children",
        "g",
        "h",
        "web[1:3]",
        "n[a:b]:22",
        "x[3:1]",
        "ansible_host",
        "ansible_port",
        "ansible_connection",
        "ansible_user",
        "ansible_ssh_private_key_file",
        "ansible_group_priority",
        "ansible_python_interpreter",
        "distproc_instance_type",
        "distproc_gpus",
        "distproc_gpu_mode",
        "distproc_docker_command",
        "distproc_docker_host",
        "distproc_work_dir",
        "distproc_private_address",
        "distproc_known_hosts",
        "distproc_bogus",
    ]
)
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _TEXT
    | st.sampled_from(
        [
            "all",
            "local",
            "ssh",
            "ml.m5.xlarge",
            "{{ x }}",
            "/abs",
            "rel",
            "unix:///s",
            "22",
            "runtime",
            "~/k",
            "auto",
        ]
    )
)
_ANY_KEY = _KEYS | _TEXT | st.integers() | st.none() | st.booleans()
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_ANY_KEY, inner, max_size=4),
    max_leaves=40,
)
_VARS = st.dictionaries(_KEYS, _SCALARS | st.lists(_SCALARS, max_size=3), max_size=4)
_GROUPS = st.recursive(
    st.none()
    | st.fixed_dictionaries(
        {}, optional={"hosts": st.dictionaries(_KEYS, st.none() | _VARS, max_size=3), "vars": _VARS}
    ),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "hosts": st.dictionaries(_KEYS, st.none() | _VARS, max_size=3),
            "vars": _VARS,
            "children": st.dictionaries(_KEYS, inner, max_size=3),
        },
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "inv.yaml"


def _loads_or_refuses(path: Path) -> None:
    try:
        inventory = load_inventory(path)
    except InventoryError as exc:
        assert str(exc).startswith(f"{path}: ")
    else:
        assert all(isinstance(host, Host) for host in inventory.hosts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_DOCUMENTS | st.dictionaries(_KEYS, _GROUPS, min_size=1, max_size=3))
def test_any_yaml_document_loads_or_is_an_inventory_error(fuzz_file: Path, document: Any) -> None:
    """Whatever YAML structure the file holds, load_inventory never raises anything else."""
    fuzz_file.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    _loads_or_refuses(fuzz_file)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_loads_or_is_an_inventory_error(fuzz_file: Path, text: str) -> None:
    """Arbitrary text, YAML or not, gives an Inventory or an InventoryError."""
    fuzz_file.write_bytes(text.encode("utf-8", "surrogatepass"))
    _loads_or_refuses(fuzz_file)


@given(first=st.integers(0, 300), length=st.integers(0, 300), step=st.integers(1, 7))
def test_numeric_ranges_count_and_order(first: int, length: int, step: int) -> None:
    """[a:b:s] yields every s-th number from a to b inclusive, in order."""
    names = expand_ranges(f"h[{first}:{first + length}:{step}]")
    assert names == [f"h{n}" for n in range(first, first + length + 1, step)]


def test_pattern_error_is_a_value_error() -> None:
    """Range errors outside the loader are plain ValueErrors (PatternError)."""
    with pytest.raises(PatternError):
        expand_ranges("h[2:1]")
    assert issubclass(PatternError, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("64m", 64 << 20), ("16G", 16 << 30), ("1048576000", 1048576000), ("8192k", 8 << 20), (None, None)],
)
def test_memory_limit_is_read_as_bytes(write: Write, value: str | None, expected: int | None) -> None:
    line = f"      distproc_memory_limit: {value}\n" if value is not None else ""
    path = write(f"all:\n  hosts:\n    gpu1:\n      ansible_host: 10.0.0.1\n{line}")
    (host,) = load_inventory(path).hosts
    assert host.memory_limit_bytes == expected
