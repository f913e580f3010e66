"""How the runner drives a host's Docker: the daemon's API on its Unix socket, or the docker CLI.

Every docker CLI call is a Go program start (about 30 ms of CPU), and a job
needed at least four (`run`, `logs --follow`, `wait`, `rm`). When the socket
the plain `docker` command would use is certain (no sudo, podman, tcp://,
context or wrapper in between) and its daemon answers /_ping, the runner
speaks the Engine API over that socket from its own process instead
(`ApiEngine`); otherwise it keeps the CLI (`CliEngine`). Both give the runner
the same operations and the same texts for the same failures. Pulls and
registry logins always go through the CLI (`Engine.cli`): the CLI owns the
credential store.

Standard library only, and no http.client: importing it costs about as much
CPU as the CLI start it saves. Requests are HTTP/1.0, so the daemon answers
without chunked framing and closes the connection at the end of the body.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import shutil
import socket
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Union

if TYPE_CHECKING:
    import subprocess

from .container import LABEL_ALGO, LABEL_JOB, ContainerState, Docker, nvidia_visible, run_argv, slurm_gpus
from .files import write_atomic
from .task import DockerAccess, HostTask, env_lines

# Seconds a short API call (create, start, kill, remove, inspect) may take; the CLI's were 120-300.
CALL_TIMEOUT = 120.0
START_TIMEOUT = 300.0


def docker_error_text(stderr: str) -> str:
    """Docker's own words, without its advice to read `docker run --help`."""
    lines = [line for line in stderr.strip().splitlines() if line.strip() and "docker run --help" not in line]
    return " ".join(lines)[-600:]


def docker_socket(access: DockerAccess) -> Optional[str]:
    """The Unix socket the docker CLI would use here, if that is certain; else None."""
    if tuple(access.command) != ("docker",) or shutil.which("docker") is None:
        return None
    host = access.host or os.environ.get("DOCKER_HOST")
    if host:
        return host[len("unix://") :] if host.startswith("unix://") else None
    if os.environ.get("DOCKER_CONTEXT"):
        return None
    config = os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")
    try:
        with open(config, "rb") as fh:
            context = json.loads(fh.read().decode("utf-8")).get("currentContext")
    except FileNotFoundError:
        context = None
    except (OSError, ValueError, AttributeError):
        return None
    return "/var/run/docker.sock" if context in (None, "", "default") else None


def ping(path: str, timeout: float = 10.0) -> bool:
    """GET /_ping on a Docker daemon's Unix socket: True if it answers 200 OK."""
    data = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            while len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[0].startswith(b"HTTP/1.") and status[1] == b"200" and body.strip() == b"OK"


def for_access(access: DockerAccess) -> "Engine":
    """The API when its socket is certain and its daemon answers; the CLI otherwise."""
    path = docker_socket(access)
    if path is not None and ping(path):
        return ApiEngine(access, path)
    return CliEngine(access)


class WaitOutcome(NamedTuple):
    ok: bool  # False: the wait itself failed (the daemon went away)
    exit_code: Optional[int]
    error: str


class Waiter(abc.ABC):
    """The container's exit, waited for in the background."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> Optional[WaitOutcome]:
        """The outcome once the wait ended; None if it did not within `timeout` seconds."""


class LogFollower(abc.ABC):
    """The container's stdout and stderr, appended to a file as they come."""

    @abc.abstractmethod
    def end(self, timeout: float = 30.0) -> None:
        """Let the stream end with the container, at most `timeout` seconds; then cut it."""


class Started(NamedTuple):
    """What starting a container gave: `docker run --detach`'s status and error text, and,
    where the engine could take it from the start, the container's output already on its way
    to the log file (None: the runner follows the log instead)."""

    status: int
    error: str
    output: Optional[LogFollower] = None


