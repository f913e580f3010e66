"""``distproc.Session``: the analogue of ``sagemaker.Session``, and the defaults it reads.

A SageMaker Session carries the AWS account, region and default bucket; the
SDK fills unset parameters from its config file (``config.yaml``, see "Configuring
and using defaults with the SageMaker Python SDK"). A distproc Session carries
what a distproc job needs instead: the inventory (the hosts), the job store's
home, how AWS credentials reach the containers, and the account id that turns a
role name into an ARN. Each is taken, first found, from:

1. the argument (``Session(inventory=...)``, or a processor's own keyword);
2. the environment (``DISTPROC_INVENTORY``, ``DISTPROC_HOME``);
3. the defaults file: ``$DISTPROC_CONFIG`` if set, else
   ``$XDG_CONFIG_HOME/distproc/config.yaml`` (``~/.config/distproc/config.yaml``).

The defaults file is a YAML mapping with these keys, all optional::

    inventory: inventory/local.yaml      # relative paths are relative to this file
    home: ~/distproc-jobs
    aws_credentials: host                # or forward
    assume_role: false
    s3_endpoint_url: http://localhost:9000
    account_id: "123456789012"           # role names become arn:aws:iam::<this>:role/<name>
    images:                              # the framework processors' image per framework and version
      sklearn:                           # SKLearnProcessor (and FrameworkProcessor for scikit-learn)
        "1.2-1": my-registry/sklearn:1.2-1
      pytorch:                           # PyTorchProcessor, FrameworkProcessor("pytorch", ...)
        "2.1": my-registry/pytorch:2.1
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SpecError, Violation
from ..inventory import Inventory
from ..store.db import default_home
from ..userfiles import read_bounded

PathArg = str | os.PathLike[str]

MAX_CONFIG_BYTES = 1024 * 1024
CREDENTIAL_MODES = ("host", "forward")
#: The image SKLearnProcessor uses where the defaults file names none: the examples'
#: scikit-learn image, built locally by examples/sklearn-preprocessing/build_image.sh.
DEFAULT_IMAGES: Mapping[str, str] = {"sklearn": "distproc-example:sklearn"}

_KEYS = ("inventory", "home", "aws_credentials", "assume_role", "s3_endpoint_url", "account_id", "images")
# IAM's rules: a role name, and a role ARN as CreateProcessingJob's RoleArn pattern has it.
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
_ACCOUNT = re.compile(r"^\d{12}$")


def config_path() -> Path:
    """Where the defaults file is looked for (it need not exist, unless named by ``DISTPROC_CONFIG``)."""
    explicit = os.environ.get("DISTPROC_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "distproc" / "config.yaml"


def load_defaults(path: Path, required: bool = False) -> dict[str, Any]:
    """The defaults file's settings, checked; {} when there is none (and none was asked for by name)."""
    source = f"defaults file {path}"
    try:
        raw = read_bounded(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if required:
            raise SpecError([Violation("DISTPROC_CONFIG", f"no such file: {path}")], source=source) from None
        return {}
    except OSError as exc:
        raise SpecError([Violation("(file)", f"cannot be read: {exc.strerror or exc}")], source=source) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise SpecError([Violation("(file)", f"larger than {MAX_CONFIG_BYTES} bytes")], source=source)
    import yaml  # only when there is a file to read: `import distproc` stays light

    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError([Violation("(file)", f"not valid UTF-8 YAML: {exc}")], source=source) from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SpecError([Violation("(file)", "must be a mapping of settings")], source=source)
    problems = _check_defaults(doc)
    if problems:
        raise SpecError(problems, source=source)
    settings = dict(doc)
    for key in ("inventory", "home"):
        if key in settings:  # relative to the file, as a config file's paths are
            settings[key] = path.parent / Path(settings[key]).expanduser()
    return settings


def _check_defaults(doc: dict[Any, Any]) -> list[Violation]:
    problems = []
    for key, value in doc.items():
        if key not in _KEYS:
            problems.append(Violation(str(key), f"unknown setting; known: {', '.join(_KEYS)}"))
        elif key in ("inventory", "home", "s3_endpoint_url") and not (isinstance(value, str) and value):
            problems.append(Violation(key, f"must be a non-empty string (got {value!r})"))
        elif key == "aws_credentials" and value not in CREDENTIAL_MODES:
            problems.append(Violation(key, f"must be 'host' or 'forward' (got {value!r})"))
        elif key == "assume_role" and not isinstance(value, bool):
            problems.append(Violation(key, f"must be true or false (got {value!r})"))
        elif key == "account_id" and not (isinstance(value, str) and _ACCOUNT.match(value)):
            problems.append(Violation(key, f"must be a quoted 12-digit AWS account id (got {value!r})"))
        elif key == "images":
            problems.extend(_image_problems(value))
    return problems


def _image_problems(images: Any) -> list[Violation]:
    if not isinstance(images, dict):
        return [Violation("images", "must map each framework to {version: image}")]
    problems = []
    for framework, versions in images.items():
        if not isinstance(versions, dict):
            problems.append(Violation(f"images.{framework}", "must map each version to an image"))
            continue
        for version, image in versions.items():
            if not isinstance(version, str) or not (isinstance(image, str) and image):
                problems.append(
                    Violation(f"images.{framework}", f"versions and images must be quoted strings ({version!r})")
                )
    return problems


class Session:
    """Where and how a processor runs jobs, as ``sagemaker.Session`` is for the SDK.

    Pass it as a processor's ``sagemaker_session``; a processor without one
    makes a ``Session()``, which reads the environment and the defaults file.

    >>> Session(inventory="inventory/local.yaml", home="/tmp/jobs", account_id="123456789012").expand_role("prep")
    'arn:aws:iam::123456789012:role/prep'
    """

    def __init__(
        self,
        inventory: PathArg | Inventory | None = None,
        home: PathArg | None = None,
        aws_credentials: str | None = None,
        assume_role: bool | None = None,
        s3_endpoint_url: str | None = None,
        account_id: str | None = None,
    ) -> None:
        path = config_path()
        defaults = load_defaults(path, required=bool(os.environ.get("DISTPROC_CONFIG")))
        self.config_file: Path | None = path if defaults else None
        env_inventory = os.environ.get("DISTPROC_INVENTORY")
        self.inventory: PathArg | Inventory | None = _first(inventory, env_inventory or None, defaults.get("inventory"))
        env_home = os.environ.get("DISTPROC_HOME")
        chosen_home = _first(home, env_home or None, defaults.get("home")) or default_home()
        self.home = Path(os.path.abspath(os.path.expanduser(os.fspath(chosen_home))))
        self.aws_credentials: str = _first(aws_credentials, defaults.get("aws_credentials")) or "host"
        self.assume_role: bool = bool(_first(assume_role, defaults.get("assume_role")))
        self.s3_endpoint_url: str | None = _first(s3_endpoint_url, defaults.get("s3_endpoint_url"))
        self.account_id: str | None = _first(account_id, defaults.get("account_id"))
        self.images: dict[str, dict[str, str]] = dict(defaults.get("images") or {})
        problems = []
        if self.inventory is not None and not isinstance(self.inventory, (str, os.PathLike, Inventory)):
            problems.append(Violation("inventory", "must be an inventory file's path or a loaded Inventory"))
        if self.account_id is not None and not (isinstance(self.account_id, str) and _ACCOUNT.match(self.account_id)):
            problems.append(Violation("account_id", f"must be a 12-digit AWS account id (got {self.account_id!r})"))
        if problems:
            raise SpecError(problems, source="Session arguments")

    def __repr__(self) -> str:
        return f"Session(inventory={self.inventory!r}, home={str(self.home)!r}, config_file={self.config_file!r})"

    def require_inventory(self) -> PathArg | Inventory:
        """The inventory, or a SpecError saying the three ways to name one."""
        if self.inventory is None:
            where = config_path()
            rule = f"none given: pass inventory=..., set DISTPROC_INVENTORY, or add 'inventory: FILE' to {where}"
            raise SpecError([Violation("inventory", rule)], source="processing arguments")
        return self.inventory

    def expand_role(self, role: str) -> str | None:
        """A role ARN as given; a role name as an ARN of ``account_id``; None for a name with no account id.

        The SDK's ``expand_role`` asks STS for the account; distproc, which needs
        no AWS account, takes it from ``account_id`` (argument or defaults file).
        Anything that is neither a role name nor a role ARN is refused.
        """
        if not isinstance(role, str):
            raise _role_problem(f"must be an IAM role name or ARN (got {type(role).__name__})")
        if role.startswith("arn:"):
            if not _ROLE_ARN.match(role):
                raise _role_problem(f"{role!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
            return role
        if not _ROLE_NAME.match(role):
            raise _role_problem(f"{role!r} is neither a role name (letters, digits, +=,.@_-; 64 at most) nor an ARN")
        if self.account_id is None:
            return None
        return f"arn:aws:iam::{self.account_id}:role/{role}"

    def image_for(self, framework: str, version: str) -> str:
        """The image for a framework and version: the defaults file's ``images``, else the built-in default."""
        chosen = self.images.get(framework, {}).get(version) or DEFAULT_IMAGES.get(framework)
        if chosen is None:
            rule = f"no image for {framework} {version}: add it under 'images: {framework}:' in {config_path()}"
            raise SpecError([Violation("framework_version", rule)], source="processing arguments")
        return chosen


def _role_problem(rule: str) -> SpecError:
    return SpecError([Violation("role", rule)], source="processing arguments")


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
