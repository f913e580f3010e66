"""Docker, as the agent drives it: the `docker run` argv and the CLI calls.

The argv is built by a pure function so the contract's rules (entrypoint
cases, networking, GPUs, labels) are tested without a daemon. The runner
reaches the daemon through engine.py, which uses the CLI calls here only when
it cannot speak the daemon's API itself; pulls and logins always come here.
"""

from __future__ import annotations

import os
import re
from typing import IO, TYPE_CHECKING, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

if TYPE_CHECKING:
    import subprocess

from .task import DockerAccess, HostTask

LABEL_JOB = "distproc.job"
LABEL_ALGO = "distproc.algo"


class DockerError(Exception):
    def __init__(self, argv: Sequence[str], status: int, stderr: str) -> None:
        self.argv = list(argv)
        self.status = status
        self.stderr = stderr
        tail = stderr.strip()[-600:]
        super().__init__("docker {} failed (exit {}): {}".format(argv[0] if argv else "", status, tail))


def run_argv(task: HostTask, ml_dir: str, env_file: Optional[str], inherited_env: Sequence[str]) -> List[str]:
    """The arguments after `docker` that start this host's container, detached.

    Entrypoint rules (contract.md): Docker's --entrypoint takes one word and
    clears the image's CMD, so an entrypoint [E0, E1, ...] becomes
    `--entrypoint E0 IMAGE E1 ... ARGS ...`; arguments alone keep the image's
    ENTRYPOINT and replace its CMD; neither keeps both.
    """
    argv = [
        "run",
        "--detach",
        # The agent pulls a missing image itself (login, events, a clear ClientError).
        "--pull",
        "never",
        "--name",
        task.container_name,
        "--label",
        "{}={}".format(LABEL_JOB, task.job_name),
        "--label",
        "{}={}".format(LABEL_ALGO, task.algo),
        "--network",
        "host",
        "--hostname",
        task.algo,
    ]
    for name, address in task.add_hosts:
        argv += ["--add-host", "{}:{}".format(name, address)]
    if env_file is not None:
        argv += ["--env-file", env_file]
    for key in inherited_env:
        argv += ["--env", key]
    argv += ["--volume", "{}:/opt/ml".format(ml_dir)]
    for source, target, read_only in task.binds:  # shared folders (run/shared.py), over their LocalPaths
        argv += ["--volume", "{}:{}{}".format(source, target, ":ro" if read_only else "")]
    if task.memory_limit_bytes is not None:
        # No swap beyond the limit: past it the kernel kills the container, which we report.
        limit = str(task.memory_limit_bytes)
        argv += ["--memory", limit, "--memory-swap", limit]
    argv += gpu_argv(task.gpus, task.gpu_mode, slurm_gpus(os.environ))
    trailing: List[str] = []
    if task.entrypoint:
        argv += ["--entrypoint", task.entrypoint[0]]
        trailing += list(task.entrypoint[1:])
    if task.arguments:
        trailing += list(task.arguments)
    argv.append(task.image)
    argv += trailing
    return argv


def gpu_argv(gpus: object, mode: str, devices: Optional[Sequence[str]] = None) -> List[str]:
    """Flags that hand the host's GPUs to the container (none on a CPU host).

    ``devices``: the GPUs a scheduler gave this job on this node (slurm_gpus),
    handed over by index instead of a count: the first N of the node may be
    another job's.
    """
    if gpus == 0 or gpus is None:
        return []
    if mode == "runtime":
        visible = ",".join(devices) if devices else nvidia_visible(gpus)
        return ["--runtime", "nvidia", "--env", "NVIDIA_VISIBLE_DEVICES={}".format(visible)]
    if devices:
        # docker reads --gpus as CSV: a list of devices needs the inner quotes ('"device=0,2"').
        return ["--gpus", '"device={}"'.format(",".join(devices))]
    return ["--gpus", "all" if gpus == "all" else str(gpus)]


def nvidia_visible(gpus: object) -> str:
    """NVIDIA_VISIBLE_DEVICES for the nvidia runtime: "all", or the first N devices."""
    return "all" if gpus == "all" else ",".join(str(i) for i in range(int(str(gpus))))


#: Where Slurm says which GPUs of the node this job step has, best first:
#: SLURM_STEP_GPUS and SLURM_JOB_GPUS hold the node's own indices (what the
#: node's Docker numbers them by); CUDA_VISIBLE_DEVICES is renumbered from 0
#: when Slurm confines devices with cgroups, so it is the last resort.
SLURM_GPU_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")
_GPU_ID = re.compile(r"^(?:[0-9]{1,4}|GPU-[0-9A-Fa-f-]{1,64}|MIG-[0-9A-Za-z/-]{1,80})$")


