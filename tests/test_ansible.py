"""The host-preparation playbook in ansible/: syntax, lint, and runs against the test cluster.

The cluster runs are check-mode runs against the SSH hosts (as CI's machines
are shared, nothing there is changed outside per-test folders) and real runs
against the `local` host whose daemon.json, work folder and GPU tools live in
the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "ansible"
PLAYBOOK = ANSIBLE_DIR / "site.yml"
BIN = Path(sys.executable).parent
# Another ansible-core's bin folder, to run these tests against it (e.g. the
# oldest supported, 2.16): DISTPROC_TEST_ANSIBLE_BIN=/tmp/ac216/bin pytest ...
ANSIBLE_BIN = Path(os.environ.get("DISTPROC_TEST_ANSIBLE_BIN") or BIN)

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


def _tool(name: str) -> str:
    path = (ANSIBLE_BIN if name.startswith("ansible-") and name != "ansible-lint" else BIN) / name
    if not path.exists():
        pytest.fail(
            f"{name} is not installed in this virtualenv ({path}); install the dev extras "
            "(pip install -e '.[dev]') which include ansible-core and ansible-lint",
            pytrace=False,
        )
    return str(path)


def _env(tmp_path: Path, extra_path: Sequence[Path] = ()) -> dict[str, str]:
    """A clean environment: our ansible.cfg only, our own Ansible home and temp folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local-tmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=os.pathsep.join([*map(str, extra_path), str(ANSIBLE_BIN), str(BIN), env.get("PATH", "/usr/bin:/bin")]),
    )
    return env


def _playbook(
    tmp_path: Path,
    inventory: Path,
    *args: str,
    extra_vars: Mapping[str, Any] | None = None,
    extra_path: Sequence[Path] = (),
    path: str | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    argv = [_tool("ansible-playbook"), "-i", str(inventory), str(PLAYBOOK), *args]
    if extra_vars:
        argv += ["--extra-vars", json.dumps(dict(extra_vars))]
    env = _env(tmp_path, extra_path)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _recap(cp: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host: {"h1": {"ok": 12, "changed": 0, "failed": 0, ...}}."""
    lines = cp.stdout.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("PLAY RECAP"))
    except ValueError:
        raise AssertionError(f"no PLAY RECAP in the output:\n{_show(cp)}") from None
    recap: dict[str, dict[str, int]] = {}
    for line in lines[start + 1 :]:
        m = RECAP_LINE.match(line.strip())
        if m:
            recap[m["host"]] = {k: int(v) for k, v in (kv.split("=") for kv in m["counts"].split())}
    return recap


def _text(cp: subprocess.CompletedProcess[str]) -> str:
    """stdout with whitespace runs made one space and JSON's \\" unescaped (callbacks differ)."""
    return " ".join(cp.stdout.replace('\\"', '"').split())


def _show(cp: subprocess.CompletedProcess[str]) -> str:
    return f"rc={cp.returncode}\n--- stdout (tail) ---\n{cp.stdout[-6000:]}\n--- stderr ---\n{cp.stderr[-3000:]}"


def _assert_all_ok(cp: subprocess.CompletedProcess[str], hosts: Sequence[str]) -> dict[str, dict[str, int]]:
    assert cp.returncode == 0, _show(cp)
    recap = _recap(cp)
    assert sorted(recap) == sorted(hosts), _show(cp)
    for host, counts in recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, f"{host}: {counts}\n{_show(cp)}"
        assert counts["ok"] > 0, f"{host}: {counts}"
    return recap


def _local_inventory(cluster: Cluster, tmp_path: Path, **host_vars: Any) -> Path:
    return cluster.write_inventory(tmp_path / "local.yml", local=True, extra_host_vars={"local": host_vars})


# --------------------------------------------------------------------------
# Without the cluster


@pytest.mark.parametrize("inventory", ["three-hosts.yaml", "gpu-hosts.yaml"])
def test_syntax_check_with_the_example_inventories(tmp_path: Path, inventory: str) -> None:
    cp = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "-i", f"inventory/{inventory}", "ansible/site.yml"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cp.returncode == 0, _show(cp)
    assert "playbook: ansible/site.yml" in cp.stdout
    assert "WARNING" not in cp.stderr, cp.stderr


@pytest.mark.timeout(600)
def test_ansible_lint_production_profile_passes_offline(tmp_path: Path) -> None:
    before = sorted(p.relative_to(ANSIBLE_DIR) for p in ANSIBLE_DIR.rglob("*"))
    env = _env(tmp_path)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    # ansible-lint runs the ansible-core it was installed with.
    env["PATH"] = os.pathsep.join([str(BIN), env["PATH"]])
    cp = subprocess.run(
        [_tool("ansible-lint"), "-c", ".ansible-lint", "--offline"],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out
    # Lint leaves nothing behind in ansible/.
    assert sorted(p.relative_to(ANSIBLE_DIR) for p in ANSIBLE_DIR.rglob("*")) == before


def test_only_ansible_builtin_modules_are_used() -> None:
    """CI has PyPI only: no collection beyond ansible-core's own may be needed."""
    fqcn = re.compile(r"^\s*(?:-\s+)?([a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+):", re.MULTILINE)
    used: set[str] = set()
    files = sorted(ANSIBLE_DIR.rglob("*.yml"))
    assert PLAYBOOK in files and len(files) > 5
    for f in files:
        used.update(fqcn.findall(f.read_text()))
    assert "ansible.builtin.apt" in used and "ansible.builtin.copy" in used
    assert {m for m in used if not m.startswith("ansible.builtin.")} == set()


def test_bad_distproc_gpus_is_refused_with_the_variable_named(tmp_path: Path) -> None:
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "distproc_gpus": "two",
                        }
                    }
                }
            }
        )
    )
    cp = _playbook(tmp_path, inventory, "--check", extra_vars={"distproc_install_packages": False})
    assert cp.returncode == 2, _show(cp)
    assert 'localhost: distproc_gpus must be a whole number >= 0 or "all" (got "two")' in _text(cp), _show(cp)
    assert _recap(cp)["localhost"]["failed"] == 1


