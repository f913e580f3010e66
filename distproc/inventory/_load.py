"""load_inventory: an inventory file to checked hosts, static or EC2.

Apart from _hosts.py (one host's variables to a Host) because the EC2 reader
builds its hosts with _hosts.build_host and is itself called from here: kept
in one module, the two would import each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InventoryError, Violation
from ._document import load_yaml, read_groups_collecting
from ._ec2_config import PLUGIN_NAMES
from ._hosts import check_host
from ._model import Inventory

__all__ = ["load_inventory"]

#: Hosts named in one problem shared by several; the count is always exact.
_SHOWN_HOSTS = 8


def load_inventory(path: str | Path) -> Inventory:
    """Read an Ansible YAML inventory file into checked, typed hosts.

    Every problem (a missing file, bad YAML, a key given twice, a wrong type, a
    template, an unknown ``ansible_*`` or ``distproc_*`` name) is found before
    anything is raised: one :class:`~distproc.errors.InventoryError` names the
    file and lists each problem with its host or group and variable (a problem
    several hosts share, from a group's variables, is listed once for all).

    A file whose top level has ``plugin: amazon.aws.aws_ec2`` (or ``aws_ec2``,
    or ``distproc_ec2``) describes EC2 instances instead of listing hosts; it is
    read by :func:`distproc.inventory.ec2.load_ec2_inventory`.

    >>> inventory = load_inventory("inventory/local.yaml")
    >>> [(h.name, h.connection, h.instance_type) for h in inventory.hosts]
    [('localhost', 'local', ('ml.m5.xlarge',))]
    """
    path = Path(path)
    source = str(path)
    problems: list[Violation] = []
    try:
        data = load_yaml(path, source, problems)
        base_dir = Path(os.path.abspath(path)).parent
        for folder in ("group_vars", "host_vars"):
            # Ansible would merge these into the hosts' variables; ignoring them would
            # quietly connect with different settings than ansible-playbook uses.
            if (base_dir / folder).is_dir():
                raise InventoryError(
                    f"{source}: {base_dir / folder} is beside the inventory, and distproc "
                    f"does not read {folder}/ folders; move those variables into {path.name}"
                )
        plugin = data.get("plugin") if isinstance(data, dict) else None
        # A group's body is a mapping or nothing, so a string here is Ansible's plugin
        # marker (its YAML plugin refuses such a file too), never a static group.
        if isinstance(plugin, str):
            if plugin not in PLUGIN_NAMES:
                raise InventoryError(
                    f"{source}: plugin: {plugin!r} is not an inventory plugin distproc reads; it reads "
                    f"static YAML inventories and EC2 ones (plugin: {', '.join(sorted(PLUGIN_NAMES))})"
                )
            if problems:  # keys given twice in the EC2 file
                raise InventoryError.listing(source, problems)
            # Imported here, not at the top: boto3's module stays unread unless a file asks for EC2.
            from .ec2 import load_ec2_inventory

            return load_ec2_inventory(path, data)
        raw_hosts, problems = read_groups_collecting(data, source, problems)
        memo: dict[int, object] = {}
        hosts = []
        shared: dict[str, list[str]] = {}  # a problem -> the hosts that have it
        for raw in raw_hosts:
            host, found = check_host(raw, base_dir, memo)
            for problem in found:
                shared.setdefault(problem, []).append(raw.name)
            if host is not None:
                hosts.append(host)
        problems.extend(Violation(_hosts_named(names), problem) for problem, names in shared.items())
    except RecursionError as exc:
        # PyYAML recurses once per nesting level; a hostile file can exhaust the stack.
        raise InventoryError(f"{source}: nested too deeply to read") from exc
    if problems:
        raise InventoryError.listing(source, problems)
    return Inventory(path=path, hosts=tuple(hosts))


def _hosts_named(names: list[str]) -> str:
    if len(names) == 1:
        return f"host {names[0]}"
    shown = ", ".join(names[:_SHOWN_HOSTS])
    more = len(names) - _SHOWN_HOSTS
    return f"hosts {shown} and {more} more" if more > 0 else f"hosts {shown}"
