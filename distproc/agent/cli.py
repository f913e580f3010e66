"""The agent's command line: one verb per step the coordinator asks of a host.

Every verb prints one JSON object on stdout (except `follow`, which streams
JSON lines, and `pack`, which writes a tar stream), so the coordinator never
scrapes text. Failures print {"error": ...} and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, Dict, List, Optional

from . import lease
from .container import Docker, DockerError
from .lines import StdinLines
from .protocol import CleanupRequest, FollowRequest, LaunchRequest, PrepareRequest, ProtocolError, parse_request
from .task import DockerAccess, HostTask, JobDir, TaskError, parse_task

# Each call runs one verb, and importing every module for every verb was most of
# a short call's time: a verb imports the sibling modules it needs where it needs them.

MIN_PYTHON = (3, 9)
# How often a launched job's waiting conversation looks whether its run was left unwatched.
UNWATCHED_LOOK_SECONDS = 5.0


def _print(doc: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()


def cmd_probe(args: argparse.Namespace) -> int:
    _print({"python": list(sys.version_info[:3]), "pid": os.getpid()})
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Create the job folder from the task on stdin: configs, LocalPaths, 0600 task."""
    try:
        task = parse_task(json.loads(sys.stdin.buffer.read().decode("utf-8")))
    except (ValueError, TaskError) as exc:
        _print({"error": "bad task document: {}".format(exc)})
        return 2
    return _prepare(JobDir(args.jobdir), task, args.launch)


def _prepare(jobdir: JobDir, task: HostTask, launch: bool) -> int:
    from . import files, hostcheck, netif, runner

    # Fail here, before any data is staged, if the job could not start anyway.
    docker = hostcheck.docker_answers(task.docker)
    if not docker["ok"]:
        _print({"error": "Docker is not reachable on this host: {}".format(docker["error"])})
        return 2
    if os.path.isdir(jobdir.root):
        pid = runner.agent_pid(jobdir)
        # A run that wrote its result is over, even if its process is still exiting.
        if pid is not None and runner.pid_alive(pid) and not os.path.exists(jobdir.result):
            _print({"error": "job folder {} is in use by agent pid {}".format(jobdir.root, pid)})
            return 2
        # A leftover of an earlier attempt of this job name: nothing runs there.
        shutil.rmtree(jobdir.root)
    os.makedirs(jobdir.root, mode=0o700)
    os.chmod(jobdir.root, 0o700)
    files.write_atomic(jobdir.task, json.dumps(task.to_doc()).encode("utf-8"), 0o600, durable=False)
    config = jobdir.host_path("/opt/ml/config")
    os.makedirs(config)
    resource_config = dict(task.resource_config)
    if resource_config.get("network_interface_name", "") is None:
        own = dict(task.add_hosts).get(task.algo, "")
        resource_config["network_interface_name"] = netif.interface_for(own) or "eth0"
    files.write_json_atomic(os.path.join(config, "resourceconfig.json"), resource_config, durable=False)
    files.write_json_atomic(os.path.join(config, "processingjobconfig.json"), task.processing_job_config, durable=False)
    os.makedirs(jobdir.host_path("/opt/ml/output"), exist_ok=True)
    for path in task.local_paths:
        os.makedirs(jobdir.host_path(path), exist_ok=True)
    files.EventLog(jobdir.events).emit("prepared")
    if launch:
        # Nothing to stage: start at once, which saves the coordinator a round trip per host.
        _print({"jobdir": jobdir.root, "pid": runner.launch(jobdir)})
        return 0
    _print({"jobdir": jobdir.root})
    return 0