def test_the_agents_python_is_checked(tmp_path: Path) -> None:
    """With Ansible's "auto" interpreter, the agent's python is distproc_python, and it must run."""
    missing = tmp_path / "no-such-python3"
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": "auto_silent",
                            "distproc_python": str(missing),
                            "distproc_work_dir": str(tmp_path / "work"),
                        }
                    }
                }
            }
        )
    )
    # A plain PATH, so that Ansible's interpreter discovery finds a working python3
    # (not, say, a pyenv shim of a version that is not installed).
    plain = os.pathsep.join(
        [str(ANSIBLE_BIN), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    )
    cp = _playbook(tmp_path, inventory, "--check", extra_vars={"distproc_install_packages": False}, path=plain)
    assert cp.returncode == 2, _show(cp)
    message = _text(cp)
    assert f"localhost: the distproc agent needs Python >= 3.9 as `{missing}`" in message, _show(cp)
    assert f"exec: {missing}: not found" in message, _show(cp)
    assert _recap(cp)["localhost"]["failed"] == 1


def test_a_docker_that_does_not_answer_fails_clearly(tmp_path: Path) -> None:
    """The last check runs docker as distproc would, and says what failed."""
    socket = tmp_path / "no-daemon.sock"
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "distproc_work_dir": str(tmp_path / "work"),
                            # Not the system daemon: /etc/docker is left alone.
                            "distproc_docker_host": f"unix://{socket}",
                            "distproc_docker_command": "env DOCKER_CONFIG=/nonexistent no-such-docker",
                        }
                    }
                }
            }
        )
    )
    cp = _playbook(tmp_path, inventory, extra_vars={"distproc_install_packages": False})
    assert cp.returncode == 2, _show(cp)
    message = _text(cp)
    assert (
        f"localhost: `env DOCKER_CONFIG=/nonexistent no-such-docker version` with DOCKER_HOST=unix://{socket}"
        in message
    ), _show(cp)
    assert "no-such-docker" in message and "No such file or directory" in message, _show(cp)
    assert "distproc runs exactly this" in message
    assert (tmp_path / "work").is_dir()


def test_a_host_without_python3_is_told_what_to_do(tmp_path: Path) -> None:
    """Found with a raw command before Ansible's modules need python; nothing installed when told not to."""
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                }
            }
        )
    )
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    # A PATH where the host's shell finds no python3.
    cp = _playbook(tmp_path, inventory, extra_vars={"distproc_install_packages": False}, path=str(empty))
    assert cp.returncode == 2, _show(cp)
    message = _text(cp)
    assert "localhost has no python3 on the SSH user's PATH" in message, _show(cp)
    assert "Install python3 (3.9 or newer) on it" in message
    assert "TASK [Install python3 with apt (raw; Ansible's modules need it)] *" in cp.stdout
    assert "TASK [Gather facts as the SSH user]" not in cp.stdout