class Engine(abc.ABC):
    """What the runner asks of the host's Docker daemon."""

    kind = ""

    def __init__(self, access: DockerAccess) -> None:
        # Pulls and registry logins (the CLI keeps the credentials).
        self.cli = Docker(access)

    @abc.abstractmethod
    def start(self, task: HostTask, ml_dir: str, env_file: str, log_path: str) -> Started:
        """Create and start the container, detached: status 0, or Docker's status and error text.

        The status and text are those `docker run --detach` would give; the runner
        tells a missing image, a name in use and an unreachable daemon by the text.
        An engine that can catch the output from the first byte appends it to
        `log_path` and returns its follower in `output`.
        """

    @abc.abstractmethod
    def follow_logs(self, name: str, since: Optional[float], path: str) -> LogFollower:
        """Append the container's output to `path` as it comes (from `since`, a Unix time, if given)."""

    @abc.abstractmethod
    def wait(self, name: str) -> Waiter:
        """Start waiting for the container's exit."""

    @abc.abstractmethod
    def kill(self, name: str, signal: str) -> None:
        """Send a signal; a container that already ended is the goal reached."""

    @abc.abstractmethod
    def remove(self, name: str) -> bool:
        """Remove the container, running or not; whether it is gone now (one that was not there is)."""

    @abc.abstractmethod
    def state(self, name: str) -> Optional[ContainerState]:
        """Whether it runs, its exit code, whether it was killed for memory; None if there is no such container."""

    @abc.abstractmethod
    def daemon_answers(self) -> bool:
        """Whether the daemon answers now."""

    def exit_code(self, name: str) -> Optional[int]:
        state = self.state(name)
        return state.exit_code if state is not None else None


# --- the docker CLI -------------------------------------------------------------------------


