"""The detached run of one host's task: image, container, watch, result.

`launch` double-forks so the run outlives the SSH session that started it;
the run then records everything in the job folder (events.jsonl,
container.log, result.json) for the coordinator to follow, now or after a
reconnect. MaxRuntimeInSeconds is enforced here, on the host, so a lost
coordinator never leaves a container running forever.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import ecr, lease, staging
from .container import DockerError
from .engine import Engine, LogFollower, WaitOutcome, docker_error_text, for_access
from .files import EventLog, now, read_json, read_message, remove_paths, write_atomic, write_json_atomic
from .pids import pid_alive as pid_alive  # re-exported: cli and follow ask runner.pid_alive
from .task import HostTask, JobDir, TaskError

if TYPE_CHECKING:  # imported for real only by jobs with Pipe mode inputs (the launch path stays lean)
    from .pipes import Pipes

# How often the watch loop wakes to check for a stop request or the deadline.
WATCH_INTERVAL = 0.25
LEASE_RENEW_SECONDS = 60.0
# How long a Docker daemon that went away mid-run may take to answer again.
DOCKER_RETURN_SECONDS = 60.0


def agent_pid(jobdir: JobDir) -> Optional[int]:
    try:
        with open(jobdir.pid, encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def launch(jobdir: JobDir) -> int:
    """Start the run detached from this process's session; return its pid.

    One fork: the run is this process's child, in a session of its own (setsid), with
    no terminal to take. It outlives this process (then the system reaps it); while
    this process lives, pid_alive reaps it once it has ended, so a follower here never
    mistakes its zombie for a run. (A second fork to leave this process's children
    cost the warm agent a copy of its page tables and about a twelfth of its CPU per job.)
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            _detach_stdio(jobdir)
            pid = os.getpid()
            write_atomic(jobdir.pid, "{}\n".format(pid).encode("ascii"), durable=False)
            os.write(write_end, "{}\n".format(pid).encode("ascii"))
            os.close(write_end)
            code = 0
            run(jobdir)
        except BaseException:  # the last line of defence: record, then exit
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    if not data.strip():
        pid_alive(child)  # reaped, if it has ended
        raise RuntimeError("agent run did not start; see {}".format(jobdir.agent_log))
    return int(data.strip())


def _detach_stdio(jobdir: JobDir) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    log = os.open(jobdir.agent_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)


class StopFlag:
    """Set by SIGTERM/SIGINT (from `agent stop`) or by the deadline."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


def _stop_reason(jobdir: JobDir) -> str:
    request = read_json(jobdir.stop_request)
    if isinstance(request, dict) and isinstance(request.get("reason"), str):
        return str(request["reason"])
    return "stop requested"


def run(jobdir: JobDir) -> Dict[str, Any]:
    """Run the task in the foreground and write result.json; return the result."""
    events = EventLog(jobdir.events)
    started = now()
    result: Dict[str, Any] = {
        "exit_code": None,
        "stopped": False,
        "stop_reason": None,
        "message": None,
        "message_valid": True,
        "error": None,
        "error_class": None,
        "agent_started": started,
        "container_started": None,
        "container_ended": None,
    }
    stop = StopFlag()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set(_stop_reason(jobdir))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    events.emit("agent_started", pid=os.getpid())
    try:
        task = jobdir.load_task()
    except TaskError as exc:
        return _finish(jobdir, events, result, "InternalServerError", str(exc))
    # A stop may have been asked for before this process existed.
    if os.path.exists(jobdir.stop_request):
        stop.set(_stop_reason(jobdir))
    sampler = _start_sampler(jobdir, task)
    beating = threading.Event()
    heartbeat = threading.Thread(target=_keep_lease, args=(jobdir, task, beating), daemon=True)
    heartbeat.start()
    try:
        return _run_task(jobdir, task, events, stop, started, result)
    finally:
        beating.set()
        if sampler is not None:
            sampler.stop()
        if result.get("orphaned"):
            # No coordinator will come to clean up: do its cleanup here (the container
            # is already removed), so that a host given up on keeps none of the job's
            # secrets (the task holds the Environment and any forwarded credentials)
            # nor its data, then give the host back. The record (result, events,
            # log, metrics) stays for a late `distproc attach`.
            problems = remove_paths(jobdir.data)
            if problems:
                events.emit("cleanup_incomplete", problems=problems)
            lease.release(lease.work_dir_of(jobdir.root), task.job_name)


def _keep_lease(jobdir: JobDir, task: HostTask, done: threading.Event) -> None:
    """Renew the host's lease while the job runs, however long that is."""
    work_dir = lease.work_dir_of(jobdir.root)
    while not done.wait(LEASE_RENEW_SECONDS):
        lease.renew(work_dir, task.job_name)