# --------------------------------------------------------------------------
# Against the test cluster


@pytest.mark.cluster
def test_check_mode_against_the_cluster_hosts(cluster: Cluster, tmp_path: Path) -> None:
    """A dry run over SSH against every host (host keys checked) passes the checks on each."""
    inventory = cluster.write_inventory(tmp_path / "inventory.yml")
    # write_inventory pins the cluster's known_hosts and strict checking.
    assert f"UserKnownHostsFile={cluster.known_hosts}" in inventory.read_text()
    cp = _playbook(tmp_path, inventory, "--check", "--diff", extra_vars={"distproc_install_packages": False})
    names = [h.name for h in cluster.hosts]
    _assert_all_ok(cp, names)
    for h in cluster.hosts:
        # Each host was told its own daemon is left alone, and the docker check
        # ran against that daemon, over SSH.
        assert f"distproc_docker_host is {h.docker_host}, not the system daemon" in cp.stdout, _show(cp)
    assert len(re.findall(r'"msg": "Docker [0-9][^"]* answers `docker`"', cp.stdout)) == len(names), _show(cp)


@pytest.mark.cluster
def test_check_mode_with_package_installation_on_needs_no_apt_when_all_is_there(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The default (install packages): python3 and docker.io are there, so apt never runs.

    The hosts have no route out; an apt run would fail.
    """
    inventory = cluster.write_inventory(tmp_path / "inventory.yml")
    cp = _playbook(tmp_path, inventory, "--check")
    _assert_all_ok(cp, [h.name for h in cluster.hosts])
    assert cp.stdout.count("Docker Engine is already installed (docker.io)") == len(cluster.hosts), _show(cp)
    for task in ("Install python3", "Install Docker Engine packages"):
        block = cp.stdout.split(f"TASK [{'distproc_host' if 'python' in task else 'docker'} : {task}]", 1)[1]
        block = block.split("TASK [", 1)[0]
        assert "changed:" not in block and "ok:" not in block and "skipping:" in block, block


@pytest.mark.cluster
def test_a_gpu_host_without_nvidia_smi_fails_clearly(cluster: Cluster, tmp_path: Path) -> None:
    h1 = cluster.hosts[0]
    inventory = cluster.write_inventory(
        tmp_path / "inventory.yml", hosts=[h1], extra_host_vars={h1.name: {"distproc_gpus": 1}}
    )
    cp = _playbook(tmp_path, inventory, "--check", extra_vars={"distproc_install_packages": False})
    assert cp.returncode == 2, _show(cp)
    assert _recap(cp)[h1.name]["failed"] == 1, _show(cp)
    assert "TASK [nvidia : Fail when a GPU host has no working NVIDIA driver]" in cp.stdout, _show(cp)
    message = _text(cp)
    assert f"{h1.name} is a GPU host (distproc_gpus: 1) but `nvidia-smi -L` does not work there" in message
    assert "checks the NVIDIA driver but does not install it" in message
    assert "(rc 127: sh: 1: exec: nvidia-smi: not found)" in message, _show(cp)
    # Nothing after the driver check ran on that host.
    assert "TASK [docker :" not in cp.stdout


@pytest.mark.cluster
def test_host_keys_are_verified(cluster: Cluster, tmp_path: Path) -> None:
    """With a known_hosts that lacks the host, Ansible (our ansible.cfg) refuses to connect."""
    h1 = cluster.hosts[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = cluster.write_inventory(
        tmp_path / "inventory.yml",
        hosts=[h1],
        extra_host_vars={
            h1.name: {
                # No StrictHostKeyChecking here: ansible.cfg's host_key_checking decides.
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={empty} -o GlobalKnownHostsFile=/dev/null"
            }
        },
    )
    cp = _playbook(tmp_path, inventory, "--check", extra_vars={"distproc_install_packages": False})
    assert cp.returncode == 4, _show(cp)
    assert _recap(cp)[h1.name]["unreachable"] == 1
    assert "Host key verification failed" in cp.stdout + cp.stderr, _show(cp)
    assert empty.read_text() == "", "the unknown key must not be added"


@pytest.mark.cluster
def test_real_run_on_the_cluster_hosts_is_idempotent(cluster: Cluster, tmp_path: Path) -> None:
    """A real run makes each host's work folder; a second run changes nothing."""
    work = {h.name: tmp_path / "work" / h.name / "distproc" for h in cluster.hosts}
    inventory = cluster.write_inventory(
        tmp_path / "inventory.yml",
        extra_host_vars={name: {"distproc_work_dir": str(path)} for name, path in work.items()},
    )
    names = [h.name for h in cluster.hosts]
    first = _assert_all_ok(_playbook(tmp_path, inventory, extra_vars={"distproc_install_packages": False}), names)
    for name, path in work.items():
        assert first[name]["changed"] >= 1
        st = path.stat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert st.st_uid == 0  # the SSH user, dproot, is uid 0
    second = _assert_all_ok(_playbook(tmp_path, inventory, extra_vars={"distproc_install_packages": False}), names)
    assert {name: c["changed"] for name, c in second.items()} == dict.fromkeys(names, 0)


@pytest.mark.cluster
def test_daemon_json_is_merged_not_replaced_and_runs_are_idempotent(cluster: Cluster, tmp_path: Path) -> None:
    daemon_json = tmp_path / "etc-docker" / "daemon.json"
    daemon_json.parent.mkdir()
    existing = {
        "data-root": "/srv/docker",
        "log-opts": {"labels": "team", "max-size": "1m"},
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 65536, "Soft": 65536}},
    }
    daemon_json.write_text(json.dumps(existing))
    work_dir = tmp_path / "work" / "distproc"
    inventory = _local_inventory(cluster, tmp_path, distproc_work_dir=str(work_dir))
    extra = {
        "distproc_install_packages": False,
        # The system daemon's settings, but in tmp_path; the daemon distproc uses
        # here is the cluster's local one, so no service is touched.
        "docker_manage_daemon": True,
        "docker_manage_service": False,
        "docker_daemon_json_path": str(daemon_json),
        "docker_log_max_size": "50m",
        "docker_log_max_file": 3,
    }
    first = _playbook(tmp_path, inventory, "--diff", extra_vars=extra)
    assert _assert_all_ok(first, ["local"])["local"]["changed"] >= 2  # daemon.json and the work folder
    merged = json.loads(daemon_json.read_text())
    assert merged == {
        "data-root": "/srv/docker",
        "log-opts": {"labels": "team", "max-size": "50m", "max-file": "3"},
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 65536, "Soft": 65536}},
    }
    assert "runtimes" not in merged  # not a GPU host
    backups = [p for p in daemon_json.parent.iterdir() if p.name.startswith("daemon.json.") and p.name != "daemon.json"]
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == existing
    assert stat.S_IMODE(daemon_json.stat().st_mode) == 0o644
    assert stat.S_IMODE(work_dir.stat().st_mode) == 0o755
    assert "Docker 2" in first.stdout and "answers `docker`" in first.stdout

    text = daemon_json.read_text()
    second = _playbook(tmp_path, inventory, extra_vars=extra)
    assert _assert_all_ok(second, ["local"])["local"]["changed"] == 0
    assert daemon_json.read_text() == text
    dry = _playbook(tmp_path, inventory, "--check", "--diff", extra_vars=extra)
    assert _assert_all_ok(dry, ["local"])["local"]["changed"] == 0


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('["not", "an", "object"]', "(a JSON list, not an object)"),
        # The rest of the reason is the host python's json error, which varies by version.
        ('{"log-level": "warn",', "(not JSON: "),
    ],
)
def test_daemon_json_that_is_not_a_json_object_stops_the_run(
    cluster: Cluster, tmp_path: Path, content: str, reason: str
) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(content)
    inventory = _local_inventory(cluster, tmp_path, distproc_work_dir=str(tmp_path / "work"))
    extra = {
        "distproc_install_packages": False,
        "docker_manage_daemon": True,
        "docker_manage_service": False,
        "docker_daemon_json_path": str(daemon_json),
    }
    cp = _playbook(tmp_path, inventory, extra_vars=extra)
    assert cp.returncode == 2, _show(cp)
    assert f"{daemon_json} on local is not a JSON object {reason}" in _text(cp), _show(cp)
    assert daemon_json.read_text() == content
    assert "TASK [docker : Write daemon.json (merged)]" not in cp.stdout


