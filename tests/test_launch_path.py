"""What a launch costs, kept cheap without losing what it promises: the store's
coalesced writes, the agent's `claim` (lease and prepare in one agent start),
the Docker check of `prepare`, the open-files limit. No cluster needed."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import resource
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from distproc.agent import hostcheck
from distproc.agent.task import DockerAccess
from distproc.run.runner import raise_open_file_limit
from distproc.store.db import COALESCE_SECONDS, Store

REQUEST = {"ProcessingJobName": "j1", "AppSpecification": {"ImageUri": "img"}}


def _other_process_events(home: Path) -> list[str]:
    """What another process (its own connection) sees of job j1's events."""
    other = Store(home)
    try:
        return [e["kind"] for e in other.events("j1")]
    finally:
        other.close()


def _new_job(home: Path) -> Store:
    store = Store(home)
    store.create_job("j1", "arn:j1", REQUEST, None)
    store.add_host("j1", "algo-1", "h1", {}, "/w/jobs/j1/algo-1")
    return store


def test_events_outside_an_event_loop_are_committed_at_once(tmp_path: Path) -> None:
    """A CLI command or a script with no running loop: every write is its own commit, as before."""
    store = _new_job(tmp_path)
    store.add_event("j1", "algo-1", "connected", {})
    assert _other_process_events(tmp_path) == ["connected"]


def test_events_in_a_running_loop_are_coalesced_then_committed_within_the_window(tmp_path: Path) -> None:
    """Inside the coordinator's loop, progress records wait at most COALESCE_SECONDS, then land together."""
    store = _new_job(tmp_path)

    async def scenario() -> tuple[list[str], list[str]]:
        for kind in ("connect_started", "connected", "agent_ready"):
            store.add_event("j1", "algo-1", kind, {})
        store.update_host("j1", "algo-1", status="Preparing")
        before = _other_process_events(tmp_path)
        await asyncio.sleep(COALESCE_SECONDS * 3)
        return before, _other_process_events(tmp_path)

    before, after = asyncio.run(scenario())
    assert before == []
    assert after == ["connect_started", "connected", "agent_ready"]
    assert Store(tmp_path).get_job("j1").hosts[0].status == "Preparing"


def test_a_write_that_cannot_wait_commits_the_waiting_ones_first(tmp_path: Path) -> None:
    """A host launched (what `attach` acts on) is committed at once, with every event before it, in order."""
    store = _new_job(tmp_path)

    async def scenario() -> list[str]:
        store.add_event("j1", "algo-1", "prepared", {})
        store.update_host("j1", "algo-1", status="InProgress")
        return _other_process_events(tmp_path)

    assert asyncio.run(scenario()) == ["prepared"]
    assert Store(tmp_path).get_job("j1").hosts[0].status == "InProgress"


def test_reads_and_close_see_the_waiting_writes(tmp_path: Path) -> None:
    """The same store reads its own waiting writes; close commits what is left."""
    store = _new_job(tmp_path)

    async def scenario() -> list[str]:
        store.add_event("j1", "algo-1", "a", {})
        own = [e["kind"] for e in store.events("j1")]
        store.add_event("j1", "algo-1", "b", {})
        store.set_metrics("j1", "algo-1", None, [{"t": 1}])
        return own

    assert asyncio.run(scenario()) == ["a"]
    store.close()
    assert _other_process_events(tmp_path) == ["a", "b"]
    assert Store(tmp_path).metrics("j1") == {"algo-1": (None, [{"t": 1}])}


def test_a_batch_is_one_transaction(tmp_path: Path) -> None:
    """Hosts and their first events, written in a batch, appear together when the batch ends."""
    store = Store(tmp_path)
    store.create_job("j1", "arn:j1", REQUEST, None)
    with store.batch():
        for k in (1, 2):
            store.add_host("j1", f"algo-{k}", f"h{k}", {}, f"/w/jobs/j1/algo-{k}")
            store.add_event("j1", f"algo-{k}", "connected", {})
        assert Store(tmp_path).get_job("j1").hosts == ()
    assert [h.algo for h in Store(tmp_path).get_job("j1").hosts] == ["algo-1", "algo-2"]
    assert _other_process_events(tmp_path) == ["connected", "connected"]


