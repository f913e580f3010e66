"""Reading the YAML document: its groups, its hosts, and each host's merged variables.

This mirrors what Ansible's YAML inventory plugin does with the same file (the
tests compare the two): groups nest through ``children``, a host may sit in
several groups, and a host's variables are merged lowest precedence first:

1. group variables, ordered by the group's depth below ``all`` (``all`` is 0,
   its children 1, ...; a group reached along several paths takes the
   deepest), then by ``ansible_group_priority`` (default 1), then by group
   name, so among groups of equal depth and priority the alphabetically last
   wins;
2. the host's own variables, where a host listed several times takes each
   listing in file order, the last one winning.

A group defined in two places merges, later keys win. A key given twice in
one mapping is refused, where PyYAML keeps the last (and Ansible too, after a
warning): a host listed twice under one ``hosts:`` would lose its first
variables without a word. Merging is shallow, like Ansible's default ``hash_behaviour=replace``.

Problems are collected, not raised one at a time: the reader goes on past a
bad group, host or variable, and the caller gets every problem in one
:class:`~distproc.errors.InventoryError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InventoryError, Violation
from ._names import unknown_variable
from ._ranges import PatternError, parse_host_pattern

#: Group and host entries visited before the file is refused. YAML aliases let
#: a small file name the same group a vast number of times; real inventories
#: stay far below this.
MAX_ENTRIES = 250_000

#: The largest inventory file read, in bytes. 10,000 hosts with four variables
#: each take 1.2 MB of YAML (read in about 1.5 s, 30 MB of memory), so 16 MiB
#: is room for a fleet ten times that or long values and comments, while a
#: wrong path (/dev/zero, a disk image) is refused after reading 16 MiB
#: instead of exhausting memory.
MAX_INVENTORY_BYTES = 16 * 1024 * 1024

_TEMPLATE_MARKERS = ("{{", "{%", "{#")


class Unsafe(str):
    """A string tagged ``!unsafe``: Ansible leaves it untemplated, so braces in it are data."""

    __slots__ = ()


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _RefuseDuplicates(yaml.constructor.SafeConstructor):
    """Records each key given twice in one mapping; PyYAML would keep the last silently."""

    duplicates: list[Violation]
    checked_nodes: set[int]

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Every mapping passes here before '<<' merges are spliced into it, so
        # this sees the keys as written; a merged-in key may be overridden.
        if id(node) not in self.checked_nodes:
            self.checked_nodes.add(id(node))
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor refuses it itself
                if first is None:
                    seen[key] = line
                else:
                    self.duplicates.append(
                        Violation(
                            f"line {line}",
                            f"key {show_key(key)} is given twice in one mapping (first at line {first}); "
                            "YAML keeps only the last, so merge the two or rename one",
                        )
                    )
        super().flatten_mapping(node)


def show_key(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


class _Loader(_RefuseDuplicates, yaml.SafeLoader):
    """safe_load, plus Ansible's ``!unsafe`` tag, so a valid Ansible file with it still loads."""


def _construct_unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Unsafe:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(
            None, None, "distproc accepts !unsafe only on a single string", node.start_mark
        )
    return Unsafe(loader.construct_scalar(node))


_Loader.add_constructor("!unsafe", _construct_unsafe)

# libyaml's parser and composer, where PyYAML was built with them: a 64-host
# inventory reads in 5 ms instead of 48. Its composer recurses in C once per
# nesting level, so a hostile file nested 100,000 deep would overflow the C
# stack and kill the process; the depth is therefore measured first, on
# libyaml's event stream (its parser keeps its own stack, no recursion).
_FastLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(_RefuseDuplicates, yaml.CSafeLoader):
        """_Loader with libyaml underneath."""

    _CLoader.add_constructor("!unsafe", _construct_unsafe)
    _FastLoader = _CLoader

# Deeper than any inventory needs (each group level is two), and shallow
# enough for PyYAML's own recursion.
MAX_DEPTH = 200
_OPENING = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSING = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _nested_deeper_than(text: bytes, limit: int, loader: type) -> bool:
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, _OPENING):
            depth += 1
            if depth > limit:
                return True
        elif isinstance(event, _CLOSING):
            depth -= 1
    return False


@dataclass(frozen=True, slots=True)
class RawHost:
    """A host as the document gives it, before its variables are checked."""

    name: str
    groups: tuple[str, ...]
    vars: dict[str, Any]


@dataclass(slots=True)
class _Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    priority: int = 1
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)


def read_document(path: Path, source: str) -> list[RawHost]:
    """Every host of the file at ``path`` in inventory order; ``source`` names it in errors."""
    problems: list[Violation] = []
    hosts, problems = read_groups_collecting(load_yaml(path, source, problems), source, problems)
    if problems:
        raise InventoryError.listing(source, problems)
    return hosts


def read_groups(data: Any, source: str) -> list[RawHost]:
    """Every host of an already loaded static inventory document, in inventory order."""
    hosts, problems = read_groups_collecting(data, source)
    if problems:
        raise InventoryError.listing(source, problems)
    return hosts


def read_groups_collecting(
    data: Any, source: str, problems: list[Violation] | None = None
) -> tuple[list[RawHost], list[Violation]]:
    """The hosts that could be read, and every problem found (added to ``problems``).

    A problem that leaves nothing to read on (an empty file, a budget spent)
    still raises, with the problems found before it.
    """
    reader = _Reader(source, problems)
    reader.read(data)
    return reader.hosts(), reader.problems


def check_variables(value: Any, owner: str, source: str) -> dict[str, Any]:
    """``value`` as a mapping of variables, refused as a static file's would be (templates, unknown names)."""
    reader = _Reader(source)
    checked = reader.variables(value, owner)
    if reader.problems:
        raise InventoryError.listing(source, reader.problems)
    return checked