class CliEngine(Engine):
    """`docker run`, `docker logs --follow`, `docker wait`, ...: for sudo, podman, tcp://, contexts."""

    kind = "cli"

    def start(self, task: HostTask, ml_dir: str, env_file: str, log_path: str) -> Started:
        file_lines, inherited = env_lines(task.environment)
        # Values go through a 0600 file (and, with a newline, docker's own environment), never argv.
        write_atomic(env_file, "".join(line + "\n" for line in file_lines).encode("utf-8"), 0o600, durable=False)
        try:
            names = set(inherited)
            extra = {k: v for k, v in task.environment if k in names}
            argv = run_argv(task, ml_dir, env_file, inherited)
            status, _, err = self.cli.run(argv, extra_env=extra, check=False, timeout=START_TIMEOUT)
        finally:
            # Docker has read the values once the container exists; keep no copy on disk.
            os.unlink(env_file)
        return Started(status, err)

    def follow_logs(self, name: str, since: Optional[float], path: str) -> LogFollower:
        args = ["logs", "--follow"]
        if since is not None:
            args += ["--since", "{:.3f}".format(since)]
        with open(path, "ab") as log:
            return _CliLogs(self.cli.popen([*args, name], stdout=log))

    def wait(self, name: str) -> Waiter:
        import subprocess  # only the CLI path starts processes; the API path never imports this

        proc = subprocess.Popen(
            self.cli.argv(["wait", name]),
            env=self.cli.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return _CliWait(self, name, proc)

    def kill(self, name: str, signal: str) -> None:
        self.cli.kill(name, signal)

    def remove(self, name: str) -> bool:
        return self.cli.remove(name)

    def state(self, name: str) -> Optional[ContainerState]:
        return self.cli.state(name)

    def daemon_answers(self) -> bool:
        return self.cli.daemon_answers()


class _CliLogs(LogFollower):
    def __init__(self, proc: "subprocess.Popen[bytes]") -> None:
        self.proc = proc

    def end(self, timeout: float = 30.0) -> None:
        import subprocess

        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _CliWait(Waiter):
    def __init__(self, engine: CliEngine, name: str, proc: "subprocess.Popen[bytes]") -> None:
        self.engine = engine
        self.name = name
        self.proc = proc

    def poll(self, timeout: float) -> Optional[WaitOutcome]:
        import subprocess

        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.proc.returncode == 0:
            try:
                return WaitOutcome(True, int(out.decode("ascii", "replace").strip().splitlines()[-1]), "")
            except (ValueError, IndexError):
                return WaitOutcome(True, self.engine.exit_code(self.name), "")
        why = docker_error_text(err.decode("utf-8", "replace")) or "exit status {}".format(self.proc.returncode)
        return WaitOutcome(False, None, why)


# --- the Engine API on the daemon's Unix socket ------------------------------------------------


class ApiError(Exception):
    """The daemon answered with an error status; `message` is its own text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__("{} (HTTP {})".format(message, status))
        self.status = status
        self.message = message


class _Response:
    """One HTTP response read from its socket; the body may be read as it comes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stream: IO[bytes] = sock.makefile("rb")
        line = self.stream.readline(65537)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError("not an HTTP answer: {!r}".format(line[:80]))
        self.status = int(parts[1])
        self.headers: Dict[str, str] = {}
        while True:
            line = self.stream.readline(65537)
            if not line:
                raise ConnectionError("the answer ended inside its headers")
            if line in (b"\r\n", b"\n"):
                break
            key, _, value = line.decode("latin-1").partition(":")
            self.headers[key.strip().lower()] = value.strip()
        length = self.headers.get("content-length")
        self._left: Optional[int] = int(length) if length is not None else None
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._chunk_left = 0
        self._done = False

    def read(self, n: int) -> bytes:
        """Up to `n` bytes of the body, fewer only at its end (blocks until then)."""
        out = b""
        while len(out) < n and not self._done:
            if self._chunked:
                if self._chunk_left == 0:
                    size_line = self.stream.readline(1024)
                    if not size_line.strip() and size_line:
                        continue  # the CRLF that ends the previous chunk
                    try:
                        self._chunk_left = int(size_line.split(b";")[0].strip() or b"x", 16)
                    except ValueError:
                        raise ConnectionError("bad chunk size {!r}".format(size_line[:40])) from None
                    if self._chunk_left == 0:
                        self._done = True
                        break
                data = self.stream.read(min(n - len(out), self._chunk_left))
                if not data:
                    raise ConnectionError("the answer ended inside a chunk")
                self._chunk_left -= len(data)
            else:
                want = n - len(out) if self._left is None else min(n - len(out), self._left)
                data = self.stream.read(want) if want else b""
                if self._left is not None:
                    if len(data) < want:
                        raise ConnectionError("the answer ended {} bytes short".format(want - len(data)))
                    self._left -= len(data)
                    self._done = self._left == 0
                elif not data:
                    self._done = True
            out += data
        return out

    def read_all(self, limit: int = 64 << 20) -> bytes:
        return self.read(limit)

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.sock.close()


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return str(doc["message"])
    except ValueError:
        pass
    return body.decode("utf-8", "replace").strip()


class ApiEngine(Engine):
    """The Docker Engine API over the daemon's Unix socket, from this process."""

    kind = "api"

    def __init__(self, access: DockerAccess, path: str) -> None:
        super().__init__(access)
        self.path = path

    # The transport.

    def open(
        self, method: str, url: str, body: Optional[Dict[str, Any]] = None, timeout: Optional[float] = CALL_TIMEOUT
    ) -> _Response:
        """Send one request; the answer's headers are read, its body is not. Raises OSError."""
        data = json.dumps(body).encode("utf-8") if body is not None else b""
        head = "{} {} HTTP/1.0\r\nHost: docker\r\nUser-Agent: distproc-agent\r\n".format(method, url)
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += "Content-Length: {}\r\n\r\n".format(len(data))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.path)
            sock.sendall(head.encode("latin-1") + data)
            return _Response(sock)
        except BaseException:
            sock.close()
            raise

    def call(
        self, method: str, url: str, body: Optional[Dict[str, Any]] = None, timeout: Optional[float] = CALL_TIMEOUT
    ) -> bytes:
        """One whole request and answer; ApiError for an error status. Raises OSError."""
        response = self.open(method, url, body, timeout)
        try:
            data = response.read_all()
        finally:
            response.close()
        if response.status >= 400:
            raise ApiError(response.status, _message(data))
        return data

    def _unreachable(self, exc: BaseException) -> str:
        # The CLI's words, which the runner reads as the platform's fault, not the job's.
        return "Cannot connect to the Docker daemon at unix://{}. Is the docker daemon running? ({})".format(
            self.path, _why(exc)
        )

    # The operations.

    def start(self, task: HostTask, ml_dir: str, env_file: str, log_path: str) -> Started:
        name = task.container_name
        output: Optional[_ApiOutput] = None
        try:
            self.call("POST", "/containers/create?name=" + _q(name), create_body(task, ml_dir), START_TIMEOUT)
            output = self._attach(name, log_path)
            self.call("POST", "/containers/{}/start".format(_q(name)), None, START_TIMEOUT)
        except ApiError as exc:
            if output is not None:
                output.cut_now()
            return Started(_run_status(exc.message), "docker: Error response from daemon: {}".format(exc.message))
        except OSError as exc:
            if output is not None:
                output.cut_now()
            return Started(125, self._unreachable(exc))
        return Started(0, "", output)

    def _attach(self, name: str, log_path: str) -> Optional[_ApiOutput]:
        """The container's stdout and stderr from its first byte, attached before it starts.

        As a foreground `docker run` does: the output comes as the container writes it,
        not read back through the json-file driver (`logs?follow=1`), and byte for byte
        (the log driver replaces what is not UTF-8). The daemon registers the attached
        streams before it answers, so once the answer's headers are read nothing the
        container writes is missed. None when the daemon would not attach: the runner
        then follows the log. (Measured in the sixth round, docs/benchmarks.md: no CPU
        difference resolvable on the test machine either way.)
        """
        url = "/containers/{}/attach?stream=1&stdout=1&stderr=1".format(_q(name))
        try:
            response = self.open("POST", url, timeout=CALL_TIMEOUT)
        except OSError:
            return None
        if response.status >= 400:
            response.close()
            return None
        # A container may stay silent for hours: no timeout once attached; `end` cuts a stream that hangs.
        response.sock.settimeout(None)
        return _ApiOutput(response, log_path)

    def follow_logs(self, name: str, since: Optional[float], path: str) -> LogFollower:
        url = "/containers/{}/logs?follow=1&stdout=1&stderr=1".format(_q(name))
        if since is not None:
            url += "&since={:.3f}".format(since)
        return _ApiOutput(lambda: self.open("GET", url, timeout=None), path)

    def wait(self, name: str) -> Waiter:
        return _ApiWait(self, name)

    def kill(self, name: str, signal: str) -> None:
        # 404/409: not there or not running; unreachable: as the CLI's non-zero exit, ignored.
        with contextlib.suppress(ApiError, OSError):
            self.call("POST", "/containers/{}/kill?signal={}".format(_q(name), _q(signal)))

    def remove(self, name: str) -> bool:
        try:
            self.call("DELETE", "/containers/{}?force=1".format(_q(name)))
        except ApiError as exc:
            return exc.status == 404  # no such container
        except OSError:
            return False
        return True

    def state(self, name: str) -> Optional[ContainerState]:
        try:
            doc = json.loads(self.call("GET", "/containers/{}/json".format(_q(name))).decode("utf-8"))
            state = doc["State"]
            return ContainerState(bool(state["Running"]), int(state["ExitCode"]), bool(state.get("OOMKilled")))
        except (ApiError, OSError, ValueError, KeyError, TypeError):
            return None

    def daemon_answers(self) -> bool:
        return ping(self.path)


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _q(value: str) -> str:
    """Percent-encoding of a path segment or query value, as urllib.parse.quote(value, safe="")
    (not imported for this alone: urllib.parse is a millisecond of every agent start)."""
    return "".join(chr(b) if b in _UNRESERVED else "%{:02X}".format(b) for b in value.encode("utf-8"))