def slurm_gpus(environ: Mapping[str, str]) -> Optional[List[str]]:
    """The GPUs Slurm allocated to this agent's step on this node, or None (not in Slurm, or none named).

    Only inside a Slurm job (SLURM_JOB_ID set): on an SSH host, a stray
    CUDA_VISIBLE_DEVICES in the login environment must not narrow the GPUs.
    None also when Slurm names no devices (gres configured without device
    files): the count the inventory gives is used then.
    """
    if not environ.get("SLURM_JOB_ID"):
        return None
    for name in SLURM_GPU_VARIABLES:
        value = environ.get(name, "").strip()
        if not value or value in ("NoDevFiles", "none"):
            continue
        ids = [part.strip() for part in value.split(",")]
        # Nothing else may reach docker's argv: an odd value is ignored, not passed on.
        if all(_GPU_ID.match(i) for i in ids) and len(ids) <= 64:
            return ids
    return None


class Docker:
    """The docker CLI on this host, pointed at the daemon the inventory names."""

    def __init__(self, access: DockerAccess) -> None:
        self.command = list(access.command)
        self.base_env = dict(os.environ)
        if access.host:
            self.base_env["DOCKER_HOST"] = access.host

    def argv(self, args: Sequence[str]) -> List[str]:
        return self.command + list(args)

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = dict(self.base_env)
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        args: Sequence[str],
        extra_env: Optional[Dict[str, str]] = None,
        check: bool = True,
        timeout: Optional[float] = 120,
        input: Optional[str] = None,
    ) -> Tuple[int, str, str]:
        import subprocess  # here, not at the top: the Engine API path never starts a process

        try:
            proc = subprocess.run(
                self.argv(args),
                env=self.env(extra_env),
                input=input.encode("utf-8") if input is not None else None,
                stdin=subprocess.DEVNULL if input is None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise DockerError(list(args), 127, "docker command not found: {}".format(exc)) from exc
        except subprocess.TimeoutExpired as exc:
            raise DockerError(list(args), 124, "timed out after {} s".format(timeout)) from exc
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise DockerError(list(args), proc.returncode, err)
        return proc.returncode, out, err

    def popen(
        self, args: Sequence[str], stdout: IO[bytes], extra_env: Optional[Dict[str, str]] = None
    ) -> "subprocess.Popen[bytes]":
        import subprocess

        return subprocess.Popen(
            self.argv(args),
            env=self.env(extra_env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )

    def image_present(self, image: str) -> bool:
        return self.image_id(image) is not None

    def image_id(self, image: str) -> Optional[str]:
        status, out, _ = self.run(["image", "inspect", "--format", "{{.Id}}", image], check=False)
        return out.strip() or None if status == 0 else None

    def load(self, stream: IO[bytes]) -> str:
        """`docker load` from a stream (a `docker save` tar); returns what docker said."""
        import subprocess

        proc = subprocess.run(
            self.argv(["load"]),
            env=self.env(),
            stdin=stream,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode != 0:
            raise DockerError(["load"], proc.returncode, proc.stderr.decode("utf-8", "replace"))
        return proc.stdout.decode("utf-8", "replace").strip()

    def container_exists(self, name: str) -> bool:
        status, _, _ = self.run(["container", "inspect", "--format", "{{.Id}}", name], check=False)
        return status == 0

    def kill(self, name: str, signal: str) -> None:
        # A container that already exited makes kill fail; that is the goal reached.
        self.run(["kill", "--signal", signal, name], check=False)

    def remove(self, name: str) -> bool:
        """Remove the container; whether it is gone now (removed, or there was none)."""
        status, _, err = self.run(["rm", "--force", name], check=False)
        return status == 0 or "No such container" in err

    def exit_code(self, name: str) -> Optional[int]:
        state = self.state(name)
        return state.exit_code if state is not None else None

    def state(self, name: str) -> Optional["ContainerState"]:
        """Whether the container runs, its exit code and whether the kernel killed it for memory."""
        status, out, _ = self.run(
            ["container", "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}}", name],
            check=False,
        )
        if status != 0:
            return None
        try:
            running, code, oom = out.split()[:3]
            return ContainerState(running == "true", int(code), oom == "true")
        except ValueError:
            return None

    def daemon_answers(self) -> bool:
        try:
            status, _, _ = self.run(["version", "--format", "{{.Server.Version}}"], check=False, timeout=10)
        except DockerError:
            return False
        return status == 0


class ContainerState(NamedTuple):
    running: bool
    exit_code: int
    oom_killed: bool