def _start_sampler(jobdir: JobDir, task: HostTask) -> Optional[Any]:
    """Metrics for the life of the agent; never a reason for the job to fail."""
    if task.metrics_interval_seconds <= 0:
        return None
    if task.deps_dir and task.deps_dir not in sys.path:
        sys.path.insert(0, task.deps_dir)  # the shipped pynvml, for GPU metrics
    from .metrics import MetricsSampler

    sampler = MetricsSampler(
        jobdir.metrics,
        jobdir.root,
        interval=task.metrics_interval_seconds,
        # pynvml is shipped only to hosts the inventory gives GPUs.
        gpu=bool(task.gpus),
        no_gpu_reason="the inventory gives this host no GPUs (distproc_gpus)",
    )
    sampler.start()
    return sampler


def _run_task(
    jobdir: JobDir, task: HostTask, events: EventLog, stop: StopFlag, started: float, result: Dict[str, Any]
) -> Dict[str, Any]:
    deadline = started + task.max_runtime_seconds if task.max_runtime_seconds else None
    if stop.event.is_set():
        result.update(stopped=True, stop_reason=stop.reason)
        return _finish(jobdir, events, result, None, None)
    # The daemon's API on its socket when that is certain and it answers; else the docker CLI.
    engine = for_access(task.docker)
    pipes: Optional[Pipes] = None
    if task.pipes:
        # Pipe mode: the named pipes exist before the entrypoint starts, and are fed while it runs.
        from .pipes import PipeFailed
        from .pipes import Pipes as _Pipes

        try:
            pipes = _Pipes(jobdir, task, events)
        except (PipeFailed, OSError) as exc:
            return _finish(jobdir, events, result, "InternalServerError", "cannot make the input pipes: {}".format(exc))
        pipes.start()
    try:
        _run_container(jobdir, task, engine, events, stop, deadline, result, pipes)
    except _PullFailed as exc:
        return _finish(jobdir, events, result, "ClientError", str(exc))
    except DockerError as exc:
        return _finish(jobdir, events, result, "InternalServerError", str(exc))
    finally:
        # Recorded so that the job's cleanup need not ask Docker again (cli.cleanup_job).
        result["container_removed"] = engine.remove(task.container_name)
        if pipes is not None:
            _end_pipes(pipes, events, result)
    message, problem = read_message(jobdir.host_path("/opt/ml/output/message"))
    result.update(message=message, message_valid=problem is None, message_problem=problem)
    return _finish(jobdir, events, result, result.get("error_class"), result.get("error"))


def _end_pipes(pipes: "Pipes", events: EventLog, result: Dict[str, Any]) -> None:
    """Stop the feeds once the container is gone; a feed that failed fails the host."""
    failure, outcomes = pipes.stop()
    events.emit("pipes_ended", pipes=outcomes)
    if failure is not None and not result.get("error"):
        result.update(
            error_class="ClientError" if failure.client_error else "InternalServerError",
            error="Pipe mode input failed: {}".format(failure),
        )


class _PullFailed(Exception):
    """The image is not on the host and cannot be pulled: the job's fault (ClientError)."""


