"""ECR images: the host logs in with boto3 before pulling.

ECR's control plane and its registries cannot exist on these machines: the
token comes from moto's server (ECR API) and `docker login` is a stand-in
script that records what it was given, since there is no registry to log in
to. Everything else (boto3, the agent's code, the subprocess) is real.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from distproc.agent.container import Docker
from distproc.agent.ecr import EcrLoginError, decode_token, ecr_registry, login
from distproc.agent.task import DockerAccess
from tests.s3server import MotoServer, start_moto_server

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/preprocess:1.4"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (IMAGE, ("123456789012", "eu-west-1")),
        (
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/x@sha256:" + "a" * 64,
            ("123456789012", "us-gov-west-1"),
        ),
        ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/x", ("123456789012", "cn-north-1")),
        ("public.ecr.aws/docker/library/python:3.11", None),
        ("docker.io/library/python:3.11", None),
        ("12345.dkr.ecr.eu-west-1.amazonaws.com/x", None),
        ("python:3.11", None),
    ],
)
def test_ecr_images_are_recognised_by_their_registry(image: str, expected: tuple[str, str] | None) -> None:
    """Only private ECR registries (account.dkr.ecr.region.amazonaws.com) need a boto3 login."""
    assert ecr_registry(image) == expected


def test_a_token_is_user_and_password() -> None:
    """ECR's token decodes to user:password; anything else is a clear error."""
    assert decode_token(base64.b64encode(b"AWS:s3cr:et").decode()) == ("AWS", "s3cr:et")
    with pytest.raises(EcrLoginError, match="without user and password"):
        decode_token(base64.b64encode(b"nopassword").decode())


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    server = start_moto_server("127.0.0.1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    yield server
    server.stop()


def fake_docker(tmp_path: Path, exit_code: int = 0) -> Path:
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path}/argv\n'
        f"cat > {tmp_path}/stdin\n"
        f"echo 'denied: no such registry' >&2; exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_login_passes_the_ecr_token_to_docker_on_stdin(moto: MotoServer, tmp_path: Path) -> None:
    """GetAuthorizationToken for the image's account and region; the password goes on stdin, never in argv."""
    docker = Docker(DockerAccess((str(fake_docker(tmp_path)),), None))
    registry = login(docker, IMAGE, {})
    argv = (tmp_path / "argv").read_text().splitlines()
    password = (tmp_path / "stdin").read_text()
    assert argv[:4] == ["login", "--username", "AWS", "--password-stdin"]
    assert argv[4] == registry and registry.startswith("https://123456789012.dkr.ecr.")
    assert password and password not in " ".join(argv)
    assert password not in os.environ.values()


def test_forwarded_credentials_are_used_and_a_failed_login_is_clear(moto: MotoServer, tmp_path: Path) -> None:
    """With forwarded credentials in the task, a refused docker login names the registry and docker's words."""
    docker = Docker(DockerAccess((str(fake_docker(tmp_path, exit_code=1)),), None))
    creds = {"credentials": {"access_key_id": "AKIAFORWARDED0000000", "secret_access_key": "forwarded"}}
    with pytest.raises(
        EcrLoginError, match=r"docker login https://123456789012\.dkr\.ecr\S* failed: denied: no such registry"
    ):
        login(docker, IMAGE, creds)
