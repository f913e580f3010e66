"""Images in Amazon ECR: the host logs in to the registry with boto3 before pulling.

The token comes from ECR's GetAuthorizationToken with the host's AWS
settings (its own credential chain, or what the coordinator forwarded), and
reaches `docker login` on stdin, never in argv. boto3 is the shipped copy
(depsbundle), imported only here and only for ECR images.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Dict, Optional, Tuple

from .container import Docker

# <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]/<repository>[:tag|@digest]
_ECR = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")


class EcrLoginError(Exception):
    pass


def ecr_registry(image: str) -> Optional[Tuple[str, str]]:
    """(account, region) of an ECR image URI; None for any other registry."""
    match = _ECR.match(image)
    return (match.group("account"), match.group("region")) if match else None


def decode_token(token: str) -> Tuple[str, str]:
    """ECR's authorizationToken is base64 of `user:password`."""
    try:
        user, _, password = base64.b64decode(token).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise EcrLoginError("ECR returned an authorization token that is not base64 user:password") from exc
    if not user or not password:
        raise EcrLoginError("ECR returned an authorization token without user and password")
    return user, password


def login(docker: Docker, image: str, conf: Dict[str, Any]) -> str:
    """Log the host's Docker in to the image's ECR registry; returns the registry logged in to."""
    found = ecr_registry(image)
    if found is None:
        raise EcrLoginError("{} is not an ECR image".format(image))
    account, region = found
    import boto3
    import botocore.exceptions

    kwargs: Dict[str, Any] = {"region_name": region}
    creds = conf.get("credentials")
    if creds:
        kwargs.update(
            aws_access_key_id=creds["access_key_id"],
            aws_secret_access_key=creds["secret_access_key"],
            aws_session_token=creds.get("session_token"),
        )
    try:
        client = boto3.session.Session().client("ecr", **kwargs)
        data = client.get_authorization_token(registryIds=[account])["authorizationData"][0]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise EcrLoginError("ECR GetAuthorizationToken for account {} in {}: {}".format(account, region, exc)) from exc
    user, password = decode_token(data["authorizationToken"])
    registry = data.get("proxyEndpoint") or "https://{}".format(image.split("/", 1)[0])
    status, _, err = docker.run(
        ["login", "--username", user, "--password-stdin", registry], check=False, input=password
    )
    if status != 0:
        raise EcrLoginError("docker login {} failed: {}".format(registry, err.strip()[-300:]))
    return registry