def _pull_image(engine: Engine, task: HostTask, events: EventLog) -> None:
    # Always through the CLI: `docker login` (ECR) keeps the credentials in the CLI's config.
    docker = engine.cli
    try:
        if ecr.ecr_registry(task.image):
            if task.deps_dir and task.deps_dir not in sys.path:
                sys.path.insert(0, task.deps_dir)  # the shipped boto3
            events.emit("registry_login", registry=ecr.login(docker, task.image, dict(task.s3 or {})))
        events.emit("image_pull_started", image=task.image)
        docker.run(["pull", task.image], timeout=None)
    except ecr.EcrLoginError as exc:
        raise _PullFailed("cannot pull image {}: {}".format(task.image, exc)) from exc
    except DockerError as exc:
        raise _PullFailed("cannot pull image {}: {}".format(task.image, exc.stderr.strip()[-500:])) from exc
    events.emit("image_ready", pulled=True)


def _missing_image(stderr: str) -> bool:
    return "No such image" in stderr


def _run_container(
    jobdir: JobDir,
    task: HostTask,
    engine: Engine,
    events: EventLog,
    stop: StopFlag,
    deadline: Optional[float],
    result: Dict[str, Any],
    pipes: Optional["Pipes"] = None,
) -> None:
    name = task.container_name
    resolved = _with_resolved_hosts(task)
    # Create and start at once: an image already on the host (the usual case) costs no
    # separate image check; a missing one is pulled, then the start is tried again.
    started = engine.start(resolved, jobdir.ml, jobdir.env_file, jobdir.log)
    if started.status != 0 and _missing_image(started.error):
        _pull_image(engine, task, events)
        if stop.event.is_set():
            result.update(stopped=True, stop_reason=stop.reason)
            return
        started = engine.start(resolved, jobdir.ml, jobdir.env_file, jobdir.log)
    elif started.status == 0:
        events.emit("image_ready", pulled=False)
    if started.status != 0 and "is already in use" in started.error:
        # A leftover of an earlier attempt under the same identity: removed only when
        # it is there, which saves every other start a docker call.
        engine.remove(name)
        started = engine.start(resolved, jobdir.ml, jobdir.env_file, jobdir.log)
        if started.status == 0:
            events.emit("image_ready", pulled=False)
    result["container_started"] = now()
    if started.status != 0:
        err = started.error
        created_code = engine.exit_code(name)
        result.update(container_ended=now(), exit_code=created_code if created_code else None)
        # A daemon we cannot reach is the platform's fault; a container that
        # cannot start (bad entrypoint, bad image) is the job's.
        unreachable = "Cannot connect to the Docker daemon" in err
        result.update(
            error_class="InternalServerError" if unreachable else "ClientError",
            error="container could not start: {}".format(docker_error_text(err)),
        )
        events.emit("container_failed_to_start", status=started.status, docker=engine.kind)
        return
    events.emit("container_started", name=name, docker=engine.kind)
    continuous = staging.Continuous(jobdir, task)
    try:
        continuous.start()
    except Exception as exc:
        events.emit("continuous_upload_failed", error=str(exc))
    code = _ContainerWatch(jobdir, task, engine, events, stop, deadline, result, pipes).until_exit(started.output)
    result["container_ended"] = now()
    result["exit_code"] = code
    if code not in (0, None) and not result.get("error"):
        state = engine.state(name)
        if state is not None and state.oom_killed:
            result.update(error_class="AlgorithmError", error=_oom_text(task, code))
    events.emit("container_exited", exit_code=code)
    for error in continuous.stop():
        events.emit("continuous_upload_failed", error=error)


