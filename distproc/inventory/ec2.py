"""EC2 inventories: the running instances an inventory file describes, as :class:`Host` values.

The file follows Ansible's ``amazon.aws.aws_ec2`` plugin (``plugin``,
``regions``, ``filters``, ``include_filters``, ``exclude_filters``,
``hostnames``, ``compose``, ``strict``, ``endpoint_url``, ``profile``) plus
distproc's own ``distproc_*`` options and a ``vars`` block; see
docs/inventory.md. This is the only module that talks to EC2, through boto3,
imported when an EC2 inventory is read so that ``import distproc`` stays light.

Each instance becomes a host through the same checks as a static inventory's
hosts (:func:`distproc.inventory._hosts.build_host`): its facts (named as
Ansible's hostvars), then ``vars``, then ``compose``, then what distproc
derives (``ansible_host``, ``distproc_private_address``,
``distproc_instance_type``) where those left it unset. Only ``running``
instances are taken, and hosts are ordered by name (numbers by value), so
``algo-K`` does not depend on the order EC2 pages its answer in.

Reading one::

    inventory = load_inventory("inventory/ec2.aws_ec2.yml")  # dispatches here
    hosts = select_hosts(inventory, "ml.p3.16xlarge", 2)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import InventoryError
from ._document import RawHost
from ._ec2_config import FACT_FIELDS, parse_ec2_config
from ._hosts import build_host
from ._model import Ec2Config, Expression, Filters, Host, Inventory, Source

__all__ = ["build_hosts", "fetch_instances", "load_ec2_inventory", "parse_ec2_config"]

#: The one group every EC2 host is in, as Ansible's plugin names it.
GROUP = "aws_ec2"
_STATE_FILTERS = ("instance-state-name", "instance-state-code")
_AUTH_CODES = frozenset({"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"})
_AUTH_CODES |= {"ExpiredToken", "RequestExpired", "InvalidAccessKeyId"}


def load_ec2_inventory(path: str | Path, doc: Mapping[str, Any]) -> Inventory:
    """The running instances that the EC2 inventory ``doc`` (read from ``path``) describes.

    Every problem (a bad option, no credentials, an endpoint that cannot be
    reached, a refused request, an instance without the address asked for)
    raises :class:`~distproc.errors.InventoryError` naming the file.
    """
    path = Path(path)
    config = parse_ec2_config(doc, str(path))
    base_dir = Path(os.path.abspath(path)).parent
    # Check vars and literal compose values now, so a typo shows even when no instance matches.
    literals = {k: e.literal for k, e in config.compose.items() if e.path is None}
    probe = RawHost("vars", (GROUP,), {**config.vars, **literals, "ansible_host": "probe.invalid"})
    build_host(probe, config.source, base_dir, {}, owner="vars")
    return Inventory(path=path, hosts=build_hosts(config, fetch_instances(config), base_dir))


def fetch_instances(config: Ec2Config) -> list[tuple[str, Mapping[str, Any]]]:
    """Every instance the config's queries find, as (region, describe-instances item), first seen first."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise InventoryError(f"{config.source}: EC2 inventories need boto3 (pip install boto3): {exc}") from exc
    where = config.endpoint_url or "EC2"
    try:
        session = boto3.session.Session(profile_name=config.profile)
        regions = config.regions or ((session.region_name,) if session.region_name else ())
        if not regions:
            raise InventoryError(
                f"{config.source}: regions: none given, and boto3 has no default region; "
                "list regions: in the file or set AWS_DEFAULT_REGION"
            )
        # Short timeouts: an unreachable endpoint should fail the command, not hang it for minutes.
        options = Config(connect_timeout=10, read_timeout=30)
        excluded: set[str] = set()
        found: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for region in regions:
            client = session.client("ec2", region_name=region, endpoint_url=config.endpoint_url, config=options)
            where = f"{client.meta.endpoint_url} ({region})"
            for filters in config.exclude_filters:
                excluded.update(i["InstanceId"] for i in _describe(client, filters, config.page_size))
            for filters in config.include_filters:
                for instance in _describe(client, _running_only(filters), config.page_size):
                    found.setdefault(instance["InstanceId"], (region, instance))
    except ClientError as exc:
        raise InventoryError(f"{config.source}: {_client_error(exc, where)}") from exc
    except BotoCoreError as exc:
        raise InventoryError(f"{config.source}: {_botocore_error(exc, where)}") from exc
    return [item for key, item in found.items() if key not in excluded]


def _describe(client: Any, filters: Filters, page_size: int | None) -> Iterator[Mapping[str, Any]]:
    # The paginator follows NextToken; a page size only bounds each request.
    request: dict[str, Any] = {"Filters": [{"Name": name, "Values": list(values)} for name, values in filters]}
    if page_size is not None:
        request["PaginationConfig"] = {"PageSize": page_size}
    for page in client.get_paginator("describe_instances").paginate(**request):
        for reservation in page.get("Reservations", ()):
            yield from reservation.get("Instances", ())


def _running_only(filters: Filters) -> Filters:
    """Ask EC2 for running instances only, unless the file filters on state itself."""
    if any(name in _STATE_FILTERS for name, _ in filters):
        return filters
    return (*filters, ("instance-state-name", ("running",)))


def _client_error(exc: Any, where: str) -> str:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", str(exc))
    if code in _AUTH_CODES:
        return f"{where} refused the AWS credentials ({code}): {message}"
    if code == "UnauthorizedOperation":
        return f"{where}: these credentials may not call ec2:DescribeInstances ({code}): {message}"
    return f"{where} rejected DescribeInstances ({code}): {message}"


