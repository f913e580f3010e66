"""The fleet on the 3-host cluster: shipping an image to hosts without a
registry, host leases, and host checks."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distproc.store.db import Store
from tests.cluster import Cluster
from tests.cluster.jobs import Env, job_doc, wait_until

pytestmark = pytest.mark.cluster

SHIPPED = "distproc-shipped:1"


@pytest.fixture
def shipped_image(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image only the local daemon has: the busybox image plus a file, committed under a new ID."""
    for host in ("local", *cluster.hosts):
        cluster.docker(host, "image", "rm", "--force", SHIPPED, check=False)
    name = "distproc-ship-build"
    cluster.docker("local", "rm", "--force", name, check=False)
    cluster.docker("local", "create", "--name", name, cluster.busybox_image, "true")
    marker = tmp_path_factory.mktemp("ship") / "marker.txt"
    marker.write_text("shipped by distproc\n")
    cluster.docker("local", "cp", str(marker), f"{name}:/marker.txt")
    cluster.docker("local", "commit", name, SHIPPED)
    cluster.docker("local", "rm", "--force", name)
    yield SHIPPED
    for host in ("local", *cluster.hosts):
        cluster.docker(host, "image", "rm", "--force", SHIPPED, check=False)


def _run(env: Env, cluster: Cluster, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"PATH": path} if path else {}
    return subprocess.run(
        [sys.executable, "-m", "distproc", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "DISTPROC_HOME": str(env.home), "DOCKER_HOST": cluster.local_docker_host, **extra},
    )


def _recording_docker(cluster: Cluster, folder: Path) -> tuple[str, Path]:
    """A PATH whose first `docker` writes down each call's arguments, then runs the real one."""
    calls = folder / "docker-calls.txt"
    calls.write_text("")
    (folder / "bin").mkdir()
    wrapper = folder / "bin" / "docker"
    real = shutil.which(cluster.docker_binary) or cluster.docker_binary
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(calls))}\nexec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o755)
    return f"{wrapper.parent}:{os.environ['PATH']}", calls


def _phases(env: Env, job: str) -> dict[str, set[str]]:
    return {h["Host"]: {p["Phase"] for p in h["Timeline"]} for h in env.describe(job)["Distproc"]["Hosts"]}


def test_ship_image_saves_only_when_a_host_lacks_the_image_and_only_once(
    env: Env, cluster: Cluster, shipped_image: str, tmp_path: Path
) -> None:
    """--ship-image asks the hosts first: one `docker save` for hosts that lack it, none when all have it.

    Run 1: no host has it: saved once, loaded on all three. Run 2: all have it:
    no `docker save` at all (before, every run saved the whole image first).
    Run 3, from the Python API (ship_image=True), with one host lacking it:
    that host gets it, from the tar run 1 kept, so again no `docker save`.
    """
    image_id = cluster.docker("local", "image", "inspect", "--format", "{{.Id}}", shipped_image).stdout.strip()
    for host in cluster.hosts:
        assert cluster.docker(host, "image", "inspect", shipped_image, check=False).returncode != 0
    path, calls = _recording_docker(cluster, tmp_path)

    def saves() -> list[str]:
        return [c for c in calls.read_text().splitlines() if c.startswith("save ")]

    doc = job_doc("ship-1", image=shipped_image, entrypoint=["cat", "/marker.txt"])
    first = _run(env, cluster, "run", "-i", str(env.inventory), "--ship-image", str(env.write_job(doc)), path=path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("shipped by distproc") == 3
    for host in cluster.hosts:
        found = cluster.docker(host, "image", "inspect", "--format", "{{.Id}}", shipped_image).stdout.strip()
        assert found == image_id
    assert all("image_shipped" in phases for phases in _phases(env, "ship-1").values())
    assert len(saves()) == 1, calls.read_text()
    kept = env.home / "images"
    assert kept.stat().st_mode & 0o777 == 0o700
    [tar] = kept.glob("*.tar")
    assert tar.stat().st_mode & 0o777 == 0o600

    doc = job_doc("ship-2", image=shipped_image, entrypoint=["cat", "/marker.txt"])
    second = _run(env, cluster, "run", "-i", str(env.inventory), "--ship-image", str(env.write_job(doc)), path=path)
    assert second.returncode == 0, second.stderr
    assert not any("image_shipped" in phases for phases in _phases(env, "ship-2").values())
    assert len(saves()) == 1, calls.read_text()  # all hosts had it: nothing saved
    events = [e for e in Store(env.home).events("ship-2") if e["kind"] == "image_present"]
    assert sorted(e["algo"] for e in events) == ["algo-1", "algo-2", "algo-3"]

    cluster.docker(cluster.hosts[1], "image", "rm", "--force", shipped_image)
    script = (
        "from distproc import Processor\n"
        f"Processor(image_uri={shipped_image!r}, instance_count=3, instance_type='ml.m5.xlarge',\n"
        "          entrypoint=['cat', '/marker.txt'], inventory=" + repr(str(env.inventory)) + ",\n"
        "          home=" + repr(str(env.home)) + ", ship_image=True).run(job_name='ship-3')\n"
    )
    third = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "DOCKER_HOST": cluster.local_docker_host, "PATH": path},
    )
    assert third.returncode == 0, third.stderr
    assert third.stdout.count("shipped by distproc") == 3
    phases = _phases(env, "ship-3")
    assert "image_shipped" in phases["algo-2"]
    assert not any("image_shipped" in phases[algo] for algo in ("algo-1", "algo-3"))
    assert len(saves()) == 1, calls.read_text()  # the tar run 1 kept was reused
    found = cluster.docker(cluster.hosts[1], "image", "inspect", "--format", "{{.Id}}", shipped_image).stdout.strip()
    assert found == image_id