def _run_status(message: str) -> int:
    """The exit status `docker run` gives for this daemon error (cli/command/container/run.go)."""
    if any(s in message for s in ("executable file not found", "no such file or directory")):
        return 127
    if any(s in message for s in ("permission denied", "is a directory")):
        return 126
    return 125


def create_body(task: HostTask, ml_dir: str) -> Dict[str, Any]:
    """POST /containers/create's body for what run_argv asks of `docker run` (the same container).

    Entrypoint rules (contract.md): an entrypoint replaces the image's ENTRYPOINT
    and, as the CLI's --entrypoint does, its CMD (the daemon keeps the image's CMD
    only when no Entrypoint is given); arguments alone keep the image's
    ENTRYPOINT and replace its CMD; neither keeps both. The Environment travels
    in the body, so it never touches argv or the disk.
    """
    env = ["{}={}".format(key, value) for key, value in task.environment]
    host_config: Dict[str, Any] = {
        "NetworkMode": "host",
        "Binds": ["{}:/opt/ml".format(ml_dir)]
        + ["{}:{}{}".format(src, dst, ":ro" if ro else "") for src, dst, ro in task.binds],
        "ExtraHosts": ["{}:{}".format(name, address) for name, address in task.add_hosts] or None,
    }
    if task.memory_limit_bytes is not None:
        # No swap beyond the limit: past it the kernel kills the container, which we report.
        host_config["Memory"] = task.memory_limit_bytes
        host_config["MemorySwap"] = task.memory_limit_bytes
    if task.gpus not in (0, None):
        # Under Slurm, exactly the GPUs this job was given on the node (container.slurm_gpus).
        devices = slurm_gpus(os.environ)
        if task.gpu_mode == "runtime":
            host_config["Runtime"] = "nvidia"
            env.append("NVIDIA_VISIBLE_DEVICES={}".format(",".join(devices) if devices else nvidia_visible(task.gpus)))
        elif devices:
            host_config["DeviceRequests"] = [{"Driver": "", "DeviceIDs": devices, "Capabilities": [["gpu"]]}]
        else:
            count = -1 if task.gpus == "all" else int(str(task.gpus))
            host_config["DeviceRequests"] = [{"Driver": "", "Count": count, "Capabilities": [["gpu"]]}]
    return {
        "Image": task.image,
        "Hostname": task.algo,
        "Labels": {LABEL_JOB: task.job_name, LABEL_ALGO: task.algo},
        "Env": env,
        "Entrypoint": list(task.entrypoint) if task.entrypoint else None,
        "Cmd": list(task.arguments) if task.arguments else None,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
        "HostConfig": host_config,
    }