def _botocore_error(exc: Any, where: str) -> str:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError, ProfileNotFound

    if isinstance(exc, NoCredentialsError):
        return (
            f"no AWS credentials for {where}: boto3 found none in the environment, ~/.aws or an "
            "instance role (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, PartialCredentialsError | ProfileNotFound):
        return f"AWS credentials for {where}: {exc}"
    if isinstance(exc, BotoConnectionError):
        return f"cannot reach the EC2 endpoint {where}: {exc}"
    return f"EC2 request to {where} failed: {exc}"


def build_hosts(
    config: Ec2Config, instances: Iterable[tuple[str, Mapping[str, Any]]], base_dir: Path
) -> tuple[Host, ...]:
    """Hosts from (region, describe-instances item) pairs: running ones only, ordered by name.

    Pure: no AWS calls, so the mapping is tested with plain data.
    """
    memo: dict[int, object] = {}
    hosts: dict[str, tuple[str, Host]] = {}
    for region, instance in instances:
        if instance.get("State", {}).get("Name") != "running":
            continue
        instance_id = str(instance.get("InstanceId"))
        name = _hostname(config, instance)
        if name is None:
            continue  # as in Ansible: an instance none of the hostnames sources names is left out
        owner = f"host {name} ({instance_id})"
        if not name or any(c.isspace() for c in name):
            raise InventoryError(f"{config.source}: instance {instance_id}: host name {name!r} has whitespace")
        if name in hosts:
            other = hosts[name][0]
            raise InventoryError(
                f"{config.source}: instances {other} and {instance_id} are both named {name}; "
                "choose hostnames that tell them apart (instance-id is unique)"
            )
        variables = _variables(config, instance, region, owner)
        raw = RawHost(name, (GROUP,), variables)
        # ml. + the instance's own EC2 type is a fact, not a typo: kept even where
        # SageMaker Processing has no such type (no job can ask for it then).
        from_ec2 = config.instance_type_from is not None and config.instance_type_from.kind == "attribute"
        found = (f"ml.{instance.get('InstanceType')}",) if from_ec2 else ()
        hosts[name] = (instance_id, build_host(raw, config.source, base_dir, memo, owner=owner, found_types=found))
    return tuple(hosts[name][1] for name in sorted(hosts, key=_natural))


def _variables(config: Ec2Config, instance: Mapping[str, Any], region: str, owner: str) -> dict[str, Any]:
    facts = _facts(instance, region)
    variables: dict[str, Any] = {**facts, **config.vars}
    for key, expression in config.compose.items():
        value = _evaluate(expression, facts)
        if value is not None:
            variables[key] = value
        elif config.strict:
            path = ".".join(expression.path or ())
            raise InventoryError(f"{config.source}: {owner}: compose.{key}: the instance has no {path}")
    if variables.get("ansible_host") is None:
        address = next(filter(None, (_value(source, instance) for source in config.address)), None)
        if address is None:
            wanted = " or ".join(s.text for s in config.address)
            raise InventoryError(f"{config.source}: {owner}: has no {wanted} to connect to (distproc_address)")
        variables["ansible_host"] = address
    if variables.get("distproc_private_address") is None and facts["private_ip_address"]:
        variables["distproc_private_address"] = facts["private_ip_address"]
    if config.instance_type_from is not None and variables.get("distproc_instance_type") is None:
        types = _instance_types(config, config.instance_type_from, instance)
        if types:
            variables["distproc_instance_type"] = list(types)
    return variables


def _facts(instance: Mapping[str, Any], region: str) -> dict[str, Any]:
    facts: dict[str, Any] = {name: instance.get(field) or None for name, field in FACT_FIELDS.items()}
    launched = instance.get("LaunchTime")
    facts["launch_time"] = launched.isoformat() if isinstance(launched, datetime) else launched
    facts["tags"] = _tags(instance)
    placement = instance.get("Placement", {})
    facts["placement"] = {"availability_zone": placement.get("AvailabilityZone"), "region": region}
    state = instance.get("State", {})
    facts["state"] = {"name": state.get("Name"), "code": state.get("Code")}
    return facts


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value", "")) for t in instance.get("Tags", ()) if "Key" in t}


def _value(source: Source, instance: Mapping[str, Any]) -> str | None:
    value = _tags(instance).get(source.key) if source.kind == "tag" else instance.get(source.key)
    # EC2 answers "" for a public DNS name an instance lacks; that counts as absent.
    return value if isinstance(value, str) and value else None


def _hostname(config: Ec2Config, instance: Mapping[str, Any]) -> str | None:
    for entry in config.hostnames:
        name = _value(entry.name, instance)
        if name is None:
            continue
        prefix = None if entry.prefix is None else _value(entry.prefix, instance)
        return name if prefix is None else f"{prefix}{entry.separator}{name}"
    return None


def _instance_types(config: Ec2Config, source: Source, instance: Mapping[str, Any]) -> tuple[str, ...]:
    found = _value(source, instance)
    if found is None:
        return ()  # an untyped host serves no job, as in a static inventory
    if found in config.instance_type_map:
        return config.instance_type_map[found]
    if source.kind == "attribute":
        return (f"ml.{found}",)
    # A tag is one string; a comma-separated list lets one host serve several types.
    return tuple(t.strip() for t in found.split(",") if t.strip())


def _evaluate(expression: Expression, facts: Mapping[str, Any]) -> object:
    if expression.path is None:
        return expression.literal
    value: object = facts
    for key in expression.path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return None if value == "" else value


def _natural(name: str) -> tuple[tuple[tuple[str, int], ...], str]:
    """Sort key that puts worker-2 before worker-10; the name itself breaks ties (01 vs 1)."""
    return tuple((text, int(digits) if digits else -1) for text, digits in re.findall(r"(\D*)(\d*)", name)), name
