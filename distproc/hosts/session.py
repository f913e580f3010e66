"""One host, as the coordinator drives it: the agent's verbs over a transport.

Every call is an argv list (quoted by the transport, never spliced into a
shell string); structured data goes over stdin; answers come back as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AgentError, ConnectionError_, DistprocError, StagingError
from ..plan import SourceFile
from ..staging.local_files import extract_output, tar_stream
from .agentbundle import INSTALL_SCRIPT, PROBE_SCRIPT, AgentBundle
from .depsbundle import INSTALL_DEPS_SCRIPT, DepsBundle
from .transport import Transport
from .transport.base import Channel, CommandResult, parse_json_reply

MIN_PYTHON = (3, 9)
T = TypeVar("T")
# How often a follower tells its host that a coordinator is still there.
PING_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class FollowPosition:
    events: int = 0
    log: int = 0


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

    async def _ask(self, channel: Channel, request: dict[str, Any]) -> dict[str, Any]:
        """One request on the claimed channel and its one-line answer; an error answer
        raises AgentError (the agent may have ended the conversation: the channel is dropped)."""
        async with self._claimed_busy:
            try:
                await channel.write(json.dumps(request).encode() + b"\n")
                line = await channel.readline()
                if line:
                    self.heard()
                try:
                    doc = json.loads(line) if line.strip() else None
                except ValueError:
                    doc = None
                if isinstance(doc, dict) and "error" not in doc:
                    return doc
                result = await _finish(channel)
            except BaseException:
                self._drop_claimed()
                raise
            self._claimed = None
        if isinstance(doc, dict):
            raise AgentError(f"{self.name}: {doc['error']}")
        raise AgentError(
            f"{self.name}: no answer to {request.get('verb')} (exit status {result.exit_status}): "
            f"{result.stderr_text().strip()[-800:] or line[-400:]!r}"
        )

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
            probe = json.loads(result.stdout.decode().strip().splitlines()[-1])
            version = tuple(probe["python"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise AgentError(f"{self.name}: unexpected answer from {self.python}: {result.stdout[-200:]!r}") from exc
        if version < MIN_PYTHON:
            raise AgentError(
                f"{self.name}: {self.python} is Python {'.'.join(map(str, version))}; "
                "the distproc agent needs 3.9 or newer (set ansible_python_interpreter)"
            )
        if probe.get("present"):
            return False
        await self.transport.run([self.python, "-c", INSTALL_SCRIPT, self.agent_path], input=self.bundle.data)
        return True

    async def prepare(self, task: dict[str, Any], launch: bool = False) -> int | None:
        """Write the task on the host; with `launch`, start it too and return the agent's pid.

        After a `claim`, the agent that took the lease is still waiting on its
        channel and prepares the task itself; otherwise this is the `prepare` verb.
        """
        channel = self._conversation()
        if channel is None:
            argv = self._agent("prepare", self.job_dir, *(["--launch"] if launch else []))
            doc = await self.transport.run_json(argv, input=json.dumps(task).encode())
        else:
            request = {"verb": "prepare", "jobdir": self.job_dir, "launch": launch, "task": task}
            doc = await self._ask(channel, request)
        return int(doc["pid"]) if launch else None

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
        if "error" in doc or not result.ok:
            raise StagingError(f"{self.name}: staging into {container_path} failed: {doc.get('error')}")
        return int(doc["files"]), int(doc["bytes"])

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

    async def stage_s3(
        self, inputs: list[dict[str, Any]], on_progress: Callable[[dict[str, Any]], None]
    ) -> tuple[int, int]:
        """Have the host download its S3 objects; progress lines arrive as it goes."""
        channel = await self.transport.open(self._agent("stage-s3", self.job_dir))
        final: dict[str, Any] = {}
        try:
            await channel.write(json.dumps({"inputs": inputs}).encode())
            await channel.close_stdin()
            async for doc in _json_lines(channel.readline):
                if "progress" in doc:
                    on_progress(doc["progress"])
                else:
                    final = doc
            result = await channel.wait()
        except BaseException:
            channel.abort()
            raise
        if "error" in final or not result.ok:
            message = final.get("error") or result.stderr_text().strip()[-600:] or "no answer from the agent"
            raise StagingError(f"{self.name}: {message}", client_error=bool(final.get("client_error")))
        return int(final["files"]), int(final["bytes"])

    async def upload_s3(self) -> dict[str, Any]:
        result = await self.transport.run(self._agent("upload-s3", self.job_dir), check=False)
        doc = parse_json_reply(self.name, result)
        if "error" in doc or not result.ok:
            raise StagingError(f"{self.name}: {doc.get('error')}", client_error=bool(doc.get("client_error")))
        return doc

    async def claim(self, job: str, holder: str) -> tuple[dict[str, Any], bool]:
        """Lease the host for a job: ({"leased": True} or {"busy": lease, ...}, whether the agent was sent).

        The cached agent is tried first, so a host that has it costs one round trip;
        only when that fails is the agent probed for, installed, and asked again.
        A leased host's agent stays on its channel, waiting for `prepare` (or
        `release`): the lease and the task take one agent start between them.
        """
        argv = self._agent("claim", self.work_dir, "--job", job, "--holder", holder)
        answer, result = await self._claim(argv)
        if answer is not None:
            return answer, False
        sent = await self.install_agent()
        answer, result = await self._claim(argv)
        if answer is None:
            assert result is not None
            raise AgentError(f"{self.name}: {result.stderr_text().strip()[-800:] or 'no answer to claim'}")
        return answer, sent

    async def _claim(self, argv: list[str]) -> tuple[dict[str, Any] | None, CommandResult | None]:
        """The agent's lease answer (its channel kept if leased), or how the command ended without one."""
        channel = await self.transport.open(argv)
        try:
            line = await channel.readline()
            try:
                answer = json.loads(line) if line.strip() else None
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or "error" in answer:
                return None, await _finish(channel)
        except BaseException:
            channel.abort()
            raise
        if answer.get("leased"):
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
        await self.transport.run_json(self._agent("release", self.work_dir, "--job", job))

    async def image_id(self) -> str | None:
        """The job image's ID on the host's daemon; None if the host lacks it."""
        doc = await self.transport.run_json(self._agent("image-id", self.job_dir))
        found = doc.get("id")
        return found if isinstance(found, str) and found else None

    async def load_image(self, saved: Path) -> str | None:
        """Stream a `docker save` tar into the host's `docker load`; returns the image ID it then has."""

        async def chunks() -> AsyncIterator[bytes]:
            with saved.open("rb") as tar:
                while chunk := await asyncio.to_thread(tar.read, 1 << 20):
                    yield chunk

        result, doc = await self._stream_in(self._agent("load-image", self.job_dir), chunks())
        if "error" in doc or not result.ok:
            raise AgentError(f"{self.name}: loading the shipped image failed: {doc.get('error')}")
        found = doc.get("id")
        return found if isinstance(found, str) and found else None

    async def launch(self) -> int:
        channel = self._conversation()
        if channel is not None:
            doc = await self._ask(channel, {"verb": "launch"})
        else:
            doc = await self.transport.run_json(self._agent("launch", self.job_dir))
        return int(doc["pid"])

    async def follow(
        self, position: FollowPosition, on_line: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> FollowPosition:
        """Stream the run's events and output until it ends; returns where it got to.

        Raises ConnectionError_ if the connection drops, with the position in
        `exc.position` so the caller can reconnect and resume.
        """
        channel = self._conversation()
        if channel is not None:
            async with self._claimed_busy:
                request = {"verb": "follow", "events_offset": position.events, "log_offset": position.log}
                return await self._follow_on(channel, request, position, on_line, claimed=True)
        argv = self._agent(
            "follow", self.job_dir, "--events-offset", str(position.events), "--log-offset", str(position.log)
        )
        return await self._follow_on(await self.transport.open(argv), None, position, on_line, claimed=False)

    async def _follow_on(
        self,
        channel: Channel,
        request: dict[str, Any] | None,
        position: FollowPosition,
        on_line: Callable[[dict[str, Any]], Awaitable[None]],
        claimed: bool,
    ) -> FollowPosition:
        events, log = position.events, position.log
        pinger: asyncio.Future[None] | None = None
        ended = False
        try:
            if request is not None:
                await channel.write(json.dumps(request).encode() + b"\n")
            pinger = asyncio.ensure_future(_ping(channel))
            async for doc in _json_lines(channel.readline):
                self.heard()
                stream = doc.get("stream")
                if stream == "event":
                    events = int(doc["offset"])
                elif stream == "log":
                    log = int(doc["offset"])
                await on_line(doc)
                if stream in ("result", "lost"):
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

    async def stop(self, reason: str) -> dict[str, Any]:
        return await self.transport.run_json(self._agent("stop", self.job_dir, "--reason", reason))

    async def status(self) -> dict[str, Any]:
        return await self.transport.run_json(self._agent("status", self.job_dir))

    async def cleanup(self) -> dict[str, Any]:
        channel = self._conversation()
        if channel is None:
            return await self.transport.run_json(self._agent("cleanup", self.job_dir))
        doc = await self._ask(channel, {"verb": "cleanup"})
        self._claimed = None
        with contextlib.suppress(DistprocError):
            await _finish(channel)  # cleanup ended the conversation: the agent exits
        return doc


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