def read_capped(path: Path, source: str, cap: int = MAX_INVENTORY_BYTES) -> bytes:
    """The file's bytes, refused past ``cap``: at most cap + 1 bytes are ever read.

    (distproc's job files get a bounded read of their own; the two are to merge.)
    """
    try:
        with path.open("rb") as file:
            data = file.read(cap + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or exc
        raise InventoryError(f"{source}: cannot read the inventory: {reason}") from exc
    if len(data) > cap:
        raise InventoryError(
            f"{source}: larger than {cap // (1024 * 1024)} MiB, the most an inventory file may be; "
            "is this the inventory file?"
        )
    return data


def load_yaml(path: Path, source: str, problems: list[Violation] | None = None) -> Any:
    """The file's YAML, read as Ansible would (``!unsafe`` kept), every failure an InventoryError.

    A key given twice in one mapping is a problem: added to ``problems`` when
    given (the caller reports it with the rest), raised otherwise.
    """
    text = read_capped(path, source)
    try:
        if _FastLoader is not None and _nested_deeper_than(text, MAX_DEPTH, _FastLoader):
            raise InventoryError(f"{source}: nested too deeply to read")
        loader = (_FastLoader or _Loader)(text)
        loader.duplicates = []
        loader.checked_nodes = set()
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
        if problems is not None:
            problems.extend(loader.duplicates)
        elif loader.duplicates:
            raise InventoryError.listing(source, loader.duplicates)
        return data
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if "nesting depth" in problem:
            # PyYAML 6.0.4 and later stop deep nesting themselves; say it as
            # the depth check above does, whichever of the two saw it first.
            raise InventoryError(f"{source}: nested too deeply to read{where}") from exc
        if "'!vault'" in problem:
            problem = "Ansible Vault values (!vault) are not supported by distproc"
        raise InventoryError(f"{source}: YAML error{where}: {problem}") from exc
    except yaml.YAMLError as exc:
        raise InventoryError(f"{source}: not valid YAML: {exc}") from exc


def kind_of(value: object) -> str:
    """A value's kind, for messages: 'a list', 'a mapping', "str 'x'"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


class _Reader:
    """One walk over the document, collecting groups, host listings, their order, and every problem."""

    def __init__(self, source: str, problems: list[Violation] | None = None) -> None:
        self.source = source
        self.problems: list[Violation] = [] if problems is None else problems
        self.groups: dict[str, _Group] = {"all": _Group("all")}
        # Insertion order of this dict is the inventory order.
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.host_groups: dict[str, list[str]] = {}
        self.budget = MAX_ENTRIES
        self.checked: set[int] = set()
        self.checking: set[int] = set()

    def problem(self, where: str, rule: str) -> None:
        """Note a problem and read on."""
        self.problems.append(Violation(where, rule))

    def fatal(self, rule: str) -> InventoryError:
        """A problem past which nothing can be read: it and those before it, as one error."""
        problem = Violation("(document)", rule)
        if not self.problems:
            return InventoryError(f"{self.source}: {rule}", [problem])
        return InventoryError.listing(self.source, [*self.problems, problem])

    def spend(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise self.fatal(
                f"more than {MAX_ENTRIES} group and host entries (YAML aliases repeating "
                "a group?); refusing to expand further",
            )

    def read(self, data: Any) -> None:
        if data is None:
            raise self.fatal("the file is empty; an inventory starts with a group, usually 'all:'")
        if not isinstance(data, dict) or not data:
            raise self.fatal(
                f"the top level must be a mapping of group names (usually 'all:'), "
                f"got {'an empty mapping' if data == {} else kind_of(data)}",
            )
        for name, body in data.items():
            self.group(name, body, None if name == "all" else "all", "the top level")

    def group(self, name: Any, body: Any, parent: str | None, where: str) -> None:
        self.spend()
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            self.problem(where, f"group name {name!r} must be a non-empty string without whitespace")
            return
        group = self.groups.setdefault(name, _Group(name))
        # A group that cannot be linked is not read further: through an alias it
        # may contain itself, and reading it would never end.
        if parent is not None and not self.link(parent, name):
            return
        if body is None:
            return
        if not isinstance(body, dict):
            self.problem(
                f"group {name}", f"must be a mapping with 'hosts', 'vars' and/or 'children', got {kind_of(body)}"
            )
            return
        for key, value in body.items():
            if key == "vars":
                self.group_vars(group, value)
            elif key == "hosts":
                self.hosts_of(group, value)
            elif key == "children":
                self.children_of(group, value)
            else:
                # Ansible only warns here; a misspelt 'hosts' would lose hosts silently.
                self.problem(f"group {name}", f"unknown key {key!r}; a group has only 'hosts', 'vars' and 'children'")

    def link(self, parent: str, child: str) -> bool:
        if child == "all":
            self.problem(f"group {parent}", "'all' contains every group and cannot be a child")
            return False
        if child == parent or child in self.ancestors(parent):
            self.problem(
                f"group {parent}", f"child group {child} already contains {parent}; a group cannot contain itself"
            )
            return False
        if child not in self.groups[parent].children:
            self.groups[parent].children.append(child)
            self.groups[child].parents.append(parent)
        return True

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        pending = [name]
        while pending:
            for parent in self.groups[pending.pop()].parents:
                if parent not in seen:
                    seen.add(parent)
                    pending.append(parent)
        return seen

    def group_vars(self, group: _Group, value: Any) -> None:
        if value is None:
            return
        for key, item in self.variables(value, f"group {group.name}").items():
            if key == "ansible_group_priority":
                group.priority = self.priority(group.name, item)
            else:
                group.vars[key] = item

    def priority(self, group: str, value: Any) -> int:
        if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) < 10:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**9:
            self.problem(f"group {group}", f"ansible_group_priority must be a whole number (got {kind_of(value)})")
            return 1
        return value

    def hosts_of(self, group: _Group, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            value = {value: None}  # Ansible reads a lone string as one host
        if not isinstance(value, dict):
            self.problem(
                f"group {group.name}",
                "hosts must be a mapping of host names to their variables (one 'name:' per line), "
                f"got {kind_of(value)}",
            )
            return
        for pattern, host_vars in value.items():
            self.spend()
            if not isinstance(pattern, str):
                self.problem(f"group {group.name}", f"host name {pattern!r} must be a string")
                continue
            try:
                names, port = parse_host_pattern(pattern)
            except PatternError as exc:
                self.problem(f"group {group.name}", f"host {pattern!r}: {exc}")
                continue
            variables = {} if host_vars is None else self.variables(host_vars, f"host {pattern}")
            for name in names:
                self.spend()
                merged = self.host_vars.setdefault(name, {})
                if port is not None:
                    merged["ansible_port"] = port
                merged.update(variables)
                groups = self.host_groups.setdefault(name, [])
                if group.name not in groups:
                    groups.append(group.name)

    def children_of(self, group: _Group, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            value = {value: None}  # as Ansible does for hosts and children
        if not isinstance(value, dict):
            self.problem(
                f"group {group.name}", f"children must be a mapping of group names to groups, got {kind_of(value)}"
            )
            return
        for child, body in value.items():
            self.group(child, body, group.name, f"group {group.name}: children")

    def variables(self, value: Any, owner: str) -> dict[str, Any]:
        """The mapping's variables that can be used; each one refused is noted and left out."""
        if not isinstance(value, dict):
            self.problem(owner, f"variables must be a mapping of names to values, got {kind_of(value)}")
            return {}
        usable: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                self.problem(owner, f"variable name {key!r} must be a non-empty string")
                continue
            refusal = unknown_variable(key)
            if refusal is not None:
                self.problem(owner, refusal)
                continue
            if self.refuse_templates(item, owner, key):
                usable[key] = item
        return usable

    def refuse_templates(self, value: Any, owner: str, key: str) -> bool:
        """Whether ``value`` is free of Jinja templates (and of alias loops); a problem is noted if not."""
        if isinstance(value, str):
            if not isinstance(value, Unsafe) and any(m in value for m in _TEMPLATE_MARKERS):
                self.problem(
                    owner,
                    f"{key} is a Jinja template ({kind_of(value)}); distproc reads "
                    "values literally and does not template: write the value itself "
                    "(or tag it !unsafe if the braces are meant literally)",
                )
                return False
            return True
        if not isinstance(value, dict | list | set):
            return True
        # Aliases share objects, and may loop back on themselves: check each once.
        ident = id(value)
        if ident in self.checked:
            return True
        if ident in self.checking:
            self.problem(owner, f"{key} contains itself through a YAML alias")
            return False
        self.checking.add(ident)
        items: Iterable[Any] = value.values() if isinstance(value, dict) else value
        clean = all(self.refuse_templates(item, owner, key) for item in items)
        self.checking.discard(ident)
        if clean:
            self.checked.add(ident)
        return clean

    def depths(self) -> dict[str, int]:
        """Each group's longest distance below ``all``, as Ansible counts depth."""
        depth = {"all": 0}
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = ["all"]
        while ready:
            name = ready.pop()
            for child in self.groups[name].children:
                depth[child] = max(depth.get(child, 0), depth[name] + 1)
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        return depth

    def hosts(self) -> list[RawHost]:
        depth = self.depths()
        lineage = {name: self.ancestors(name) | {name} for name in self.groups}
        result = []
        for name, own_vars in self.host_vars.items():
            member_of: set[str] = set()
            for group in self.host_groups[name]:
                member_of |= lineage[group]
            ordered = sorted(member_of | {"all"}, key=lambda g: (depth[g], self.groups[g].priority, g))
            merged: dict[str, Any] = {}
            for group in ordered:
                merged.update(self.groups[group].vars)
            merged.update(own_vars)
            result.append(RawHost(name, tuple(g for g in ordered if g != "all"), merged))
        return result
