"""The `distproc` command.

Exit codes of `run`: 0 Completed, 1 Failed, 2 invalid input (job, inventory,
usage, a name already used), 3 Stopped, 4 any other distproc error. Other
commands: 0 success, 2 invalid input or unknown job, 4 other errors.
Every DistprocError becomes one clear message; a traceback means a bug.

Start-up is part of every command's cost: each command imports what it uses,
in its own function. `--help`, `validate`, `list` and `describe` load neither
asyncssh nor boto3 nor structlog, and `--help` and `validate` not asyncio
either (tests/test_cli_conventions.py; bench/startup.py measures it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias, cast

from . import __version__
from .errors import (
    BadNextTokenError,
    DistprocError,
    InventoryError,
    JobExistsError,
    JobNotFoundError,
    SpecError,
    Violation,
)

if TYPE_CHECKING:
    from .backends.slurm.inventory import PartitionMapping, SlurmInventory
    from .inventory import Host

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_STOPPED = 3
EXIT_ERROR = 4

_STATUS_EXIT = {"Completed": EXIT_COMPLETED, "Failed": EXIT_FAILED, "Stopped": EXIT_STOPPED}
#: The hosts hear from a following coordinator every 5 s (hostsession.PING_SECONDS).
MIN_ORPHAN_TIMEOUT = 15.0
_INVALID = (SpecError, InventoryError, JobExistsError, JobNotFoundError, BadNextTokenError)


# Argument types: argparse turns their ArgumentTypeError into its usual
# "error: argument --x: ..." and exit 2, so a nonsense number (a negative grace
# period, zero hosts at once) is refused before anything starts.


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _count(text: str) -> int:
    """A whole number of at least 1 (hosts at once, jobs listed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _max_results(text: str) -> int:
    """ListProcessingJobs' MaxResults: 1 to 100."""
    value = _count(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be at most 100 (as ListProcessingJobs' MaxResults), not {value}")
    return value


def _timestamp(text: str) -> float:
    """A time as the AWS CLI takes one: epoch seconds, or ISO 8601 (without a zone: UTC). Epoch seconds out."""
    from datetime import UTC, datetime

    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither epoch seconds nor an ISO 8601 time (like 2026-01-31T12:00:00Z)"
            ) from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _not_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _orphan_timeout(text: str) -> float:
    value = _not_negative(text)
    if 0 < value < MIN_ORPHAN_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"must be 0 (never) or at least {MIN_ORPHAN_TIMEOUT:.0f} seconds, a few of the coordinator's pings, "
            f"not {text}"
        )
    return value


def _wait_seconds(text: str) -> float:
    return math.inf if text == "inf" else _positive(text)


def _bare_wait_flag(argv: list[str]) -> list[str]:
    """A bare `--wait-for-hosts` waits indefinitely: it must not take the job file after it as its SECONDS."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        out.append("--wait-for-hosts=inf" if arg == "--wait-for-hosts" else arg)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distproc",
        description="Run SageMaker-Processing-style container jobs on machines you own.",
    )
    parser.add_argument("--version", action="version", version=f"distproc {__version__}")
    parser.add_argument(
        "--home", type=Path, help="job store folder (default: $DISTPROC_HOME, else ~/.local/state/distproc)"
    )
    parser.add_argument(
        "--log-format", choices=("console", "json"), default="console", help="how distproc's own messages (stderr) look"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    # Listed in the order a user meets them: run, check, look, stop; then the rest.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    run = sub.add_parser("run", help="run a job and wait for its end")
    # The job stays a str: Path("./-") would be "-", and ./- is how to name a file called "-".
    run.add_argument("job", help="a CreateProcessingJob request (JSON); - reads standard input")
    run.add_argument(
        "-i", "--inventory", type=Path, required=True, help="Ansible YAML inventory, or a Slurm cluster (slurm:)"
    )
    run.add_argument("--job-name", metavar="NAME", help="use this ProcessingJobName instead of the file's")
    run.add_argument(
        "--stop-grace",
        type=_not_negative,
        default=10.0,
        metavar="SECONDS",
        help="time between SIGINT and SIGKILL when stopping (default 10)",
    )
    run.add_argument("--fan-out", type=_count, default=64, metavar="N", help="hosts prepared at once (default 64)")
    run.add_argument(
        "--quiet", action="store_true", help="do not print container output (it is still kept in the logs)"
    )
    run.add_argument(
        "--ship-image",
        action="store_true",
        help="load this machine's image on every host whose Docker lacks it (clusters without a registry); "
        "it is saved only if a host lacks it, and kept for later runs",
    )
    run.add_argument(
        "--no-live",
        action="store_true",
        help="on a terminal, print plain lines instead of the live per-host view",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="at the end, print the job's DescribeProcessingJob document (as `describe --json`), and nothing "
        "else, on stdout; container output goes to stderr, and there is no live view",
    )
    run.add_argument(
        "--metrics-interval",
        type=_not_negative,
        default=5.0,
        metavar="SECONDS",
        help="seconds between each host's metric samples; 0 turns sampling off (default 5)",
    )
    run.add_argument(
        "--aws-credentials",
        choices=("host", "forward"),
        default="host",
        help="S3 credentials: each host's own chain (default), or the coordinator's forwarded to the hosts",
    )
    run.add_argument(
        "--assume-role",
        action="store_true",
        help="with --aws-credentials forward: forward short-lived credentials of the job's RoleArn (STS AssumeRole)",
    )
    run.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint for listing, and for hosts whose inventory names none",
    )
    run.add_argument(
        "--reconnect-window",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="how long a running host may stay unreachable before the job fails naming it (default 60)",
    )
    run.add_argument(
        "--orphan-timeout",
        type=_orphan_timeout,
        default=900.0,
        metavar="SECONDS",
        help="each host stops the job's container once no coordinator has followed it this long, "
        "e.g. after a crash nobody attached to; 0: never (default 900)",
    )
    run.add_argument(
        "--wait-for-hosts",
        nargs="?",
        const=math.inf,
        type=_wait_seconds,
        metavar="SECONDS",
        help="when hosts are busy with other jobs, wait for them to be given back (in order of arrival "
        "among jobs waiting here for the same hosts) instead of failing; =SECONDS gives up after that long",
    )
    run.set_defaults(func=cmd_run, candidates=True)

    validate = sub.add_parser("validate", help="check a job and inventory and print the plan")
    validate.add_argument("job", help="a CreateProcessingJob request (JSON); - reads standard input")
    validate.add_argument("-i", "--inventory", type=Path, help="Ansible YAML inventory (omit to check the job alone)")
    validate.add_argument(
        "--json",
        action="store_true",
        help='JSON on stdout: {"Valid": true, ..., "Plan": [...]}, or {"Valid": false, "Problems": [...]} (exit 2)',
    )
    validate.set_defaults(func=cmd_validate, logs=False)

    describe = sub.add_parser("describe", help="show a job (DescribeProcessingJob)")
    describe.add_argument("name", help="the job's ProcessingJobName")
    describe.add_argument("--json", action="store_true", help="DescribeProcessingJob-shaped JSON")
    describe.add_argument("--timeline", action="store_true", help="each host's phases: when each began and how long")
    describe.set_defaults(func=cmd_describe, logs=False)

    logs = sub.add_parser("logs", help="print a job's container output")
    logs.add_argument("name", help="the job's ProcessingJobName")
    logs.add_argument("--host", metavar="algo-K", help="one host only")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.set_defaults(func=cmd_logs)

    listing = sub.add_parser(
        "list", help="list jobs, newest first (the filters, order and paging of aws sagemaker list-processing-jobs)"
    )
    listing.add_argument("--name-contains", metavar="TEXT", help="only jobs whose name contains TEXT (any case)")
    listing.add_argument(
        "--status-equals",
        "--status",
        dest="status",
        choices=("InProgress", "Completed", "Failed", "Stopping", "Stopped"),
        help="only jobs in this state",
    )
    for flag, what in (
        ("--creation-time-after", "created after"),
        ("--creation-time-before", "created before"),
        ("--last-modified-time-after", "last modified after"),
        ("--last-modified-time-before", "last modified before"),
    ):
        listing.add_argument(flag, type=_timestamp, metavar="TIME", help=f"only jobs {what} TIME (ISO 8601 or epoch)")
    listing.add_argument(
        "--sort-by", choices=("Name", "CreationTime", "Status"), default="CreationTime", help="(default CreationTime)"
    )
    listing.add_argument(
        "--sort-order", choices=("Ascending", "Descending"), default="Descending", help="(default Descending)"
    )
    listing.add_argument(
        "--max-results",
        "--limit",
        dest="limit",
        type=_max_results,
        default=50,
        metavar="N",
        help="at most N jobs, 1..100 (default 50); more are left to --next-token",
    )
    listing.add_argument("--next-token", metavar="TOKEN", help="the NextToken of the previous page, same filters")
    listing.add_argument("--json", action="store_true", help="ListProcessingJobs-shaped JSON")
    listing.set_defaults(func=cmd_list, logs=False)

    stop = sub.add_parser("stop", help="stop a running job (SIGINT, grace period, SIGKILL)")
    stop.add_argument("name", help="the job's ProcessingJobName")
    stop.set_defaults(func=cmd_stop)

    attach = sub.add_parser("attach", help="take over a job whose `run` died: follow it to its end and record it")
    attach.add_argument("name", help="the job's ProcessingJobName")
    attach.add_argument("--quiet", action="store_true", help="do not print container output")
    attach.set_defaults(func=cmd_attach)

    metrics = sub.add_parser("metrics", help="print each host's metric samples (CPU, memory, disk, network, GPUs)")
    metrics.add_argument("name", help="the job's ProcessingJobName")
    metrics.add_argument("--csv", action="store_true", help="CSV, one row per host and sample (default: JSON)")
    metrics.set_defaults(func=cmd_metrics)

    report = sub.add_parser("report", help="write a self-contained HTML report: timeline and metric charts")
    report.add_argument("name", help="the job's ProcessingJobName")
    report.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="where to write it (.html)")
    report.set_defaults(func=cmd_report)

    export = sub.add_parser(
        "export",
        help="print a job's CreateProcessingJob request for SageMaker "
        "(aws sagemaker create-processing-job --cli-input-json file://FILE)",
    )
    export.add_argument("name", help="the job's ProcessingJobName")
    export.add_argument("--role-arn", metavar="ARN", help="the IAM role SageMaker runs it as, when the job names none")
    export.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 when something is left to change before SageMaker takes it (a file:// URI, no RoleArn)",
    )
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="write it to FILE instead of stdout")
    export.set_defaults(func=cmd_export, logs=False)

    imported = sub.add_parser(
        "import",
        help="print the CreateProcessingJob request of a job that ran on SageMaker (DescribeProcessingJob), "
        "for `distproc run`",
    )
    imported.add_argument("name", help="the SageMaker processing job's ProcessingJobName")
    imported.add_argument("--region", metavar="REGION", help="its AWS region (default: boto3's own: AWS_REGION, ...)")
    imported.add_argument("--endpoint-url", metavar="URL", help="SageMaker API endpoint (default: AWS's)")
    imported.add_argument("-o", "--output", type=Path, metavar="FILE", help="write it to FILE instead of stdout")
    imported.set_defaults(func=cmd_import)

    hosts = sub.add_parser("hosts", help="the inventory's hosts")
    hosts_sub = hosts.add_subparsers(dest="hosts_command", required=True, metavar="COMMAND", help="what to do")
    check = hosts_sub.add_parser(
        "check", help="check every host (SSH, python, Docker, GPUs, disk, clock); exit 1 if any is unfit"
    )
    check.add_argument("-i", "--inventory", type=Path, required=True, help="Ansible YAML inventory")
    check.add_argument("--json", action="store_true", help="a JSON document of every host's checks")
    check.add_argument(
        "--min-free-gib",
        type=_not_negative,
        default=5.0,
        metavar="GIB",
        help="free space the work folder needs (default 5)",
    )
    check.add_argument(
        "--max-clock-offset",
        type=_positive,
        default=2.0,
        metavar="SECONDS",
        help="largest clock offset allowed (default 2)",
    )
    check.add_argument("--fan-out", type=_count, default=64, metavar="N", help="hosts checked at once (default 64)")
    check.set_defaults(func=cmd_hosts_check)

    return parser


def _store(args: argparse.Namespace) -> Any:
    from .store.db import Store

    return Store(args.home)


@dataclass(frozen=True, slots=True)
class FleetTarget:
    """Where a job goes on an SSH fleet: the inventory's hosts chosen for it, in algo order (spares after)."""

    hosts: tuple[Host, ...]


@dataclass(frozen=True, slots=True)
class SlurmTarget:
    """Where a job goes on a Slurm cluster: the cluster and the partition its InstanceType maps to."""

    inventory: SlurmInventory
    mapping: PartitionMapping


#: What an inventory file says of a job's hosts; None: no inventory given.
Target: TypeAlias = "FleetTarget | SlurmTarget | None"


def _load(args: argparse.Namespace) -> tuple[Any, Target]:
    from .spec import load_job, parse_job

    job = load_job(args.job)
    if getattr(args, "job_name", None):
        # Validated like the rest of the request, by the same code path.
        job = parse_job({**job.request_dict(), "ProcessingJobName": args.job_name})
    if args.inventory is None:
        return job, None
    slurm = _slurm_inventory(args.inventory)
    if slurm is not None:
        # Slurm picks the nodes when it runs the job; what can be checked now is where it would go.
        return job, SlurmTarget(slurm, slurm.mapping_for(job.cluster.instance_type))
    # Only now: the inventory package and yaml were a quarter of `validate JOB`'s start (docs/benchmarks.md).
    from .inventory import load_inventory, select_hosts

    inventory = load_inventory(args.inventory)
    hosts = select_hosts(inventory, job.cluster.instance_type, job.cluster.instance_count)
    if getattr(args, "candidates", False):
        # `run` leases hosts as it goes: the selected ones first, then any other host of the type.
        chosen = {h.name for h in hosts}
        spares = tuple(h for h in inventory.hosts if h.serves(job.cluster.instance_type) and h.name not in chosen)
        return job, FleetTarget(tuple(hosts) + spares)
    return job, FleetTarget(tuple(hosts))


def _slurm_inventory(path: Path) -> SlurmInventory | None:
    """The Slurm cluster an inventory file names (a top-level ``slurm:``), or None for a fleet's hosts."""
    from .backends.slurm.inventory import slurm_inventory_at

    return slurm_inventory_at(path)


def _backend(target: Target) -> Any:
    """Where `run` gets its hosts: a SlurmBackend for a Slurm inventory, None for the SSH fleet (the default)."""
    if not isinstance(target, SlurmTarget):
        return None
    slurm = target.inventory
    from .backends.slurm.backend import SlurmBackend

    # Slurm's reason while the job is queued reaches the log through the runner's recorder (run/recorder.py).
    return SlurmBackend(slurm, node_python=slurm.python, node_work_dir=slurm.work_dir, docker_host=slurm.docker_host)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        job, target = _load(args)
    except (SpecError, InventoryError) as exc:
        if not args.json:
            raise
        print(json.dumps(_problems_document(args, exc), indent=2))
        print(f"distproc: {exc}", file=sys.stderr)
        return EXIT_INVALID
    plan = []
    if isinstance(target, SlurmTarget):
        # A Slurm inventory: the partition the job would queue in (its nodes are Slurm's choice, later).
        cluster, mapping = job.cluster, target.mapping
        if args.json:
            slurm = {"Partition": mapping.partition, "GpusPerNode": mapping.gpus}
            slurm |= {"Account": mapping.account, "Qos": mapping.qos}
            document = {"ProcessingJobName": job.name, "Valid": True, "Warnings": list(job.warnings), "Slurm": slurm}
            print(json.dumps({**document, "Plan": []}, indent=2))
            return 0
        print(f"job {job.name} is valid: {cluster.instance_count} x {cluster.instance_type}, image {job.app.image_uri}")
        for warning in job.warnings:
            print(f"warning: {warning}")
        print(f"  Slurm: {cluster.instance_count} nodes in partition {mapping.partition}")
        return 0
    if target is not None:
        from .plan import algo_names

        hosts = target.hosts

        plan = [
            {
                "Host": algo,
                "InventoryHost": h.name,
                "Address": h.address,
                "PrivateAddress": h.private_address,
                "Connection": h.connection,
                "WorkDir": h.work_dir,
                "Gpus": h.gpus,
            }
            for algo, h in zip(algo_names(len(hosts)), hosts, strict=True)
        ]
    if args.json:
        print(
            json.dumps(
                {"ProcessingJobName": job.name, "Valid": True, "Warnings": list(job.warnings), "Plan": plan}, indent=2
            )
        )
        return 0
    cluster = job.cluster
    print(f"job {job.name} is valid: {cluster.instance_count} x {cluster.instance_type}, image {job.app.image_uri}")
    for warning in job.warnings:
        print(f"warning: {warning}")
    for row in plan:
        where = f"{row['Connection']} {row['Address']}, reached by others at {row['PrivateAddress']}"
        print(f"  {row['Host']:<8} <- {row['InventoryHost']} ({where})")
    return 0


def _problems_document(args: argparse.Namespace, exc: SpecError | InventoryError) -> dict[str, Any]:
    """`validate --json` of an invalid job or inventory: every problem, each where (Field) and what (Message).

    A job's Field is a dotted field path (ProcessingInputs[0].S3Input.S3Uri); an
    inventory's names the place (host gpu1, group rack_a, line 7), or is null
    for a problem of the whole file (too few hosts of the job's type).
    """
    if isinstance(exc, SpecError):
        source, path, problems = "job", args.job, exc.violations
    else:
        source, path, problems = "inventory", args.inventory, exc.problems
    listed: list[dict[str, str | None]] = [{"Field": v.path, "Message": v.rule} for v in problems]
    listed = listed or [{"Field": None, "Message": str(exc)}]
    return {"Valid": False, "Source": source, "File": str(path), "Error": str(exc), "Problems": listed}


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from .run.options import RunOptions
    from .run.runner import JobRunner
    from .ui.logconfig import configure

    job, target = _load(args)
    backend = _backend(target)
    if backend is not None and args.wait_for_hosts is not None:
        why = "--wait-for-hosts is for an SSH fleet; on Slurm the job waits in Slurm's queue"
        print(f"distproc: {why}", file=sys.stderr)
        return EXIT_INVALID
    if args.assume_role and args.aws_credentials != "forward":
        print("distproc: --assume-role needs --aws-credentials forward", file=sys.stderr)
        return EXIT_INVALID
    if args.assume_role and job.role_arn is None:
        raise SpecError([Violation("RoleArn", "required by --assume-role (the role whose credentials are forwarded)")])
    store = _store(args)
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    view = _live_view(args)
    # With --json, stdout carries the final document alone: container output goes to stderr.
    output = sys.stderr if args.json else sys.stdout
    options = RunOptions(
        stop_grace_seconds=args.stop_grace,
        fan_out=max(1, args.fan_out),
        console=None if args.quiet else (view or output),
        observer=view,
        ship_image=args.ship_image,
        aws_credentials=args.aws_credentials,
        metrics_interval_seconds=max(0.0, args.metrics_interval),
        assume_role=args.assume_role,
        s3_endpoint_url=args.s3_endpoint_url,
        reconnect_window_seconds=max(1.0, args.reconnect_window),
        orphan_timeout_seconds=max(0.0, args.orphan_timeout),
        wait_for_hosts_seconds=args.wait_for_hosts,
    )
    hosts = target.hosts if isinstance(target, FleetTarget) else ()
    runner = JobRunner(job, hosts, store, str(args.inventory), options, backend)

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        for sig, why in ((signal.SIGINT, "interrupted (Ctrl-C)"), (signal.SIGTERM, "terminated (SIGTERM)")):
            loop.add_signal_handler(sig, runner.request_stop, why)
        loop.add_signal_handler(signal.SIGHUP, _hung_up, runner)
        ticker = asyncio.ensure_future(_tick(view)) if view is not None else None
        try:
            return await runner.run()
        finally:
            if ticker is not None:
                ticker.cancel()

    try:
        outcome = asyncio.run(main())
    finally:
        if view is not None:
            view.close()
            configure(args.log_format, args.verbose)
    if args.json:
        print(_describe_json(store, job.name))
    return _report_outcome(job.name, outcome)


def _report_outcome(name: str, outcome: Any) -> int:
    print(f"\n{name}: {outcome.status.value}", file=sys.stderr)
    if outcome.failure_reason:
        print(f"FailureReason: {outcome.failure_reason}", file=sys.stderr)
    if outcome.stop_reason:
        print(f"StopReason: {outcome.stop_reason}", file=sys.stderr)
    if outcome.exit_message:
        print(f"ExitMessage: {outcome.exit_message}", file=sys.stderr)
    return _STATUS_EXIT.get(outcome.status.value, EXIT_ERROR)


def _hung_up(runner: Any) -> None:
    """The terminal went away: stop the job, as Ctrl-C would, rather than leave it running unwatched.

    Output has nowhere to go now, and a write to the dead terminal would fail
    and end this process before the job is stopped: send it to /dev/null.
    """
    with open(os.devnull, "w") as devnull:
        for fd in (1, 2):
            os.dup2(devnull.fileno(), fd)
    runner.request_stop("hung up (SIGHUP: the terminal was closed)")


def _live_view(args: argparse.Namespace) -> Any:
    """The live per-host view when both output streams are one terminal; else None (plain lines)."""
    if args.no_live or args.json or args.log_format != "console" or not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    from .ui.liveview import LiveView
    from .ui.logconfig import configure

    view = LiveView(sys.stdout)
    # distproc's own messages scroll above the view too, or they would tear it.
    configure(args.log_format, args.verbose, stream=cast(TextIO, view))  # write/flush is all structlog uses
    return view


async def _tick(view: Any) -> None:
    import asyncio

    while True:
        await asyncio.sleep(0.5)
        view.tick()


def cmd_attach(args: argparse.Namespace) -> int:
    import asyncio

    from .run.attach import attach
    from .run.options import RunOptions

    store = _store(args)
    options = RunOptions(console=None if args.quiet else sys.stdout)

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        for sig, why in ((signal.SIGINT, "interrupted (Ctrl-C)"), (signal.SIGTERM, "terminated (SIGTERM)")):
            # Ctrl-C on attach stops the job, as on run: the attached runner watches the store's stop flag.
            loop.add_signal_handler(sig, store.request_stop, args.name, why)
        return await attach(store, args.name, options)

    _, outcome = asyncio.run(main())
    return _report_outcome(args.name, outcome)


def cmd_describe(args: argparse.Namespace) -> int:
    from .run.attach import coordinator_alive
    from .store.timeline import job_timeline
    from .store.views import describe_text, timeline_text

    store = _store(args)
    job = store.get_job(args.name)
    if job.status in ("InProgress", "Stopping") and not coordinator_alive(job.coordinator_pid):
        print(
            f"distproc: the process that ran {job.name} (pid {job.coordinator_pid}) is gone; its hosts carry on: "
            f"`distproc attach {job.name}` takes the job over",
            file=sys.stderr,
        )
    if args.json:
        print(_describe_json(store, args.name))
    elif args.timeline:
        print(timeline_text(job, job_timeline(store.events(args.name))))
    else:
        print(describe_text(job))
    return 0


def _describe_json(store: Any, name: str) -> str:
    """The DescribeProcessingJob document of `describe --json` and `run --json`."""
    from .store.timeline import job_timeline, queue_phase
    from .store.views import describe_document

    job = store.get_job(name)
    events = store.events(name)
    document = describe_document(job, job_timeline(events), store.metrics(name), queue_phase(events))
    return json.dumps(document, indent=2)


def cmd_metrics(args: argparse.Namespace) -> int:
    from .store.metrics import to_csv, with_sagemaker_values

    store = _store(args)
    store.get_job(args.name)  # an unknown job is an error, not an empty listing
    series = {algo: samples for algo, (_, samples) in sorted(store.metrics(args.name).items())}
    if args.csv:
        sys.stdout.write(to_csv(series))
    else:
        # Each sample as the agent read it, plus SageMaker's CloudWatch names (CPUUtilization, ...).
        print(json.dumps({algo: {"Samples": with_sagemaker_values(s)} for algo, s in series.items()}, indent=2))
    return 0


def cmd_hosts_check(args: argparse.Namespace) -> int:
    import asyncio

    from .hosts.check import Limits, check_hosts, report_document, report_table
    from .inventory import load_inventory

    inventory = load_inventory(args.inventory)
    limits = Limits(int(args.min_free_gib * (1 << 30)), args.max_clock_offset)
    reports = asyncio.run(check_hosts(inventory.hosts, limits, max(1, args.fan_out)))
    if args.json:
        print(json.dumps({"Hosts": [report_document(r) for r in reports]}, indent=2))
    else:
        print(report_table(reports))
    unfit = [r.host.name for r in reports if not r.fit]
    if unfit:
        print(f"distproc: {len(unfit)} of {len(reports)} host(s) unfit: {', '.join(unfit)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .store.timeline import job_timeline
    from .store.views import report_document
    from .ui.report import render_report

    store = _store(args)
    job = store.get_job(args.name)
    doc = report_document(job, job_timeline(store.events(args.name)), store.metrics(args.name))
    try:
        args.output.write_text(render_report(doc), encoding="utf-8")
    except OSError as exc:
        print(f"distproc: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.output}")
    return 0


def _print_or_write(document: dict[str, Any], output: Path | None) -> int:
    """A request as JSON on stdout, or in the file -o names."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"distproc: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {output}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .sdk.roundtrip import export_request

    exported = export_request(dict(_store(args).get_job(args.name).request), args.role_arn)
    for note in exported.notes:
        print(f"note: {note}", file=sys.stderr)
    for need in exported.needs:
        print(f"needs changing for SageMaker: {need}", file=sys.stderr)
    code = _print_or_write(exported.request, args.output)
    if code == 0 and args.strict and exported.needs:
        print(f"distproc: {len(exported.needs)} thing(s) to change for SageMaker (--strict)", file=sys.stderr)
        return EXIT_INVALID
    return code


def cmd_import(args: argparse.Namespace) -> int:
    from .errors import SageMakerError
    from .sdk.roundtrip import request_from_description
    from .sdk.sagemaker_api import describe_processing_job

    try:
        described = describe_processing_job(args.name, args.region, args.endpoint_url)
    except SageMakerError as exc:
        print(f"distproc: {exc}", file=sys.stderr)
        return EXIT_INVALID if exc.client_error else EXIT_ERROR
    return _print_or_write(request_from_description(described), args.output)


def cmd_list(args: argparse.Namespace) -> int:
    from .store.db import ListQuery
    from .store.views import list_document, list_text

    query = ListQuery(
        name_contains=args.name_contains,
        status=args.status,
        created_after=args.creation_time_after,
        created_before=args.creation_time_before,
        modified_after=args.last_modified_time_after,
        modified_before=args.last_modified_time_before,
        sort_by=args.sort_by,
        sort_order=args.sort_order,
    )
    page = _store(args).list_page(query, args.limit, args.next_token)
    if args.json:
        print(json.dumps(list_document(page.jobs, page.next_token), indent=2))
    else:
        print(list_text(page.jobs))
        if page.next_token:
            print(f"more: --next-token {page.next_token}", file=sys.stderr)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    import asyncio

    from .run.control import stop_job

    report = asyncio.run(stop_job(_store(args), args.name))
    failed = False
    for algo, answer in report.items():
        print(f"{algo}: {answer}")
        failed = failed or answer.startswith("error")
    print(f"stop requested for {args.name}")
    return EXIT_ERROR if failed else 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .run.control import print_logs

    try:
        print_logs(_store(args), args.name, args.host, args.follow, sys.stdout)
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_bare_wait_flag(sys.argv[1:] if argv is None else argv))
    if getattr(args, "logs", True):
        # Commands that log nothing (validate, list, describe: logs=False) skip structlog,
        # a tenth of their start-up; the import test keeps them free of it.
        from .ui.logconfig import configure

        configure(args.log_format, args.verbose)
    try:
        return int(args.func(args))
    except _INVALID as exc:
        print(f"distproc: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except DistprocError as exc:
        print(f"distproc: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
