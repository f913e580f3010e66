"""Secrets during a real job: no Environment value or forwarded credential
in any process's command line, private files private, and gone afterwards.

The test hosts are network namespaces of this machine, so this machine's
/proc shows every process of every host: the coordinator, sshd, the agents,
docker and the containers.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.cluster.jobs import TEST_CREDENTIALS, S3Env, job_doc, s3_input, wait_until
from tests.s3server import MotoServer

pytestmark = pytest.mark.cluster

SECRET = "s3cr3t-value-that-must-not-leak"
HOLD = (
    "import os, time\n"
    "assert os.environ['DB_PASSWORD'] == " + repr(SECRET) + "\n"
    "while not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"
)


def _command_lines() -> list[str]:
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                continue  # ended meanwhile
    return lines


def test_no_secret_in_argv_and_private_files_stay_private(s3env: S3Env, cluster: Cluster, moto: MotoServer) -> None:
    """Environment and forwarded AWS credentials travel in 0600 files, never argv; nothing of them is left."""
    s3 = moto.client()
    s3.create_bucket(Bucket="jobs-secret")
    s3.put_object(Bucket="jobs-secret", Key="code/hold.py", Body=HOLD.encode())
    doc = job_doc(
        "secrets",
        entrypoint=["python3", "/opt/ml/processing/input/code/hold.py"],
        inputs=[s3_input("code", "s3://jobs-secret/code/", "/opt/ml/processing/input/code")],
        environment={"DB_PASSWORD": SECRET},
    )
    run = s3env.start("run", "-i", str(s3env.inventory), "--aws-credentials", "forward", str(s3env.write_job(doc)))
    job_dirs = [h.work_dir / "jobs" / "secrets" / f"algo-{k}" for k, h in enumerate(cluster.hosts, start=1)]
    try:
        wait_until(
            lambda: all(
                f"distproc-secrets-algo-{k}" in cluster.containers(h, all=False) for k, h in enumerate(cluster.hosts, 1)
            ),
            "the containers to run",
            process=run,
        )
        forwarded = TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        for line in _command_lines():
            assert SECRET not in line, line
            assert f"aws_secret_access_key={forwarded}" not in line.lower() and f" {forwarded} " not in f" {line} "
        for job_dir in job_dirs:
            task = job_dir / "task.json"
            assert SECRET in task.read_text() and stat.S_IMODE(task.stat().st_mode) == 0o600
            assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
            # The env file exists only until the container does.
            assert not (job_dir / "container.env").exists()
        for host in cluster.hosts:
            for agent_file in (host.work_dir / "agent").iterdir():
                mode = stat.S_IMODE(agent_file.stat().st_mode)
                assert not mode & (stat.S_IWGRP | stat.S_IWOTH), f"{agent_file} is writable by others"
        for job_dir in job_dirs:
            (job_dir / "ml" / "processing" / "input" / "code" / "release").write_text("")
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err
    assert SECRET not in err
    for job_dir in job_dirs:
        assert not (job_dir / "task.json").exists()
        assert not (job_dir / "ml").exists()
        leftovers = [
            p for p in job_dir.rglob("*") if p.is_file() and SECRET in p.read_bytes().decode("utf-8", "replace")
        ]
        assert leftovers == [], leftovers