def _oom_text(task: HostTask, code: int) -> str:
    if task.memory_limit_bytes is not None:
        limit = "its memory limit of {} MiB (distproc_memory_limit)".format(task.memory_limit_bytes // (1024 * 1024))
    else:
        limit = "the memory the host could give it"
    return "the kernel killed the container for using more than {} (out of memory, exit code {})".format(limit, code)


class _ContainerWatch:
    """Wait for the container's exit while enforcing stops, the deadline and the orphan timeout.

    The engine's wait (`docker wait`, or POST /containers/{id}/wait) is the
    clock: when it fails, the daemon went away. The watch
    then waits up to DOCKER_RETURN_SECONDS for it to answer again: a daemon
    restarted with live-restore still has the container, which is watched
    again; one without has ended it, which is this host's failure, named.
    """

    def __init__(
        self,
        jobdir: JobDir,
        task: HostTask,
        engine: Engine,
        events: EventLog,
        stop: StopFlag,
        deadline: Optional[float],
        result: Dict[str, Any],
        pipes: Optional["Pipes"] = None,
    ) -> None:
        self.jobdir = jobdir
        self.pipes = pipes  # agent/pipes.Pipes, for jobs with Pipe mode inputs
        self.pipe_killed = False
        self.task = task
        self.engine = engine
        self.events = events
        self.stop = stop
        self.deadline = deadline
        self.result = result
        self.name = task.container_name
        self.started = now()
        self.interrupt_at: Optional[float] = None
        self.killed = False

    def until_exit(self, output: Optional[LogFollower] = None) -> Optional[int]:
        """The exit code; `output`: the container's output already followed since its start, if it is."""
        since: Optional[float] = None
        while True:
            follower = output if output is not None else self.engine.follow_logs(self.name, since, self.jobdir.log)
            output = None
            waiter = self.engine.wait(self.name)
            outcome: Optional[WaitOutcome] = None
            while outcome is None:
                outcome = waiter.poll(WATCH_INTERVAL)
                if outcome is None:
                    self._tick(now())
            follower.end()
            if outcome.ok:
                return outcome.exit_code
            lost_at = now()
            why = outcome.error
            self.events.emit("docker_unreachable", error=why)
            if not self._daemon_back():
                self.result.update(
                    error_class="InternalServerError",
                    error="lost the host's Docker daemon while the container ran (docker wait: {}); "
                    "it did not answer again within {:.0f} s".format(why, DOCKER_RETURN_SECONDS),
                )
                return None
            state = self.engine.state(self.name)
            if state is not None and state.running:
                # Restarted with live-restore: the container lives on; watch it again.
                self.events.emit("docker_back", container_running=True)
                since = lost_at
                continue
            self.events.emit("docker_back", container_running=False)
            self.result.update(
                error_class="InternalServerError",
                error="the host's Docker daemon stopped while the container ran (docker wait: {}); the container "
                "ended with it{}".format(why, " (exit code {})".format(state.exit_code) if state else ""),
            )
            return state.exit_code if state is not None else None

    def _daemon_back(self) -> bool:
        give_up = now() + DOCKER_RETURN_SECONDS
        while now() < give_up:
            if self.engine.daemon_answers():
                return True
            self._check_limits(now())
            self.stop.event.wait(1.0)
        return False

    def _check_limits(self, t: float) -> None:
        if self.interrupt_at is not None or self.stop.event.is_set():
            return
        if self.deadline is not None and t >= self.deadline:
            self.stop.set("MaxRuntimeInSeconds ({} s) exceeded".format(self.task.max_runtime_seconds))
        elif self.task.orphan_timeout_seconds > 0:
            unwatched = t - max(self.started, _mtime(self.jobdir.watched))
            if unwatched > self.task.orphan_timeout_seconds:
                self.result["orphaned"] = True
                self.stop.set(
                    "no coordinator followed the job for {:.0f} s (the orphan timeout, distproc run "
                    "--orphan-timeout): stopped so that nothing runs unwatched".format(unwatched)
                )

    def _tick(self, t: float) -> None:
        self._check_limits(t)
        if self.pipes is not None and not self.pipe_killed and self.pipes.failure() is not None:
            # A feed failed with its pipe still open: stop the reader before it could take a
            # cut stream for the whole one (the job fails with the feed's error, _end_pipes).
            self.pipe_killed = True
            self.events.emit("killing", reason="a Pipe mode input failed")
            self.engine.kill(self.name, "SIGKILL")
        if self.interrupt_at is None and self.stop.event.is_set():
            self.interrupt_at = t
            self.result.update(stopped=True, stop_reason=self.stop.reason)
            self.events.emit("stopping", reason=self.stop.reason, grace_seconds=self.task.stop_grace_seconds)
            self.engine.kill(self.name, "SIGINT")
        if self.interrupt_at is not None and not self.killed and t >= self.interrupt_at + self.task.stop_grace_seconds:
            self.killed = True
            self.events.emit("killing", reason="grace period over")
            self.engine.kill(self.name, "SIGKILL")


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _with_resolved_hosts(task: HostTask) -> HostTask:
    """Docker's --add-host takes addresses only; resolve names as this host sees them."""
    import ipaddress  # here: a millisecond of every agent start otherwise

    resolved: List[Tuple[str, str]] = []
    for name, address in task.add_hosts:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            try:
                address = str(socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)[0][4][0])
            except OSError as exc:
                raise DockerError(
                    ["run"], 1, "cannot resolve {} (the address of {}): {}".format(address, name, exc)
                ) from exc
        resolved.append((name, address))
    return task._replace(add_hosts=tuple(resolved))