def _fake_gpu_tools(tmp_path: Path, gpus: int) -> Path:
    """nvidia-smi listing `gpus` GPUs, and the toolkit's programs, on a PATH of their own."""
    bin_dir = tmp_path / "fake-nvidia-bin"
    bin_dir.mkdir()
    listing = "".join(
        f"GPU {i}: NVIDIA Fake (UUID: GPU-00000000-0000-0000-0000-00000000000{i})\\n" for i in range(gpus)
    )
    scripts = {
        "nvidia-smi": f'#!/bin/sh\nprintf "{listing}"\n',
        "nvidia-container-runtime": "#!/bin/sh\nexit 0\n",
        "nvidia-container-runtime-hook": "#!/bin/sh\nexit 0\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.cluster
def test_gpu_host_gets_the_nvidia_runtime_in_daemon_json(cluster: Cluster, tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"runtimes": {"crun": {"path": "/usr/bin/crun"}}}))
    bin_dir = _fake_gpu_tools(tmp_path, gpus=2)
    inventory = _local_inventory(
        cluster, tmp_path, distproc_work_dir=str(tmp_path / "work"), distproc_gpus="all", distproc_gpu_mode="gpus"
    )
    extra = {
        "distproc_install_packages": False,
        "docker_manage_daemon": True,
        "docker_manage_service": False,
        "docker_daemon_json_path": str(daemon_json),
    }
    cp = _playbook(tmp_path, inventory, extra_vars=extra, extra_path=[bin_dir])
    _assert_all_ok(cp, ["local"])
    assert "2 GPU(s): GPU 0: NVIDIA Fake" in cp.stdout, _show(cp)
    merged = json.loads(daemon_json.read_text())
    assert merged["runtimes"] == {
        "crun": {"path": "/usr/bin/crun"},
        "nvidia": {"path": "nvidia-container-runtime", "args": []},
    }
    assert merged["log-opts"] == {"max-size": "100m", "max-file": "5"}
    again = _playbook(tmp_path, inventory, extra_vars=extra, extra_path=[bin_dir])
    assert _assert_all_ok(again, ["local"])["local"]["changed"] == 0


@pytest.mark.cluster
def test_more_gpus_than_the_host_has_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    bin_dir = _fake_gpu_tools(tmp_path, gpus=1)
    inventory = _local_inventory(cluster, tmp_path, distproc_work_dir=str(tmp_path / "work"), distproc_gpus=4)
    cp = _playbook(
        tmp_path, inventory, "--check", extra_vars={"distproc_install_packages": False}, extra_path=[bin_dir]
    )
    assert cp.returncode == 2, _show(cp)
    assert "local: distproc_gpus is 4 but nvidia-smi lists 1 GPU(s)" in _text(cp), _show(cp)


@pytest.mark.cluster
def test_a_gpu_host_without_the_container_toolkit_fails_clearly(cluster: Cluster, tmp_path: Path) -> None:
    bin_dir = _fake_gpu_tools(tmp_path, gpus=1)
    # A runtime program that exists nowhere (the test machine may have the real toolkit).
    missing = tmp_path / "no-such-nvidia-container-runtime"
    inventory = _local_inventory(cluster, tmp_path, distproc_work_dir=str(tmp_path / "work"), distproc_gpus=1)
    cp = _playbook(
        tmp_path,
        inventory,
        "--check",
        extra_vars={"distproc_install_packages": False, "nvidia_runtime_path": str(missing)},
        extra_path=[bin_dir],
    )
    assert cp.returncode == 2, _show(cp)
    message = _text(cp)
    assert f"local: the NVIDIA Container Toolkit is not installed (missing: {missing})" in message, _show(cp)
    assert "TASK [docker :" not in cp.stdout


# --------------------------------------------------------------------------
# docs/fleet.md stays true


def test_fleet_doc_inventory_and_job_are_valid_and_its_commands_exist(tmp_path: Path) -> None:
    text = (REPO / "docs" / "fleet.md").read_text()
    (inventory_text,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (job_text,) = re.findall(r"```json\n(.*?)```", text, re.S)
    inventory = tmp_path / "gpu-fleet.yaml"
    inventory.write_text(inventory_text)
    job = tmp_path / "job.json"
    job.write_text(job_text)
    env = _env(tmp_path)
    cp = subprocess.run(
        [_tool("distproc"), "validate", "--inventory", str(inventory), str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # The output shown in the doc is what validate prints.
    assert cp.stdout.strip() in text, cp.stdout
    # The playbook accepts the same inventory.
    cp = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "-i", str(inventory), str(PLAYBOOK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # Every `distproc SUBCOMMAND` the doc shows in a shell block is one the CLI has.
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S))
    used = set(re.findall(r"^distproc (\w+)", shell, re.M))
    assert {"validate", "run", "describe", "logs", "hosts"} <= used
    helps = subprocess.run(
        [_tool("distproc"), "--help"], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    listed = set(re.findall(r"^    (\w+)\s", helps, re.M))
    assert used <= listed, f"docs/fleet.md uses {sorted(used - listed)}, which `distproc --help` does not list"
