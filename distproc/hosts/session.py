"""One host, as the coordinator drives it: the agent's verbs over a transport.

Every call is an argv list (quoted by the transport, never spliced into a
shell string); structured data goes over stdin; answers come back as JSON,
each read into its type (agent/answers.py) before anything here looks at it.
Each step of a job is one method, which asks the claiming agent on its channel
when there is one free and runs the step's own agent verb otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from ..agent.answers import (
    ClaimAnswer,
    CleanupAnswer,
    Counted,
    ErrorAnswer,
    EventLine,
    FollowLine,
    ImageAnswer,
    LaunchAnswer,
    LogLine,
    LostLine,
    PrepareAnswer,
    ProbeAnswer,
    ReleaseAnswer,
    ResultLine,
    StageProgress,
    StatusAnswer,
    StopAnswer,
    UploadAnswer,
    parse_follow_line,
)
from ..agent.protocol import (
    CleanupRequest,
    FollowRequest,
    HostTask,
    LaunchRequest,
    PrepareRequest,
    Request,
)
from ..errors import AgentError, ConnectionError_, DistprocError, StagingError
from ..plan import SourceFile
from ..staging.local_files import extract_output, tar_stream
from .agentbundle import INSTALL_SCRIPT, PROBE_SCRIPT, AgentBundle
from .depsbundle import INSTALL_DEPS_SCRIPT, DepsBundle
from .transport import Transport
from .transport.base import Channel, CommandResult, parse_json_reply, read_answer

log = structlog.get_logger("distproc")

MIN_PYTHON = (3, 9)
# How long a host's warm agent waits for the next job before it exits; 0 turns it off.
WARM_IDLE_ENV = "DISTPROC_AGENT_IDLE_SECONDS"
WARM_IDLE_DEFAULT = 600.0
# Unix socket paths are at most 107 bytes (sun_path); agent/warm.py says the same.
MAX_SOCKET_PATH = 107
T = TypeVar("T")
A = TypeVar("A")  # an answer of the agent (agent/answers.py)
# How often a follower tells its host that a coordinator is still there.
PING_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class FollowPosition:
    events: int = 0
    log: int = 0


def warm_idle_seconds() -> float:
    """The warm agent's idle time, from $DISTPROC_AGENT_IDLE_SECONDS (default 600 s; 0: no warm agent)."""
    text = os.environ.get(WARM_IDLE_ENV, "").strip()
    if not text:
        return WARM_IDLE_DEFAULT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 7 * 24 * 3600 or value != value:
        raise AgentError(f"{WARM_IDLE_ENV}={text[:40]!r}: must be a number of seconds from 0 to 604800")
    return value


def warm_socket_path(work_dir: str, digest: str) -> str | None:
    """The warm agent's socket on the host (agent/warm.py socket_path); None if too long for a socket."""
    path = f"{work_dir.rstrip('/')}/agent/warm/{digest}.sock"
    return path if len(path.encode()) <= MAX_SOCKET_PATH else None