def _agent(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "distproc.agent", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_claim_answers_the_lease_then_releases_it_when_no_task_comes(tmp_path: Path) -> None:
    """`claim` prints the lease answer first; stdin closed without a task gives the host back."""
    done = _agent("claim", str(tmp_path), "--job", "j1", "--holder", "h1")
    lines = [json.loads(x) for x in done.stdout.decode().splitlines()]
    assert done.returncode == 0, done.stderr
    assert lines == [{"leased": True}, {"released": True}]
    assert not (tmp_path / "lease.json").exists()


def test_claim_of_a_busy_host_says_so_and_takes_nothing(tmp_path: Path) -> None:
    """While one job's claim waits for its task, another job's claim is told the host is busy."""
    holder = subprocess.Popen(
        [sys.executable, "-m", "distproc.agent", "claim", str(tmp_path), "--job", "a", "--holder", "h1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and json.loads(holder.stdout.readline()) == {"leased": True}
        other = _agent("claim", str(tmp_path), "--job", "b", "--holder", "h1")
        answer = json.loads(other.stdout.decode().splitlines()[0])
        assert answer["busy"]["job"] == "a" and len(other.stdout.decode().splitlines()) == 1
        assert json.loads((tmp_path / "lease.json").read_text())["job"] == "a"
    finally:
        out, _ = holder.communicate(b"", timeout=60)
    assert json.loads(out.decode().splitlines()[-1]) == {"released": True}


def test_claim_with_a_bad_task_keeps_the_lease_for_cleanup_to_release(tmp_path: Path) -> None:
    """A task that cannot be prepared is an error answer, as from `prepare`; the lease stays until cleanup."""
    request = {"jobdir": str(tmp_path / "jobs" / "j1" / "algo-1"), "launch": False, "task": {"version": 999}}
    done = _agent("claim", str(tmp_path), "--job", "j1", "--holder", "h1", stdin=json.dumps(request).encode())
    lines = [json.loads(x) for x in done.stdout.decode().splitlines()]
    assert done.returncode == 2
    assert lines[0] == {"leased": True} and "bad task document" in lines[-1]["error"]
    assert json.loads((tmp_path / "lease.json").read_text())["job"] == "j1"


class _UnixHTTPServer(socketserver.UnixStreamServer):
    pass


@pytest.fixture
def fake_docker_socket(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A Unix socket that answers /_ping as dockerd does; records the paths asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b"OK" if self.path == "/_ping" else b"{}"
            self.send_response(200 if self.path == "/_ping" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    path = tmp_path / "docker.sock"
    server = _UnixHTTPServer(str(path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, asked
    finally:
        server.shutdown()
        server.server_close()


def test_prepare_asks_the_docker_socket_directly_when_it_can(
    fake_docker_socket: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain `docker` on a unix:// daemon: /_ping on the socket, no docker CLI process."""
    path, asked = fake_docker_socket
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # A docker CLI that fails if it is run at all: the answer must come from the socket.
    (bindir / "docker").write_text("#!/bin/sh\nexit 99\n")
    (bindir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert hostcheck.docker_answers(DockerAccess(("docker",), f"unix://{path}")) == {"ok": True}
    assert asked == ["/_ping"]


def test_prepare_falls_back_to_docker_version_for_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No daemon on the socket, or a docker command other than plain `docker`: the CLI is asked, and its error kept."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = '#!/bin/sh\necho "Cannot connect to the Docker daemon at $DOCKER_HOST" >&2\nexit 1\n'
    (bindir / "docker").write_text(script)
    (bindir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    report = hostcheck.docker_answers(DockerAccess(("docker",), f"unix://{tmp_path}/none.sock"))
    assert report["ok"] is False and "Cannot connect to the Docker daemon" in report["error"]
    assert hostcheck._docker_socket(DockerAccess(("sudo", "docker"), None)) is None
    assert hostcheck._docker_socket(DockerAccess(("docker",), "tcp://10.0.0.1:2375")) is None


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    """A job holds a connection and a log file per host: the soft limit goes up to what the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        raise_open_file_limit()
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised == hard if hard != resource.RLIM_INFINITY else raised > 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_hosts_of_one_inventory_share_prepared_ssh_options(tmp_path: Path) -> None:
    """Key file and known_hosts are read once for all hosts that name them, again only when they change."""
    import asyncssh

    from distproc.hosts.transport.ssh import SSHTarget, SSHTransport, _known_hosts

    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(tmp_path / "id"))
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.1 {key.export_public_key().decode().strip()}\n")

    def options(name: str) -> asyncssh.SSHClientConnectionOptions:
        return SSHTransport(SSHTarget(name, "10.0.0.1", 22, "u", str(tmp_path / "id"), str(known)))._options()

    first = options("h1")
    assert options("h2") is first
    assert [k.get_algorithm() for k in first.client_keys or []] == ["ssh-ed25519"]
    parsed = _known_hosts(str(known))
    assert _known_hosts(str(known)) is parsed
    known.write_text(known.read_text() + f"10.0.0.2 {key.export_public_key().decode().strip()}\n")
    assert _known_hosts(str(known)) is not parsed
    assert options("h3") is not first  # a changed known_hosts file: prepared again


def test_a_library_is_answered_from_the_loaders_cache_only_when_the_cache_settles_it(tmp_path: Path) -> None:
    import sys

    from distproc.hosts.transport._libsearch import cached_library

    libs = tmp_path / "lib"
    libs.mkdir()
    ours = libs / "libfoo.so.5"
    ours.write_bytes(Path(sys.executable).resolve().read_bytes()[:64])  # an ELF header of this machine's kind
    other = bytearray(ours.read_bytes())
    other[18:20] = b"\x28\x00"  # e_machine ARM: a library another machine would load
    (libs / "libbar.so.1").write_bytes(bytes(other))
    (libs / "libfoo.so").write_bytes(ours.read_bytes())
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(
        b"glibc-ld.so.cache1.1\0" + f"{libs}/libfoo.so\0{libs}/libfoo.so.5\0{libs}/libbar.so.1\0".encode()
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    # In the cache: its versioned name, as `ldconfig -p` would give find_library.
    assert cached_library("foo", str(cache), library_path="") == (True, "libfoo.so.5")
    # In the cache for another machine only, or nowhere: certainly absent (no gcc, no ld run).
    assert cached_library("bar", str(cache), library_path=str(empty)) == (True, None)
    assert cached_library("oqs", str(cache), library_path=f"/nonexistent:{empty}") == (True, None)
    # In a folder of LD_LIBRARY_PATH, or no cache to read: find_library's own search decides.
    (empty / "liboqs.so.5").write_bytes(b"")
    assert cached_library("oqs", str(cache), library_path=f"/nonexistent:{empty}") == (False, None)
    assert cached_library("foo", str(tmp_path / "no-cache"), library_path="") == (False, None)


def test_the_quick_lookup_agrees_with_find_library_on_this_machine_and_only_while_asyncssh_loads() -> None:
    import ctypes.util

    from distproc.hosts.transport._libsearch import cached_library, quick_library_lookup

    original = ctypes.util.find_library
    for name in ("c", "z", "nettle", "oqs", "no-such-library-here"):
        certain, answer = cached_library(name)
        if certain:
            assert answer == original(name), name
    with quick_library_lookup():
        assert ctypes.util.find_library is not original
    assert ctypes.util.find_library is original


def test_importing_the_ssh_transport_starts_no_process() -> None:
    """asyncssh's import asked find_library for liboqs and nettle: `ldconfig -p` each, and gcc
    and ld for an absent one, on every `distproc run`."""
    import subprocess
    import sys

    probe = (
        "import subprocess, sys\n"
        "started = []\n"
        "init = subprocess.Popen.__init__\n"
        "def record(self, *a, **k):\n"
        "    started.append(a[0] if a else k.get('args'))\n"
        "    init(self, *a, **k)\n"
        "subprocess.Popen.__init__ = record\n"
        "import distproc.hosts.transport.ssh\n"
        "print(started)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_agents_claim_path_leaves_out_the_modules_it_does_not_need(tmp_path: Path) -> None:
    """What a host's agent imports on the launch path is its start cost, paid once per host per job.

    The agent as shipped runs `claim`, prepares, forks the runner, follows and
    cleans up; none of that needs these modules (about a fifth of the start
    before they were put off), so importing one again at the top of a module
    shows here rather than only in a benchmark.
    """
    import io
    import zipfile

    from distproc.hosts.agentbundle import agent_bundle

    agent = tmp_path / "agent"
    zipfile.ZipFile(io.BytesIO(agent_bundle().data)).extractall(agent)
    code = (
        f"import sys; sys.path.insert(0, {str(agent)!r})\n"
        "import distproc_agent.cli as c\n"
        "c.build_parser('claim')\n"
        # What the claim path's verbs import where they need them (cli.py's local imports).
        "import distproc_agent.runner, distproc_agent.follow, distproc_agent.hostcheck, distproc_agent.netif\n"
        "import distproc_agent.engine, distproc_agent.metrics, distproc_agent.dirwatch\n"
        # distproc_agent.answers: the agent's answers as the coordinator reads them (protocol.py says why apart).
        # distproc_agent.pipes: only a job with Pipe mode inputs needs it (runner imports it then).
        "unwanted = ['dataclasses', 'inspect', 'subprocess', 'tarfile', 'ipaddress', 'urllib.parse', 'asyncio',\n"
        "            'distproc_agent.answers', 'distproc_agent.pipes']\n"
        "print(' '.join(m for m in unwanted if m in sys.modules))\n"
    )
    done = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == []
