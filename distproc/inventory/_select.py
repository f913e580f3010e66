"""Choosing the hosts for a job: a pure function over an :class:`Inventory`."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InventoryError
from ..spec.instance_types import closest
from ._model import Host, Inventory

#: Names shown per list in a selection error; the count is always exact.
_SHOWN = 8


def select_hosts(inventory: Inventory, instance_type: str, count: int) -> tuple[Host, ...]:
    """The first ``count`` hosts, in inventory order, that serve ``instance_type``.

    Raises :class:`~distproc.errors.InventoryError` when fewer match (the
    message lists what the inventory does have), or when two chosen hosts
    would share one working directory on one machine.

    >>> from pathlib import Path
    >>> a = Host(name="a", address="10.0.0.1", instance_type=("ml.m5.xlarge",))
    >>> b = Host(name="b", address="10.0.0.2", instance_type=("ml.m5.xlarge",))
    >>> [h.name for h in select_hosts(Inventory(Path("x.yaml"), (a, b)), "ml.m5.xlarge", 1)]
    ['a']
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    matching = [host for host in inventory.hosts if host.serves(instance_type)]
    if len(matching) < count:
        raise InventoryError(_shortage(inventory, instance_type, count, matching))
    chosen = tuple(matching[:count])
    _refuse_shared_work_dirs(inventory, chosen)
    return chosen


def _names(hosts: Sequence[Host]) -> str:
    shown = ", ".join(host.name for host in hosts[:_SHOWN])
    more = len(hosts) - _SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _shortage(inventory: Inventory, instance_type: str, count: int, matching: list[Host]) -> str:
    noun = "host" if count == 1 else "hosts"
    message = f"job needs {count} {noun} of type {instance_type} but {inventory.path} "
    if not inventory.hosts:
        return message + "has no hosts"
    message += f"has {len(matching)}"
    if matching:
        message += f": {_names(matching)}"
    others: dict[str, list[Host]] = {}
    untyped = []
    for host in inventory.hosts:
        if host.serves(instance_type):
            continue
        if not host.instance_type:
            untyped.append(host)
        for other in host.instance_type:
            others.setdefault(other, []).append(host)
    # The multiplication sign reads as "three of"; an x would read as part of the type.
    parts = [f"{kind} ×{len(hosts)}: {_names(hosts)}" for kind, hosts in others.items()]  # noqa: RUF001
    if untyped:
        parts.append(f"untyped: {_names(untyped)}")
    if others:
        message += f" (other types: {'; '.join(parts)})"
    elif untyped:
        message += f" ({parts[0]})"
    close = closest(instance_type, others)
    if not matching and close:
        message += f"; did you mean {close}?"
    if untyped:
        message += "; a host without distproc_instance_type serves no job"
    return message


def _refuse_shared_work_dirs(inventory: Inventory, chosen: Sequence[Host]) -> None:
    # Two "hosts" that are one machine and one folder would overwrite each other's
    # job files; a different work_dir (or port, i.e. another machine) is fine.
    seen: dict[tuple[str, int, str], Host] = {}
    for host in chosen:
        if host.connection == "local":
            key = ("this machine", 0, host.work_dir)
            where = "this machine (ansible_connection: local)"
        else:
            key = (host.address.lower(), host.port, host.work_dir)
            where = f"{host.address} port {host.port}"
        first = seen.setdefault(key, host)
        if first is not host:
            raise InventoryError(
                f"{inventory.path}: hosts {first.name} and {host.name} are both {where} "
                f"with work dir {host.work_dir}; they would overwrite each other's files: "
                "give one its own distproc_work_dir"
            )