class _ApiOutput(LogFollower):
    """The multiplexed stream of an attach or of `logs?follow=1`, demultiplexed into one file.

    Non-TTY containers' output comes in frames: an 8-byte header (stream, 0, 0, 0,
    size as big-endian uint32), then the bytes. stdout and stderr go to the file
    interleaved as they come, as `docker logs --follow > log 2>&1` wrote them.
    `stream` is the answer already opened (an attach), or how to open it on the
    stream's own thread (a log follow, whose answer waits on nothing but the daemon).
    """

    def __init__(self, stream: Union[_Response, Callable[[], _Response]], path: str) -> None:
        self.stream = stream
        self.path = path
        self.response: Optional[_Response] = stream if isinstance(stream, _Response) else None
        self.cut = threading.Event()
        self.thread = threading.Thread(target=self._run, name="docker-output", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with open(self.path, "ab", buffering=0) as out:
            response = self.response
            if response is None:
                assert not isinstance(self.stream, _Response)
                try:
                    response = self.stream()
                except OSError:
                    return  # the daemon went away; the wait tells the runner so
                self.response = response
            try:
                if response.status >= 400:
                    return
                while not self.cut.is_set():
                    header = response.read(8)
                    if len(header) < 8:
                        return
                    size = int.from_bytes(header[4:8], "big")
                    data = response.read(size)
                    if data:
                        out.write(data)
                    if len(data) < size:
                        return
            except (OSError, ValueError):
                return  # the daemon went away, or the stream was cut
            finally:
                response.close()

    def end(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.cut_now()

    def cut_now(self) -> None:
        """Stop reading at once (a container that never started, or a stream that hangs)."""
        self.cut.set()
        response = self.response
        if response is not None:
            with contextlib.suppress(OSError):
                response.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5.0)


class _ApiWait(Waiter):
    """POST /containers/{id}/wait on a thread; a broken connection means the daemon went away."""

    def __init__(self, engine: ApiEngine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.outcome: Optional[WaitOutcome] = None
        self.thread = threading.Thread(target=self._run, name="docker-wait", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            data = self.engine.call("POST", "/containers/{}/wait".format(_q(self.name)), timeout=None)
            doc = json.loads(data.decode("utf-8"))
            code = doc["StatusCode"]
            if not isinstance(code, int):
                raise ValueError("StatusCode {!r}".format(code))
            self.outcome = WaitOutcome(True, code, "")
        except ApiError as exc:
            self.outcome = WaitOutcome(False, None, "Error response from daemon: {}".format(exc.message))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.outcome = WaitOutcome(False, None, "error waiting for container: {}".format(_why(exc)))

    def poll(self, timeout: float) -> Optional[WaitOutcome]:
        self.thread.join(timeout)
        if self.thread.is_alive():
            return None
        return self.outcome or WaitOutcome(False, None, "error waiting for container")


def _why(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return "unexpected EOF" if not exc.doc.strip() else "bad answer: {}".format(exc)
    return str(exc) or type(exc).__name__


__all__: List[str] = [
    "ApiEngine",
    "CliEngine",
    "Engine",
    "LogFollower",
    "Started",
    "WaitOutcome",
    "Waiter",
    "create_body",
    "docker_error_text",
    "docker_socket",
    "for_access",
    "ping",
]
