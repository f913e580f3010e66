"""The options of an EC2 inventory file, checked into an :class:`Ec2Config`.

The format follows Ansible's ``amazon.aws.aws_ec2`` inventory plugin, so one
file can serve both (Ansible ignores the ``distproc_*`` options and ``vars``).
What distproc cannot honour the same way is refused rather than ignored: a
``compose`` expression beyond a plain attribute or literal, credentials in the
file, Ansible options that would change which hosts exist. docs/inventory.md
lists the options and the differences.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from ..errors import InventoryError
from ._document import check_variables, kind_of
from ._model import Ec2Config, Expression, Filters, Hostname, Source


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: ``plugin:`` values that make a file an EC2 inventory: Ansible's two names, and
#: distproc's own for a file Ansible should not read.
PLUGIN_NAMES = frozenset({"aws_ec2", "amazon.aws.aws_ec2", "distproc_ec2"})
#: Instance attributes by the describe-instances filter names that Ansible's
#: ``hostnames`` uses; the ``public-`` spellings are distproc's own, clearer ones.
ATTRIBUTES: Mapping[str, str] = MappingProxyType(
    {"instance-id": "InstanceId", "private-ip-address": "PrivateIpAddress", "private-dns-name": "PrivateDnsName"}
    | dict.fromkeys(("dns-name", "public-dns-name"), "PublicDnsName")
    | dict.fromkeys(("ip-address", "public-ip-address"), "PublicIpAddress")
)
#: Host variables every instance gets from its describe-instances fields, named
#: as Ansible's hostvars name them.
FACT_FIELDS: Mapping[str, str] = MappingProxyType(
    {"instance_id": "InstanceId", "instance_type": "InstanceType", "image_id": "ImageId", "key_name": "KeyName"}
    | {"architecture": "Architecture", "vpc_id": "VpcId", "subnet_id": "SubnetId"}
    | {"private_ip_address": "PrivateIpAddress", "private_dns_name": "PrivateDnsName"}
    | {"public_ip_address": "PublicIpAddress", "public_dns_name": "PublicDnsName"}
)
#: What ``compose`` expressions may read: those, and the structured facts.
FACTS = frozenset(FACT_FIELDS) | {"launch_time", "tags", "placement", "state"}

# Ansible's own default when hostnames is empty: public DNS name, else private IP.
_DEFAULT_HOSTNAMES = ("dns-name", "private-ip-address")
_DEFAULT_ADDRESS = _DEFAULT_HOSTNAMES
_ALIASES = {"aws_endpoint_url": "endpoint_url", "endpoint": "endpoint_url"}
_ALIASES |= dict.fromkeys(("aws_profile", "boto_profile"), "profile")
_OPTIONS = _words(
    "plugin regions filters include_filters exclude_filters hostnames compose strict endpoint_url profile vars "
    "distproc_address distproc_instance_type_from distproc_instance_type_map distproc_page_size"
)
# Ansible options that only shape groups or caching; distproc chooses hosts by type, not
# group, and strict_permissions only lets Ansible go on after a refusal (distproc stops).
_IGNORED = _words(
    "keyed_groups groups leading_separator use_extra_vars strict_permissions cache cache_plugin cache_timeout "
    "cache_connection cache_prefix use_contrib_script_compatible_sanitization"
)
_CREDENTIALS = _words(
    "access_key aws_access_key_id aws_access_key secret_key aws_secret_access_key aws_secret_key "
    "session_token aws_session_token aws_security_token security_token"
)
_UNSUPPORTED = _words(
    "allow_duplicated_hosts hostvars_prefix hostvars_suffix include_extra_api_calls use_ssm_inventory"
)
_REFUSED: Mapping[str, str] = (
    dict.fromkeys(
        _CREDENTIALS,
        "credentials are not read from the inventory file: distproc uses boto3's own chain "
        "(environment, ~/.aws, instance role); name a profile with profile: instead",
    )
    | dict.fromkeys(
        ("iam_role_arn", "assume_role_arn"),
        "is not supported: put the role in an AWS profile (role_arn in ~/.aws/config) and name it in profile:",
    )
    | dict.fromkeys(_UNSUPPORTED, "is not supported by distproc")
)
_COMPOSE_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\['[^'\\]*'\]|\[\"[^\"\\]*\"\])*")
_PATH_PART = re.compile(r"\.([A-Za-z_]\w*)|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]")
_QUOTED = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def parse_ec2_config(doc: Mapping[str, Any], source: str) -> Ec2Config:
    """Check every option of an EC2 inventory document; errors name ``source`` and the option."""
    return _Parser(source).parse(doc)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, rule: str, value: object = ...) -> NoReturn:
        got = "" if value is ... else f" (got {kind_of(value)})"
        raise InventoryError(f"{self.source}: {where}: {rule}{got}")

    def parse(self, doc: Mapping[str, Any]) -> Ec2Config:
        opts: dict[str, Any] = {}
        for key, value in doc.items():
            name = _ALIASES.get(key, key) if isinstance(key, str) else key
            if name in _REFUSED:
                self.fail(str(key), _REFUSED[name])
            if name in _IGNORED:
                continue
            if name not in _OPTIONS:
                close = difflib.get_close_matches(str(key), sorted(_OPTIONS | _IGNORED), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                self.fail(str(key), f"is not an EC2 inventory option{hint}")
            if name == "plugin" and (not isinstance(value, str) or value not in PLUGIN_NAMES):
                self.fail("plugin", f"must be one of {', '.join(sorted(PLUGIN_NAMES))}", value)
            if name in opts:
                self.fail(str(key), f"is given twice (also as {name} or one of its aliases)")
            opts[name] = value
        if "plugin" not in opts:
            self.fail("plugin", f"is required: one of {', '.join(sorted(PLUGIN_NAMES))}")
        variables = self.variables(opts.get("vars"))
        compose = self.compose(opts.get("compose"))
        address = self.sources("distproc_address", opts.get("distproc_address"), _DEFAULT_ADDRESS)
        if "distproc_address" in opts and "ansible_host" in compose:
            self.fail("distproc_address", "and compose.ansible_host both set the address SSH connects to; keep one")
        has_type = [w for w, m in (("compose", compose), ("vars", variables)) if "distproc_instance_type" in m]
        typed_by = f"{has_type[0]}.distproc_instance_type" if has_type else None
        for option in ("distproc_instance_type_from", "distproc_instance_type_map"):
            if typed_by and option in opts:
                self.fail(option, f"and {typed_by} both set the instance type; keep one")
        return Ec2Config(
            source=self.source,
            plugin=str(opts["plugin"]),
            regions=self.regions(opts.get("regions")),
            include_filters=(
                self.filters("filters", opts.get("filters")),
                *self.filter_list("include_filters", opts.get("include_filters")),
            ),
            exclude_filters=self.filter_list("exclude_filters", opts.get("exclude_filters")),
            hostnames=self.hostnames(opts.get("hostnames")),
            address=address,
            instance_type_from=None if typed_by else self.type_source(opts.get("distproc_instance_type_from")),
            instance_type_map=self.type_map(opts.get("distproc_instance_type_map")),
            compose=compose,
            vars=variables,
            strict=self.flag("strict", opts.get("strict", False)),
            endpoint_url=self.endpoint(opts.get("endpoint_url")),
            profile=self.text("profile", opts.get("profile")),
            page_size=self.page_size(opts.get("distproc_page_size")),
        )

    def text(self, where: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "\x00\n"):
            self.fail(where, "must be a non-empty single-line string", value)
        return value

    def flag(self, where: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(where, "must be true or false", value)
        return value

    def regions(self, value: Any) -> tuple[str, ...]:
        items = [] if value is None else value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            self.fail("regions", "must be a list of region names like us-east-1", value)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not _REGION.fullmatch(item.strip()):
                self.fail(f"regions[{i}]", "must be a region name like us-east-1", item)
        return tuple(dict.fromkeys(item.strip() for item in items))

    def filters(self, where: str, value: Any) -> Filters:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.fail(where, "must be a mapping of EC2 filter names to values", value)
        result = []
        for name, wanted in value.items():
            if not isinstance(name, str) or not name or any(c.isspace() for c in name):
                self.fail(f"{where}", f"filter name {name!r} must be a non-empty string without spaces")
            items = wanted if isinstance(wanted, list) else [wanted]
            # Ansible passes numbers and booleans on as text ('16', 'true'); so does distproc.
            if not items or not all(isinstance(i, str | int | float) for i in items):
                self.fail(f"{where}.{name}", "must be a string or a list of strings", wanted)
            result.append((name, tuple(str(i).lower() if isinstance(i, bool) else str(i) for i in items)))
        return tuple(result)

    def filter_list(self, where: str, value: Any) -> tuple[Filters, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, "must be a list of filter mappings", value)
        return tuple(self.filters(f"{where}[{i}]", item) for i, item in enumerate(value))

    def value_source(self, where: str, value: Any) -> Source:
        if isinstance(value, str) and value.startswith("tag:"):
            key = value[4:]
            if key and not any(c in key for c in "=,"):
                return Source("tag", key, value)
            if key:
                self.fail(where, "tag:KEY=VALUE and tag:A,B are not supported by distproc; use tag:KEY", value)
        elif isinstance(value, str) and value in ATTRIBUTES:
            return Source("attribute", ATTRIBUTES[value], value)
        self.fail(where, f"must be tag:KEY or one of {', '.join(ATTRIBUTES)}", value)

    def sources(self, where: str, value: Any, default: tuple[str, ...]) -> tuple[Source, ...]:
        items = list(default) if value is None else [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.fail(where, "must be a source (private-ip-address, tag:KEY, ...) or a list of them", value)
        return tuple(self.value_source(f"{where}[{i}]" if value is not None else where, v) for i, v in enumerate(items))

    def hostnames(self, value: Any) -> tuple[Hostname, ...]:
        if value is None or value == []:
            return tuple(Hostname(s) for s in self.sources("hostnames", None, _DEFAULT_HOSTNAMES))
        if not isinstance(value, list):
            self.fail("hostnames", "must be a list of sources (tag:Name, private-ip-address, ...)", value)
        result = []
        for i, item in enumerate(value):
            where = f"hostnames[{i}]"
            if not isinstance(item, dict):
                result.append(Hostname(self.value_source(where, item)))
                continue
            unknown = set(item) - {"name", "prefix", "separator"}
            if unknown or "name" not in item:
                self.fail(where, "must have name, and may have prefix and separator", item)
            prefix = None if item.get("prefix") is None else self.value_source(f"{where}.prefix", item["prefix"])
            separator = item.get("separator", "_")
            if not isinstance(separator, str):
                self.fail(f"{where}.separator", "must be a string", separator)
            result.append(Hostname(self.value_source(f"{where}.name", item["name"]), prefix, separator))
        return tuple(result)

    def type_source(self, value: Any) -> Source:
        if value is None or value == "ec2":
            return Source("attribute", "InstanceType", "ec2")
        if isinstance(value, str) and value.startswith("tag:") and value != "tag:":
            return self.value_source("distproc_instance_type_from", value)
        self.fail("distproc_instance_type_from", "must be ec2 (ml. + the EC2 type) or tag:KEY", value)

    def type_map(self, value: Any) -> Mapping[str, tuple[str, ...]]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            self.fail("distproc_instance_type_map", "must map EC2 types (or tag values) to instance types", value)
        result = {}
        for key, types in value.items():
            items = [types] if isinstance(types, str) else types
            if not isinstance(key, str) or not isinstance(items, list) or not all(_is_word(t) for t in items):
                self.fail(f"distproc_instance_type_map.{key}", "must be an instance type or a list of them", types)
            result[key] = tuple(dict.fromkeys(items))
        return MappingProxyType(result)

    def variables(self, value: Any) -> Mapping[str, Any]:
        if value is None:
            return MappingProxyType({})
        checked = check_variables(value, "vars", self.source)
        for name in ("ansible_host", "ansible_ssh_host", "distproc_private_address"):
            if name in checked:
                self.fail(f"vars.{name}", "would give every instance the same address; use distproc_address or compose")
        return MappingProxyType(dict(checked))

    def compose(self, value: Any) -> Mapping[str, Expression]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            self.fail("compose", "must be a mapping of variable names to expressions", value)
        return MappingProxyType({str(k): self.expression(f"compose.{k}", v) for k, v in value.items()})

    def expression(self, where: str, value: Any) -> Expression:
        if isinstance(value, bool | int | float):
            return Expression(None, value)
        if isinstance(value, str):
            text = value.strip()
            quoted = _QUOTED.fullmatch(text)
            if quoted:
                return Expression(None, quoted.group(1) if quoted.group(1) is not None else quoted.group(2))
            if _COMPOSE_PATH.fullmatch(text):
                root = re.match(r"\w+", text)
                assert root is not None  # the path pattern starts with a name
                parts = [m.group(1) or m.group(2) or m.group(3) or "" for m in _PATH_PART.finditer(text, root.end())]
                if root.group() in FACTS:
                    return Expression((root.group(), *parts))
                self.fail(
                    where,
                    f"{root.group()!r} is not an instance attribute distproc knows ({', '.join(sorted(FACTS))}); "
                    f"compose values are expressions, so text needs quotes: \"'{text}'\"",
                )
        self.fail(
            where,
            "distproc reads only an instance attribute (private_ip_address, tags.Name, tags['Role']) "
            "or a quoted literal (\"'ubuntu'\") here; it does not evaluate Jinja",
            value,
        )

    def endpoint(self, value: Any) -> str | None:
        text = self.text("endpoint_url", value)
        if text is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
            self.fail("endpoint_url", "must be an http:// or https:// URL", value)
        return text

    def page_size(self, value: Any) -> int | None:
        if value is None:
            return None
        # describe-instances accepts MaxResults from 5 to 1000.
        if isinstance(value, bool) or not isinstance(value, int) or not 5 <= value <= 1000:
            self.fail("distproc_page_size", "must be a whole number from 5 to 1000", value)
        return value


def _is_word(value: object) -> bool:
    return isinstance(value, str) and value != "" and not any(c.isspace() for c in value)