class _QueueReader(io.RawIOBase):
    """A blocking file over chunks that the event loop feeds in (for tarfile in a thread)."""

    def __init__(self, chunks: queue.Queue[bytes | None]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer and not self._eof:
            chunk = self._chunks.get()
            if chunk is None:
                self._eof = True
            else:
                self._buffer = chunk
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class HostSession:
    """The agent on one host, for one job."""

    def __init__(self, transport: Transport, python: str, work_dir: str, job_dir: str, bundle: AgentBundle) -> None:
        self.transport = transport
        self.python = python
        self.work_dir = work_dir
        self.job_dir = job_dir
        self.bundle = bundle
        self.agent_path = bundle.remote_path(work_dir)
        # The agent of a successful `claim`, which serves this job's requests on its
        # channel (agent/cli.py serve) until cleanup; None once that channel is
        # gone, after which each step is an agent verb of its own.
        self._claimed: Channel | None = None
        # Held while a request is in flight on the claimed channel.
        self._claimed_busy = asyncio.Lock()
        #: When the host's agent was last heard from (time.time()): an answer, or any
        #: line of a follow (which says "alive" every few seconds when it has nothing
        #: else to say). The reconnect window counts from here.
        self.last_heard = time.time()

    def for_job(self, job_dir: str) -> HostSession:
        """This host's session for one job's folder; a waiting claim goes with it."""
        session = HostSession(self.transport, self.python, self.work_dir, job_dir, self.bundle)
        session._claimed, self._claimed = self._claimed, None
        session.last_heard = self.last_heard
        return session

    def heard(self) -> None:
        self.last_heard = time.time()

    def _conversation(self) -> Channel | None:
        """The claimed channel if it is free for a request now, else None (use a verb)."""
        if self._claimed is None or self._claimed_busy.locked():
            return None
        return self._claimed

    def _drop_claimed(self) -> None:
        channel, self._claimed = self._claimed, None
        if channel is not None:
            channel.abort()

    async def _ask(self, channel: Channel, request: Request) -> dict[str, Any]:
        """One request on the claimed channel and its one-line answer; an error answer
        raises AgentError (the agent may have ended the conversation: the channel is dropped)."""
        async with self._claimed_busy:
            try:
                await channel.write(json.dumps(request.to_doc()).encode() + b"\n")
                line = await channel.readline()
                if line:
                    self.heard()
                try:
                    doc = json.loads(line) if line.strip() else None
                except ValueError:
                    doc = None
                error = ErrorAnswer.in_answer(doc) if isinstance(doc, dict) else None
                if isinstance(doc, dict) and error is None:
                    return doc
                result = await _finish(channel)
            except BaseException:
                self._drop_claimed()
                raise
            self._claimed = None
        if error is not None:
            raise AgentError(f"{self.name}: {error.error}")
        raise AgentError(
            f"{self.name}: no answer to {request.to_doc()['verb']} (exit status {result.exit_status}): "
            f"{result.stderr_text().strip()[-800:] or line[-400:]!r}"
        )

    def _read(self, parse: Callable[[Any, str], A], doc: Any, what: str) -> A:
        """An answer as its protocol type; one that does not fit is the agent's error, naming the field."""
        return read_answer(self.name, parse, doc, what)

    async def _verb(self, argv: list[str], parse: Callable[[Any, str], A], input: bytes | None = None) -> A:
        """An agent verb of its own (one command) and its one JSON answer; an error answer raises AgentError."""
        return await self.transport.run_json(argv, parse, input=input)

    async def _step(self, request: Request, argv: list[str], parse: Callable[[Any, str], A], input: bytes = b"") -> A:
        """One step of the job: asked on the claimed channel when there is one free, else as its own verb."""
        channel = self._conversation()
        if channel is None:
            return await self._verb(argv, parse, input or None)
        return self._read(parse, await self._ask(channel, request), request.to_doc()["verb"])

    @property
    def name(self) -> str:
        return self.transport.name

    def _agent(self, *args: str) -> list[str]:
        return [self.python, self.agent_path, *args]

    async def install_agent(self) -> bool:
        """Make sure this version of the agent is on the host; True if it was sent."""
        result = await self.transport.run([self.python, "-c", PROBE_SCRIPT, self.agent_path], check=False)
        if not result.ok:
            raise AgentError(
                f"{self.name}: cannot run {self.python} on the host (exit {result.exit_status}): "
                f"{result.stderr_text().strip()[-400:]}; set ansible_python_interpreter in the inventory"
            )
        try:
            probe = ProbeAnswer.from_doc(json.loads(result.stdout.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError) as exc:  # ProtocolError is a ValueError
            raise AgentError(f"{self.name}: unexpected answer from {self.python}: {result.stdout[-200:]!r}") from exc
        version = probe.python
        if version < MIN_PYTHON:
            raise AgentError(
                f"{self.name}: {self.python} is Python {'.'.join(map(str, version))}; "
                "the distproc agent needs 3.9 or newer (set ansible_python_interpreter)"
            )
        if probe.present:
            return False
        await self.transport.run([self.python, "-c", INSTALL_SCRIPT, self.agent_path], input=self.bundle.data)
        return True

    async def prepare(self, task: HostTask, launch: bool = False) -> int | None:
        """Write the task on the host; with `launch`, start it too and return the agent's pid.

        After a `claim`, the agent that took the lease is still waiting on its
        channel and prepares the task itself; otherwise this is the `prepare` verb.
        """
        argv = self._agent("prepare", self.job_dir, *(["--launch"] if launch else []))
        request = PrepareRequest(self.job_dir, launch, task)
        answer = await self._step(request, argv, PrepareAnswer.from_doc, json.dumps(task.to_doc()).encode())
        if launch and answer.pid is None:
            raise AgentError(f"{self.name}: the agent prepared the task but gave no pid for its launch")
        return answer.pid if launch else None

    async def _stream_in(self, argv: list[str], chunks: AsyncIterator[bytes]) -> tuple[CommandResult, dict[str, Any]]:
        """Run an agent verb with chunks on its stdin; its result and its JSON answer."""
        channel = await self.transport.open(argv)
        try:
            async for chunk in chunks:
                await channel.write(chunk)
            await channel.close_stdin()
            result = await channel.wait()
        except BaseException:
            channel.abort()
            raise
        return result, parse_json_reply(self.name, result)

    async def push_files(self, container_path: str, files: tuple[SourceFile, ...]) -> tuple[int, int]:
        """Send files (a tar stream) into a path under /opt/ml on the host."""
        result, doc = await self._stream_in(self._agent("untar", self.job_dir, container_path), tar_stream(files))
        error = ErrorAnswer.in_answer(doc)
        if error is not None or not result.ok:
            why = (error.error if error else "") or result.stderr_text().strip()[-400:]
            raise StagingError(f"{self.name}: staging into {container_path} failed: {why}")
        counted = self._read(Counted.from_doc, doc, "untar")
        return counted.files, counted.bytes

    async def pull_files(self, container_path: str, dest: Path) -> tuple[int, int]:
        """Fetch every regular file under a path under /opt/ml into dest."""
        channel = await self.transport.open(self._agent("pack", self.job_dir, container_path))
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        # The extractor gets a thread of its own: on the shared executor, as many
        # pulls at once as it has threads would hold them all waiting for chunks
        # that only that executor could deliver (a deadlock from about 6 hosts).
        extracting = _in_own_thread(extract_output, _QueueReader(chunks), dest)
        try:
            await channel.close_stdin()
            while data := await channel.read(1 << 20):
                await _put(chunks, data)
            await _put(chunks, None)
            counts = await extracting
            result = await channel.wait()
        except BaseException:
            channel.abort()
            if not extracting.done():
                await _put(chunks, None)
            raise
        if not result.ok:
            raise StagingError(f"{self.name}: reading output {container_path} failed: {result.stderr_text()[-400:]}")
        return counts

    async def install_deps(self, bundle: DepsBundle) -> str:
        """Make sure the S3 libraries are unpacked on the host; returns their folder."""
        target = bundle.remote_dir(self.work_dir)
        await self.transport.run([self.python, "-c", INSTALL_DEPS_SCRIPT, target], input=bundle.data)
        return target

    async def stage_s3(self, inputs: list[dict[str, Any]], on_progress: Callable[[StageProgress], None]) -> Counted:
        """Have the host download its S3 objects; progress lines arrive as it goes."""
        channel = await self.transport.open(self._agent("stage-s3", self.job_dir))
        final: dict[str, Any] = {}
        try:
            await channel.write(json.dumps({"inputs": inputs}).encode())
            await channel.close_stdin()
            async for doc in _json_lines(channel.readline):
                if "progress" in doc:
                    on_progress(self._read(StageProgress.from_doc, doc["progress"], "stage-s3.progress"))
                else:
                    final = doc
            result = await channel.wait()
        except BaseException:
            channel.abort()
            raise
        error = ErrorAnswer.in_answer(final)
        if error is not None or not result.ok:
            message = (
                (error.error if error else "") or result.stderr_text().strip()[-600:] or "no answer from the agent"
            )
            raise StagingError(f"{self.name}: {message}", client_error=error is not None and error.client_error)
        return self._read(Counted.from_doc, final, "stage-s3")

    async def upload_s3(self) -> UploadAnswer:
        result = await self.transport.run(self._agent("upload-s3", self.job_dir), check=False)
        doc = parse_json_reply(self.name, result)
        error = ErrorAnswer.in_answer(doc)
        if error is not None or not result.ok:
            why = error.error if error is not None else result.stderr_text().strip()[-600:]
            raise StagingError(f"{self.name}: {why}", client_error=error is not None and error.client_error)
        return self._read(UploadAnswer.from_doc, doc, "upload-s3")

    async def claim(self, job: str, holder: str) -> tuple[ClaimAnswer, bool]:
        """Lease the host for a job: (leased, or busy with whose lease, whether the agent was sent).

        The cached agent is tried first, so a host that has it costs one round trip;
        only when that fails is the agent probed for, installed, and asked again.
        A leased host's agent stays on its channel, waiting for `prepare` (or
        `release`): the lease and the task take one agent start between them.
        """
        argv = self._agent("claim", self.work_dir, "--job", job, "--holder", holder)
        answer = await self._claim_warm(argv[2:])
        if answer is not None:
            return answer, False
        idle = warm_idle_seconds()
        if idle > 0 and self.transport.forwards_sockets:
            argv += ["--warm-idle", f"{idle:g}"]  # this cold claim starts the warm agent for the next jobs
        answer, result = await self._claim(argv)
        if answer is not None:
            return answer, False
        sent = await self.install_agent()
        answer, result = await self._claim(argv)
        if answer is None:
            assert result is not None
            raise AgentError(f"{self.name}: {result.stderr_text().strip()[-800:] or 'no answer to claim'}")
        return answer, sent

    async def _claim_warm(self, args: list[str]) -> ClaimAnswer | None:
        """`claim` asked of the host's warm agent (agent/warm.py), which starts no process on the host.

        None where there is none to ask (none started yet, or it idled out; an
        agent of another version; an sshd that forwards to no socket): the
        caller takes the cold path, which starts one for the next job.
        """
        path = warm_socket_path(self.work_dir, self.bundle.digest)
        if path is None or warm_idle_seconds() <= 0:
            return None
        channel = await self.transport.open_socket(path, [*self._agent(), *args])
        if channel is None:
            return None
        request = json.dumps({"agent": self.bundle.digest, "argv": args}).encode() + b"\n"
        try:
            await channel.write(request)
            answer, result = await self._claim_on(channel)
        except ConnectionError_ as exc:
            log.debug("warm agent call failed", host=self.name, error=str(exc))
            return None
        if answer is None:
            assert result is not None
            why = result.stderr_text().strip()[-400:] or "no answer"
            log.debug("warm agent gave no lease answer", host=self.name, reason=why)
        return answer

    async def _claim(self, argv: list[str]) -> tuple[ClaimAnswer | None, CommandResult | None]:
        """The agent's lease answer (its channel kept if leased), or how the command ended without one."""
        return await self._claim_on(await self.transport.open(argv))

    async def _claim_on(self, channel: Channel) -> tuple[ClaimAnswer | None, CommandResult | None]:
        try:
            line = await channel.readline()
            try:
                doc = json.loads(line) if line.strip() else None
            except ValueError:
                doc = None
            if not isinstance(doc, dict) or ErrorAnswer.in_answer(doc) is not None:
                return None, await _finish(channel)
            answer = self._read(ClaimAnswer.from_doc, doc, "claim")
        except BaseException:
            channel.abort()
            raise
        if answer.leased:
            self._claimed = channel
        else:
            await _finish(channel)
        return answer, None

    async def release(self, job: str) -> None:
        channel, self._claimed = self._claimed, None
        if channel is not None:
            # The claiming agent still waits: input closed before a launch releases the lease.
            result = await _finish(channel)
            if result.ok:
                return
        await self._verb(self._agent("release", self.work_dir, "--job", job), ReleaseAnswer.from_doc)

    async def image_id(self) -> str | None:
        """The job image's ID on the host's daemon; None if the host lacks it."""
        return (await self._verb(self._agent("image-id", self.job_dir), ImageAnswer.from_doc)).id

    async def load_image(self, saved: Path) -> str | None:
        """Stream a `docker save` tar into the host's `docker load`; returns the image ID it then has."""

        async def chunks() -> AsyncIterator[bytes]:
            with saved.open("rb") as tar:
                while chunk := await asyncio.to_thread(tar.read, 1 << 20):
                    yield chunk

        result, doc = await self._stream_in(self._agent("load-image", self.job_dir), chunks())
        error = ErrorAnswer.in_answer(doc)
        if error is not None or not result.ok:
            why = (error.error if error else "") or result.stderr_text().strip()[-400:]
            raise AgentError(f"{self.name}: loading the shipped image failed: {why}")
        return self._read(ImageAnswer.from_doc, doc, "load-image").id

    async def launch(self) -> int:
        return (await self._step(LaunchRequest(), self._agent("launch", self.job_dir), LaunchAnswer.from_doc)).pid

    async def follow(
        self, position: FollowPosition, on_line: Callable[[FollowLine], Awaitable[None]]
    ) -> FollowPosition:
        """Stream the run's events and output until it ends; returns where it got to.

        Raises ConnectionError_ if the connection drops, with the position in
        `exc.position` so the caller can reconnect and resume.
        """
        channel = self._conversation()
        if channel is not None:
            async with self._claimed_busy:
                request = FollowRequest(position.events, position.log)
                return await self._follow_on(channel, request, position, on_line, claimed=True)
        argv = self._agent(
            "follow", self.job_dir, "--events-offset", str(position.events), "--log-offset", str(position.log)
        )
        return await self._follow_on(await self.transport.open(argv), None, position, on_line, claimed=False)

    async def _follow_on(
        self,
        channel: Channel,
        request: FollowRequest | None,
        position: FollowPosition,
        on_line: Callable[[FollowLine], Awaitable[None]],
        claimed: bool,
    ) -> FollowPosition:
        events, log = position.events, position.log
        pinger: asyncio.Future[None] | None = None
        ended = False
        try:
            if request is not None:
                await channel.write(json.dumps(request.to_doc()).encode() + b"\n")
            pinger = asyncio.ensure_future(_ping(channel))
            async for doc in _json_lines(channel.readline):
                self.heard()
                line = self._read(parse_follow_line, doc, "follow")
                if line is None:
                    continue  # a stream this coordinator does not know
                if isinstance(line, EventLine):
                    events = line.offset
                elif isinstance(line, LogLine):
                    log = line.offset
                await on_line(line)
                if isinstance(line, (ResultLine, LostLine)):
                    ended = True
                    break
            if pinger is not None:
                pinger.cancel()
            if not claimed:
                await channel.wait()
        except ConnectionError_ as exc:
            exc.position = FollowPosition(events, log)  # type: ignore[attr-defined]
            raise
        finally:
            if pinger is not None:
                pinger.cancel()
            if not claimed:
                channel.abort()
            elif not ended:
                # Cut short (a lost link, a cancelled follower) or the agent ended: the
                # conversation is over; later steps use verbs of their own.
                self._drop_claimed()
        return FollowPosition(events, log)

    async def stop(self, reason: str) -> StopAnswer:
        return await self._verb(self._agent("stop", self.job_dir, "--reason", reason), StopAnswer.from_doc)

    async def status(self) -> StatusAnswer:
        return await self._verb(self._agent("status", self.job_dir), StatusAnswer.from_doc)

    async def cleanup(self) -> CleanupAnswer:
        channel = self._conversation()
        answer = await self._step(CleanupRequest(), self._agent("cleanup", self.job_dir), CleanupAnswer.from_doc)
        if channel is not None:
            self._claimed = None
            with contextlib.suppress(DistprocError):
                await _finish(channel)  # cleanup ended the conversation: the agent exits
        return answer


def _in_own_thread(func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run func on a new thread; its result (or exception) arrives as a future of this loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = func(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="distproc-extract", daemon=True).start()
    return future


async def _put(chunks: queue.Queue[bytes | None], item: bytes | None) -> None:
    """Hand a chunk to the extractor, waiting (off the loop) only while its queue is full."""
    try:
        chunks.put_nowait(item)
    except queue.Full:
        await asyncio.to_thread(chunks.put, item)


async def _ping(channel: Channel) -> None:
    """Tell the host, every few seconds, that a coordinator still follows this job.

    The agent notes each ping; a job that goes without one for the orphan
    timeout is stopped by its host (agent/runner.py).
    """
    with contextlib.suppress(DistprocError, OSError):
        while True:
            await channel.write(b"\n")
            await asyncio.sleep(PING_SECONDS)


async def _finish(channel: Channel, data: bytes = b"") -> CommandResult:
    """Send data (if any) and end of input, and wait for the command's end."""
    try:
        if data:
            await channel.write(data)
        await channel.close_stdin()
        return await channel.wait()
    except BaseException:
        channel.abort()
        raise


async def _json_lines(readline: Callable[[], Awaitable[bytes]]) -> AsyncIterator[dict[str, Any]]:
    while True:
        line = await readline()
        if not line:
            return
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            yield doc