def test_ship_image_of_an_image_this_machine_lacks_is_a_client_error(env: Env, cluster: Cluster) -> None:
    """An image the coordinator's Docker does not have fails the job as ClientError before any host is touched."""
    doc = job_doc("ship-missing", image="distproc-no-such-image:404", entrypoint=["true"])
    result = _run(env, cluster, "run", "-i", str(env.inventory), "--ship-image", str(env.write_job(doc)))
    assert result.returncode == 1
    reason = env.describe("ship-missing")["FailureReason"]
    assert reason.startswith("ClientError: AppSpecification.ImageUri") and "distproc-no-such-image:404" in reason


def test_without_ship_image_a_missing_image_fails_with_the_pull_error(env: Env, cluster: Cluster) -> None:
    """No registry, no --ship-image: the hosts' pull fails and the reason says so."""
    doc = job_doc("ship-none", count=1, image="distproc-no-such-image:404", entrypoint=["true"])
    result = _run(env, cluster, "run", "-i", str(env.inventory), str(env.write_job(doc)))
    assert result.returncode == 1
    assert "cannot pull image distproc-no-such-image:404" in env.describe("ship-none")["FailureReason"]


def _hosts_check(env: Env, inventory: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    out = env.cli("hosts", "check", "-i", str(inventory), "--json", "--min-free-gib", "0.01", *extra)
    docs = {d["Host"]: d for d in json.loads(out.stdout)["Hosts"]} if out.stdout.strip() else {}
    return out.returncode, docs, out.stderr


def test_hosts_check_reports_every_test_host_fit(env: Env, cluster: Cluster) -> None:
    """SSH, python, Docker version, free space and clock of each host, measured through its agent."""
    code, docs, err = _hosts_check(env, env.inventory)
    assert code == 0, err
    assert sorted(docs) == [h.name for h in cluster.hosts]
    for d in docs.values():
        assert d["Fit"] and d["Problems"] == []
        assert d["Python"].startswith("3.")
        assert d["DockerVersion"] and d["DockerVersion"][0].isdigit()
        assert d["FreeBytes"] > 0
        # One machine, one clock: the offset is within what one round trip can tell (it read +0.15..0.36 s).
        assert abs(d["ClockOffsetSeconds"]) <= d["ClockUncertaintySeconds"], d
        assert d["Gpus"] is None  # no GPUs given, none probed
    table = env.cli("hosts", "check", "-i", str(env.inventory), "--min-free-gib", "0.01")
    assert table.returncode == 0 and all(f"{h.name} " in table.stdout for h in cluster.hosts)
    header, *rows = table.stdout.splitlines()
    clock = header.split().index("CLOCK")
    assert all(row.split()[clock].startswith("+0.00±") for row in rows), table.stdout


def test_hosts_check_names_what_makes_a_host_unfit(env: Env, cluster: Cluster, tmp_path: Path) -> None:
    """A closed SSH port, an unreachable Docker daemon and GPUs that are not there each make a host unfit."""
    h1, h2, h3 = cluster.hosts
    inventory = cluster.write_inventory(
        tmp_path / "unfit.yaml",
        extra_host_vars={
            h1.name: {"ansible_port": 1},
            h2.name: {"distproc_docker_host": "unix:///nonexistent/docker.sock"},
            h3.name: {"distproc_gpus": 1},
        },
    )
    code, docs, err = _hosts_check(env, inventory)
    assert code == 1
    assert "3 of 3 host(s) unfit" in err
    assert "cannot connect" in " ".join(docs[h1.name]["Problems"])
    assert any(p.startswith("Docker is not reachable") for p in docs[h2.name]["Problems"])
    gpu_problems = " ".join(docs[h3.name]["Problems"])
    # No NVIDIA driver on these machines: pynvml (shipped to GPU hosts) says NVML cannot start.
    assert "gives it 1 GPU(s)" in gpu_problems and "NVML" in gpu_problems
    assert docs[h3.name]["GpuNote"] and docs[h3.name]["Gpus"] == 0


def test_run_refuses_a_host_without_docker_before_staging(env: Env, cluster: Cluster, tmp_path: Path) -> None:
    """The fast check in every run: a host whose Docker does not answer fails the job before any data moves."""
    inventory = cluster.write_inventory(
        tmp_path / "nodocker.yaml",
        extra_host_vars={cluster.hosts[1].name: {"distproc_docker_host": "unix:///nonexistent/docker.sock"}},
    )
    doc = job_doc("no-docker", entrypoint=["true"])
    result = env.cli("run", "-i", str(inventory), str(env.write_job(doc)))
    assert result.returncode == 1
    reason = env.describe("no-docker")["FailureReason"]
    assert "algo-2" in reason and "Docker is not reachable" in reason
    phases = {h["Host"]: {p["Phase"] for p in h["Timeline"]} for h in env.describe("no-docker")["Distproc"]["Hosts"]}
    assert "inputs_staged" not in phases["algo-2"]


# Holds its host until the test writes the release file into the job's input folder.
HOLD = "import os, time\nwhile not os.path.exists('/opt/ml/processing/input/code/release'): time.sleep(0.05)\n"


def _release(cluster: Cluster, job: str, count: int) -> None:
    for k, host in enumerate(cluster.hosts[:count], start=1):
        code = host.work_dir / "jobs" / job / f"algo-{k}" / "ml" / "processing" / "input" / "code"
        if code.is_dir():
            (code / "release").write_text("")


def test_a_busy_host_is_passed_over_and_two_jobs_never_share_one(env: Env, cluster: Cluster) -> None:
    """Job A holds h1 and h2; job B (2 hosts) gets h3 and cannot get a second: a clear error, nothing run."""
    entry, code_input = env.script("hold", HOLD)
    a = env.start(
        "run",
        "-i",
        str(env.inventory),
        str(env.write_job(job_doc("lease-a", count=2, entrypoint=entry, inputs=[code_input]))),
    )
    try:
        wait_until(
            lambda: (
                _exists(env, "lease-a")
                and all(h["Status"] == "InProgress" for h in env.describe("lease-a")["Distproc"]["Hosts"])
            ),
            "job A to run on two hosts",
            process=a,
        )
        hosts_a = [h["InventoryHost"] for h in env.describe("lease-a")["Distproc"]["Hosts"]]
        assert hosts_a == [cluster.hosts[0].name, cluster.hosts[1].name]

        one = env.run_job(job_doc("lease-b1", count=1, entrypoint=["true"]))
        assert one.returncode == 0, one.stderr
        assert [h["InventoryHost"] for h in env.describe("lease-b1")["Distproc"]["Hosts"]] == [cluster.hosts[2].name]

        two = env.run_job(job_doc("lease-b2", count=2, entrypoint=["true"]))
        assert two.returncode == 1
        reason = env.describe("lease-b2")["FailureReason"]
        assert reason.startswith("ClientError: too few free hosts: the job needs 2 x ml.m5.xlarge, 1 could be had")
        # h1 is named busy, alone or with h2 when their leases read the same age (said once).
        h1, h2 = cluster.hosts[0].name, cluster.hosts[1].name
        assert re.search(rf"; {h1}(, {h2})?: busy with job lease-a \(lease renewed", reason), reason
        # The host B had claimed was given back: a one-host job gets it again.
        again = env.run_job(job_doc("lease-b3", count=1, entrypoint=["true"]))
        assert again.returncode == 0, again.stderr
    finally:
        _release(cluster, "lease-a", 2)
        _, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    for host in cluster.hosts:
        assert not (host.work_dir / "lease.json").exists(), f"lease left on {host.name}"


def test_two_jobs_started_at_once_never_share_a_host(env: Env, cluster: Cluster) -> None:
    """Three one-host jobs started together each get their own host (the lease is atomic)."""
    entry, code_input = env.script("race", HOLD)
    runs = [
        env.start(
            "run",
            "-i",
            str(env.inventory),
            str(env.write_job(job_doc(f"race-{n}", count=1, entrypoint=entry, inputs=[code_input]))),
        )
        for n in range(3)
    ]
    try:

        def all_running() -> bool:
            for n in range(3):
                hosts = env.describe(f"race-{n}")["Distproc"]["Hosts"] if _exists(env, f"race-{n}") else []
                if not hosts or hosts[0]["Status"] != "InProgress":
                    return False
            return True

        wait_until(all_running, "three jobs to run")
        used = [env.describe(f"race-{n}")["Distproc"]["Hosts"][0]["InventoryHost"] for n in range(3)]
        assert sorted(used) == sorted(h.name for h in cluster.hosts)
    finally:
        for n in range(3):
            if _exists(env, f"race-{n}"):
                for h in env.describe(f"race-{n}")["Distproc"]["Hosts"]:
                    host = cluster.host(h["InventoryHost"])
                    code = host.work_dir / "jobs" / f"race-{n}" / "algo-1" / "ml" / "processing" / "input" / "code"
                    if code.is_dir():
                        (code / "release").write_text("")
        for run in runs:
            run.communicate(timeout=120)
    assert [r.returncode for r in runs] == [0, 0, 0]


def _exists(env: Env, name: str) -> bool:
    return env.cli("describe", name).returncode == 0


def test_a_leftover_container_of_the_same_identity_is_replaced(env: Env, cluster: Cluster) -> None:
    """A container left under the job's name (an earlier attempt) is removed, and the job runs."""
    h1 = cluster.hosts[0]
    cluster.docker(h1, "create", "--name", "distproc-leftover-algo-1", cluster.busybox_image, "true")
    result = env.run_job(job_doc("leftover", count=1, entrypoint=["true"]))
    assert result.returncode == 0, result.stderr
    assert env.describe("leftover")["ProcessingJobStatus"] == "Completed"


def test_hosts_failing_alike_are_named_once_and_logged_whole(env: Env, cluster: Cluster, tmp_path: Path) -> None:
    """Three hosts whose keys are unknown: FailureReason says the instruction once ("h1..3"), ends whole
    within 1024 characters; `run`'s log keeps each host's full reason, with its own address."""
    unknown = tmp_path / "known_hosts"
    unknown.write_text("")
    trust_none = {h.name: {"distproc_known_hosts": str(unknown)} for h in cluster.hosts}
    inventory = cluster.write_inventory(tmp_path / "untrusted.yaml", extra_host_vars=trust_none)
    result = env.cli("run", "-i", str(inventory), str(env.write_job(job_doc("untrusted", entrypoint=["true"]))))
    assert result.returncode == 1
    reason = env.describe("untrusted")["FailureReason"]
    assert len(reason) <= 1024, reason
    names = f"{cluster.hosts[0].name}..{cluster.hosts[-1].name.removeprefix('h')}"
    assert f"; {names}: cannot connect to <host>: host key of <address>:22 is not trusted" in reason
    assert reason.count("ssh-keyscan") == 1
    for host in cluster.hosts:
        assert host.address not in reason
        assert f"`ssh-keyscan -p 22 {host.address} >> {unknown}`" in result.stderr  # the log: every host, whole
