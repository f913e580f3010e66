"""A real S3 HTTP endpoint for tests and benchmarks: moto's standalone server.

`start_moto_server(host)` binds it to an address (loopback, or the test
cluster's bridge so the namespace hosts reach it directly). With auth=True
the server checks credentials: its first three actions (free of checks) make
an IAM user with an access key and an allow-all policy, and client() uses
that key, so a test can show what wrong credentials do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass
class MotoServer:
    endpoint_url: str
    process: subprocess.Popen[bytes]
    credentials: dict[str, str] = field(default_factory=lambda: {"key": "testing", "secret": "testing"})

    def client(self, service: str = "s3") -> Any:
        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.credentials["key"],
            aws_secret_access_key=self.credentials["secret"],
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_moto_server(
    host: str = "127.0.0.1", auth: bool = False, timeout: float = 30.0, launcher: list[str] | None = None
) -> MotoServer:
    """`launcher`: the command that starts the server, given `-H HOST -p PORT` (default: moto_server)."""
    port = _free_port(host)
    env = {**os.environ, "MOTO_PORT": str(port)}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    command = launcher or [str(Path(sys.executable).parent / "moto_server")]
    process = subprocess.Popen(
        [*command, "-H", host, "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while True:
        # A TCP connect, not a request: with auth on, every request counts.
        try:
            with socket.create_connection((host, port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server on {host}:{port} did not start") from None
            time.sleep(0.1)
    server = MotoServer(f"http://{host}:{port}", process)
    if auth:
        iam = server.client("iam")
        iam.create_user(UserName="distproc-test")
        iam.put_user_policy(UserName="distproc-test", PolicyName="all", PolicyDocument=json.dumps(_ALLOW_ALL))
        key = iam.create_access_key(UserName="distproc-test")["AccessKey"]
        server.credentials = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    return server