def _finish(
    jobdir: JobDir, events: EventLog, result: Dict[str, Any], error_class: Optional[str], error: Optional[str]
) -> Dict[str, Any]:
    result["error_class"] = error_class
    result["error"] = error
    result["agent_ended"] = now()
    result["status"] = host_status(result)
    write_json_atomic(jobdir.result, result)
    events.emit("finished", status=result["status"], exit_code=result["exit_code"])
    return result


def host_status(result: Dict[str, Any]) -> str:
    """This host's status: Stopped if we stopped it, else by error and exit code."""
    if result.get("stopped"):
        return "Stopped"
    if result.get("error") or result.get("exit_code") != 0 or not result.get("message_valid", True):
        return "Failed"
    return "Completed"


def request_stop(jobdir: JobDir, reason: str) -> Dict[str, Any]:
    """Ask the run to stop (SIGINT, grace, SIGKILL); works if the run is gone too."""
    if os.path.exists(jobdir.result):
        return {"state": "finished"}
    if not os.path.isdir(jobdir.root):
        # Not prepared yet: the coordinator sees the stop in the job store.
        return {"state": "not-started"}
    write_json_atomic(jobdir.stop_request, {"reason": reason, "time": now()}, 0o600)
    pid = agent_pid(jobdir)
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        return {"state": "signalled", "pid": pid}
    # No agent: kill by identity so nothing is left running unaccounted for.
    try:
        task = jobdir.load_task()
    except TaskError:
        return {"state": "no-agent"}
    engine = for_access(task.docker)
    engine.kill(task.container_name, "SIGKILL")
    code = engine.exit_code(task.container_name)
    engine.remove(task.container_name)
    result: Dict[str, Any] = {
        "exit_code": code,
        "stopped": True,
        "stop_reason": reason,
        "message": None,
        "message_valid": True,
        "error": "agent was gone; container killed by stop",
        "error_class": None,
        "agent_started": None,
        "container_started": None,
        "container_ended": now(),
    }
    _finish(jobdir, EventLog(jobdir.events), result, None, "agent was gone; container killed by stop")
    return {"state": "killed-without-agent"}


def describe_state(jobdir: JobDir) -> Dict[str, Any]:
    pid = agent_pid(jobdir)
    return {
        "exists": os.path.isdir(jobdir.root),
        "pid": pid,
        "alive": bool(pid and pid_alive(pid)),
        "result": read_json(jobdir.result),
    }


def dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True)
