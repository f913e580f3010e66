"""S3 on the coordinator: listing inputs and choosing what each host is told.

The coordinator only lists and plans; the data flows between S3 and each
host directly (the host agent's s3 module). boto3 enters the coordinator here
and nowhere else, and its exceptions become StagingError here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from ..agent.s3 import CLIENT_CODES, parse_s3_uri
from ..errors import StagingError
from ..plan import SourceFile
from ..spec import ProcessingInput
from ..userfiles import read_bounded


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where S3 is and in which region (None: boto3's own defaults)."""

    endpoint_url: str | None = None
    region: str | None = None


def make_client(settings: S3Settings, credentials: dict[str, str] | None = None) -> Any:
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
    )
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.region:
        kwargs["region_name"] = settings.region
    if credentials:
        kwargs.update(
            aws_access_key_id=credentials["access_key_id"],
            aws_secret_access_key=credentials["secret_access_key"],
            aws_session_token=credentials.get("session_token"),
        )
    return boto3.session.Session().client("s3", **kwargs)


def _fail(exc: Exception, what: str) -> StagingError:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "?"))
        return StagingError(f"{what}: {code}: {err.get('Message') or code}", client_error=code in CLIENT_CODES)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StagingError(f"{what}: no AWS credentials found on the coordinator", client_error=True)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return StagingError(f"{what}: cannot reach the S3 endpoint ({exc})", client_error=False)
    return StagingError(f"{what}: {exc}", client_error=False)


def _location(uri: str, field: str) -> tuple[str, str]:
    try:
        return parse_s3_uri(uri)
    except ValueError as exc:
        raise StagingError(f"{field}: {exc}") from exc


def list_prefix(client: Any, uri: str) -> list[SourceFile]:
    """Every object whose key starts with the URI's key: a string prefix, not a folder.

    The rest of each key becomes its path under LocalPath; keys ending in `/`
    are folder markers and are skipped; a key equal to the prefix lands under
    its own base name.
    """
    bucket, prefix = _location(uri, uri)
    found: list[SourceFile] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
                found.append(SourceFile(source=f"s3://{bucket}/{key}", relative_path=rel, size=int(obj["Size"])))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _fail(exc, f"listing {uri}") from exc
    return found


#: The most bytes a ManifestFile may have: about half a million entries of
#: ~100 bytes, each then looked up with a HEAD request. The cap keeps a wrong
#: object named as the manifest (a data file of gigabytes) from being read
#: whole into memory here.
MAX_MANIFEST_BYTES = 64 << 20


def read_manifest(client: Any, uri: str, workers: int = 16) -> list[SourceFile]:
    """A ManifestFile: [{"prefix": "s3://bucket/p/"}, "suffix", ...]; each entry's size is looked up."""
    bucket, key = _location(uri, uri)
    try:
        stream = client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            body = read_bounded(stream, MAX_MANIFEST_BYTES)
        finally:
            stream.close()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _fail(exc, f"reading manifest {uri}") from exc
    if len(body) > MAX_MANIFEST_BYTES:
        raise StagingError(f"manifest {uri} is larger than {MAX_MANIFEST_BYTES} bytes, the most a manifest may be")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise StagingError(f"manifest {uri} is not JSON: {exc}") from exc
    if (
        not isinstance(doc, list)
        or not doc
        or not isinstance(doc[0], dict)
        or not isinstance(doc[0].get("prefix"), str)
        or not all(isinstance(s, str) for s in doc[1:])
    ):
        raise StagingError(f'manifest {uri} must be [{{"prefix": "s3://bucket/prefix/"}}, "key suffix", ...]')
    base_bucket, base_key = _location(doc[0]["prefix"], f"manifest {uri} prefix")
    suffixes: Sequence[str] = doc[1:]

    def head(suffix: str) -> SourceFile:
        object_key = base_key + suffix
        try:
            size = int(client.head_object(Bucket=base_bucket, Key=object_key)["ContentLength"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _fail(exc, f"manifest {uri} entry s3://{base_bucket}/{object_key}") from exc
        return SourceFile(source=f"s3://{base_bucket}/{object_key}", relative_path=suffix, size=size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(head, suffixes))


def list_input(client: Any, item: ProcessingInput) -> list[SourceFile]:
    if item.data_type == "ManifestFile":
        return read_manifest(client, item.uri)
    return list_prefix(client, item.uri)


def forwarded_credentials(settings: S3Settings, role_arn: str | None = None) -> dict[str, str]:
    """The coordinator's credentials for the hosts: short-lived where possible.

    With a role, STS AssumeRole gives temporary credentials for that role;
    otherwise the session's own (frozen) credentials are passed on.
    """
    session = boto3.session.Session(region_name=settings.region)
    try:
        if role_arn:
            sts = (
                session.client("sts", endpoint_url=settings.endpoint_url)
                if settings.endpoint_url
                else session.client("sts")
            )
            creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="distproc")["Credentials"]
            return {
                "access_key_id": creds["AccessKeyId"],
                "secret_access_key": creds["SecretAccessKey"],
                "session_token": creds["SessionToken"],
            }
        found = session.get_credentials()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _fail(exc, "getting credentials to forward") from exc
    if found is None:
        raise StagingError("--aws-credentials forward: no AWS credentials found on the coordinator")
    frozen = found.get_frozen_credentials()
    out = {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key}
    if frozen.token:
        out["session_token"] = frozen.token
    return out