def cmd_untar(args: argparse.Namespace) -> int:
    """Unpack a tar stream from stdin under a container path of the job folder."""
    from .files import extract_tar

    jobdir = JobDir(args.jobdir)
    dest = jobdir.host_path(args.path)
    try:
        count, size = extract_tar(sys.stdin.buffer, dest)
    except (ValueError, OSError) as exc:
        _print({"error": "cannot unpack into {}: {}".format(args.path, exc)})
        return 1
    _print({"files": count, "bytes": size})
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    """Write every regular file under a container path of the job folder as tar."""
    from .files import pack_tree

    jobdir = JobDir(args.jobdir)
    pack_tree(jobdir.host_path(args.path), sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def cmd_stage_s3(args: argparse.Namespace) -> int:
    """Download this host's S3 objects (the plan on stdin) under their LocalPaths."""
    from . import staging

    jobdir = JobDir(args.jobdir)
    plan = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    try:
        count, size = staging.stage_inputs(jobdir, jobdir.load_task(), plan, staging.print_progress)
    except staging.StagingFailed as exc:
        _print({"error": str(exc), "client_error": exc.client_error})
        return 1
    _print({"files": count, "bytes": size})
    return 0


def cmd_upload_s3(args: argparse.Namespace) -> int:
    """Upload the job's S3 outputs from this host."""
    from . import staging

    jobdir = JobDir(args.jobdir)
    try:
        report = staging.upload_outputs(jobdir, jobdir.load_task())
    except staging.StagingFailed as exc:
        _print({"error": str(exc), "client_error": exc.client_error})
        return 1
    _print({"outputs": report})
    return 0


def cmd_lease(args: argparse.Namespace) -> int:
    _print(lease.acquire(args.workdir, args.job, args.holder, args.stale_after))
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    """Lease the host, then serve the job's requests in this one process.

    Prints the lease answer as a line at once. A host that is leased then holds
    one conversation with the coordinator for the whole job, one JSON request
    per line on stdin and its answer on stdout (see `serve`): one python start
    and one SSH channel per host instead of one per step.
    """
    answer = lease.acquire(args.workdir, args.job, args.holder, args.stale_after)
    _print(answer)
    if args.warm_idle > 0:
        # Answered already: the warm agent (for the jobs after this one) starts off the critical path.
        from . import warm

        warm.start(sys.executable, _bundle_dir(), args.workdir, args.warm_idle)
    if not answer.get("leased"):
        return 0
    return serve(StdinLines(sys.stdin.fileno()), args.workdir, args.job, args.stale_after / 4)


def _bundle_dir() -> str:
    """The unpacked agent this runs from (<work>/agent/distproc-agent-HASH)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cmd_warm(args: argparse.Namespace) -> int:
    """Serve claims on this agent version's socket until idle (warm.py); started by `claim`."""
    from . import warm

    return warm.serve_forever(_bundle_dir(), args.workdir, args.idle, main)


def serve(lines: StdinLines, work_dir: str, job: str, renew_every: float) -> int:
    """The claiming agent's conversation, request by request.

    First {"verb": "prepare", "jobdir": ..., "launch": bool, "task": {...}},
    answered as the `prepare` verb would (a failed prepare ends the
    conversation with its status). Then, in the order the job needs them:
    {"verb": "launch"} (as `launch`), {"verb": "follow", "events_offset": N,
    "log_offset": N} (the `follow` stream, ending with its "result" or "lost"
    line; empty lines meanwhile are the coordinator's pings) and
    {"verb": "cleanup"} (as `cleanup`, which ends it). Input closed early ends
    it too: before the run is launched that gives the lease back (the host
    was not needed, or the coordinator is gone); after, the run keeps it.
    While waiting for a request the lease is renewed. A run stopped because
    nobody followed it (the orphan timeout) while nothing came on this
    channel either ends it as well, and the SSH session it runs in: nobody
    is at the other end (see _end_unwatched).
    """
    jobdir: Optional[JobDir] = None
    launched = False
    while True:
        # Once launched, look every few seconds whether the run was left unwatched.
        wait = min(renew_every, UNWATCHED_LOOK_SECONDS) if launched else renew_every
        line = lines.readline(max(wait, 1.0))
        if line is None:
            lease.renew(work_dir, job)
            if launched and jobdir is not None and _left_unwatched(jobdir, lines):
                return _end_unwatched()
            continue
        if not line:
            if not launched:
                _print({"released": lease.release(work_dir, job)})
            return 0
        if not line.strip():
            continue  # a ping that came after its follow ended
        try:
            request = parse_request(json.loads(line.decode("utf-8")))
        except ProtocolError as exc:
            if exc.path.startswith("request.task"):
                _print({"error": "bad task document: {}".format(exc)})
                return 2
            _print({"error": "bad request: {}".format(exc)})
            if jobdir is None:
                return 2
            continue  # the conversation goes on: the coordinator has the error answer
        except ValueError as exc:
            _print({"error": "bad request: {}".format(exc)})
            return 2
        if jobdir is None:
            if not isinstance(request, PrepareRequest):
                _print({"error": "{} before prepare".format(request.to_doc()["verb"])})
                return 2
            jobdir = JobDir(request.jobdir)
            launched = request.launch
            status = _prepare(jobdir, request.task, launched)
            if status != 0:
                return status
        elif isinstance(request, LaunchRequest):
            answer = launch_job(jobdir)
            launched = launched or "pid" in answer
            _print(answer)
        elif isinstance(request, FollowRequest):
            from . import follow

            code = follow.follow(jobdir, request.events_offset, request.log_offset, lines=lines)
            if code == follow.UNWATCHED:
                return _end_unwatched()
        elif isinstance(request, CleanupRequest):
            _print(cleanup_job(jobdir))
            return 0
        else:
            _print({"error": "{} again: the task is prepared already".format(request.to_doc()["verb"])})


def _left_unwatched(jobdir: JobDir, lines: StdinLines) -> bool:
    from . import follow

    return lines.silent_for() >= follow.PINGS_MISSED_SECONDS and bool(follow.orphaned(jobdir))


def _end_unwatched() -> int:
    """End the conversation on a dead channel, and the SSH session that carries it.

    The run was stopped because no coordinator followed it for the orphan
    timeout, and nothing came on this channel meanwhile: whoever opened it is
    gone (cut off by the network, most likely). sshd would keep the session,
    and this process waiting on it, until the dead TCP connection times out,
    hours later; ending the session drops the connection now (session.py).
    The run already cleaned up the job's data and gave the lease back.
    """
    from .session import end_ssh_session

    end_ssh_session()
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    _print({"released": lease.release(args.workdir, args.job)})
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Measure what this host offers (`distproc hosts check`)."""
    from . import hostcheck

    access = DockerAccess(tuple(json.loads(args.docker)), args.docker_host or None)
    _print(hostcheck.check(access, args.work_dir, args.deps, args.gpus))
    return 0


def cmd_image_id(args: argparse.Namespace) -> int:
    """The ID of the job's image on this host's daemon, or null if it lacks it."""
    task = JobDir(args.jobdir).load_task()
    _print({"image": task.image, "id": Docker(task.docker).image_id(task.image)})
    return 0


def cmd_load_image(args: argparse.Namespace) -> int:
    """`docker load` of the `docker save` tar on stdin, into the job's daemon."""
    task = JobDir(args.jobdir).load_task()
    docker = Docker(task.docker)
    try:
        said = docker.load(sys.stdin.buffer)
    except DockerError as exc:
        _print({"error": str(exc)})
        return 1
    _print({"loaded": said, "id": docker.image_id(task.image)})
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    answer = launch_job(JobDir(args.jobdir))
    _print(answer)
    return 2 if "error" in answer else 0


def launch_job(jobdir: JobDir) -> Dict[str, Any]:
    """Start the prepared task's run, detached; a run already going is reported, not doubled."""
    from . import runner

    if not os.path.exists(jobdir.task):
        return {"error": "no task in {}: prepare it first".format(jobdir.root)}
    pid = runner.agent_pid(jobdir)
    if pid is not None and runner.pid_alive(pid):
        return {"pid": pid, "already_running": True}
    return {"pid": runner.launch(jobdir)}


def cmd_run(args: argparse.Namespace) -> int:
    """Run in the foreground (for debugging on a host)."""
    from . import runner

    _print(runner.run(JobDir(args.jobdir)))
    return 0


def cmd_follow(args: argparse.Namespace) -> int:
    from . import follow

    code = int(follow.follow(JobDir(args.jobdir), args.events_offset, args.log_offset, stdin=sys.stdin.buffer))
    if code == follow.UNWATCHED:
        return _end_unwatched()
    return code


def cmd_stop(args: argparse.Namespace) -> int:
    from . import runner

    _print(runner.request_stop(JobDir(args.jobdir), args.reason))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from . import runner

    _print(runner.describe_state(JobDir(args.jobdir)))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    _print(cleanup_job(JobDir(args.jobdir)))
    return 0


def cleanup_job(jobdir: JobDir) -> Dict[str, Any]:
    """Remove the job's data and container; keep the record (events, log, result).

    The answer carries the host's metric samples, which saves the coordinator a round trip.
    """
    from .files import remove_paths

    try:
        task: Optional[HostTask] = jobdir.load_task()
    except TaskError:
        task = None  # gone already: a host whose run nobody followed cleaned up itself (runner.py)
    if task is not None and not _run_removed_its_container(jobdir):
        from .engine import for_access

        for_access(task.docker).remove(task.container_name)
    problems: List[str] = remove_paths(jobdir.data)
    if task is not None:
        lease.release(lease.work_dir_of(jobdir.root), task.job_name)
    from .metrics import read_samples

    gpu, samples = read_samples(jobdir.metrics)
    return {"removed": not problems, "problems": problems, "metrics": {"gpu": gpu, "samples": samples}}


def _run_removed_its_container(jobdir: JobDir) -> bool:
    """Whether the run's result says it removed its container (two Docker calls fewer per job)."""
    from .files import read_json

    try:
        result = read_json(jobdir.result)
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and result.get("container_removed") is True


class _Skipped:
    """Stands in for the parser of a verb not being run."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_defaults(self, **kwargs: Any) -> None:
        pass


VERBS = (
    "probe", "prepare", "launch", "run", "status", "cleanup", "stage-s3", "upload-s3", "image-id",
    "load-image", "untar", "pack", "follow", "stop", "lease", "claim", "release", "check", "warm",
)  # fmt: skip


def build_parser(verb: Optional[str] = None) -> argparse.ArgumentParser:
    """The agent's command line; with `verb`, only that verb's parser is built
    (each one costs a fraction of a millisecond, paid at every agent start)."""
    parser = argparse.ArgumentParser(prog="distproc-agent")
    sub = parser.add_subparsers(dest="verb", required=True)

    def add(name: str) -> Any:
        return sub.add_parser(name) if verb is None or name == verb else _Skipped()

    add("probe").set_defaults(func=cmd_probe)
    p = add("prepare")
    p.add_argument("jobdir")
    p.add_argument("--launch", action="store_true", help="launch the task as soon as it is prepared")
    p.set_defaults(func=cmd_prepare)
    for name, func in (
        ("launch", cmd_launch),
        ("run", cmd_run),
        ("status", cmd_status),
        ("cleanup", cmd_cleanup),
        ("stage-s3", cmd_stage_s3),
        ("upload-s3", cmd_upload_s3),
        ("image-id", cmd_image_id),
        ("load-image", cmd_load_image),
    ):
        p = add(name)
        p.add_argument("jobdir")
        p.set_defaults(func=func)
    for name, func in (("untar", cmd_untar), ("pack", cmd_pack)):
        p = add(name)
        p.add_argument("jobdir")
        p.add_argument("path", help="a path under /opt/ml as the container sees it")
        p.set_defaults(func=func)
    p = add("follow")
    p.add_argument("jobdir")
    p.add_argument("--events-offset", type=int, default=0)
    p.add_argument("--log-offset", type=int, default=0)
    p.set_defaults(func=cmd_follow)
    p = add("stop")
    p.add_argument("jobdir")
    p.add_argument("--reason", default="stop requested")
    p.set_defaults(func=cmd_stop)
    for name, func in (("lease", cmd_lease), ("claim", cmd_claim)):
        p = add(name)
        p.add_argument("workdir")
        p.add_argument("--job", required=True)
        p.add_argument("--holder", required=True, help="the inventory host taking it")
        p.add_argument("--stale-after", type=float, default=lease.DEFAULT_STALE_AFTER)
        p.add_argument("--warm-idle", type=float, default=0.0, help="start the warm agent (idle time in s)")
        p.set_defaults(func=func)
    p = add("warm")
    p.add_argument("workdir")
    p.add_argument("--idle", type=float, required=True, help="exit after this many seconds with nothing to do")
    p.set_defaults(func=cmd_warm)
    p = add("release")
    p.add_argument("workdir")
    p.add_argument("--job", required=True)
    p.set_defaults(func=cmd_release)
    p = add("check")
    p.add_argument("--work-dir", required=True)
    p.add_argument("--docker", required=True, help="the docker command, as a JSON list")
    p.add_argument("--docker-host", default="")
    p.add_argument("--deps", default="", help="where pynvml is unpacked")
    p.add_argument("--gpus", action="store_true", help="the inventory gives this host GPUs: probe them")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    if sys.version_info < MIN_PYTHON:
        _print({"error": "the distproc agent needs python >= 3.9, this is {}".format(sys.version.split()[0])})
        return 2
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words[0] if words and words[0] in VERBS else None).parse_args(words)
    if getattr(args, "jobdir", None):
        # Anything done for a job shows it is alive: keep its lease on the host fresh.
        root = os.path.abspath(args.jobdir)
        lease.renew(lease.work_dir_of(root), os.path.basename(os.path.dirname(root)))
    try:
        return int(args.func(args))
    except TaskError as exc:
        _print({"error": str(exc)})
        return 2
