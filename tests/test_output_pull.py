"""Fetching file:// outputs from many hosts at once, through the real agent on this machine.

A regression test for a hang found by the 32-host load run: each host's tar
extractor held a thread of asyncio's default executor while waiting for
chunks that only that same executor could hand over, so as many pulls at
once as the executor had threads (6 on a 2-core machine) waited forever.
Here the executor is cut to 2 threads and 8 hosts' outputs are pulled at
once; every host is the local machine through `ansible_connection: local`
(the real agent, its `pack` verb, real tar streams), each with its own
work folder.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distproc.hosts.agentbundle import agent_bundle
from distproc.hosts.session import HostSession
from distproc.hosts.transport import LocalTransport

HOSTS = 8


async def _pull_all(root: Path) -> list[tuple[int, int]]:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
    bundle = agent_bundle()
    sessions = []
    for k in range(1, HOSTS + 1):
        work = root / f"host{k}"
        job_dir = work / "jobs" / "pull" / f"algo-{k}"
        out = job_dir / "ml" / "processing" / "output" / "o"
        out.mkdir(parents=True)
        # Several chunks' worth per host, so the queue between channel and extractor fills.
        (out / "big.bin").write_bytes(bytes([k]) * (3 << 20))
        (out / "small.txt").write_text(f"algo-{k}")
        session = HostSession(LocalTransport(f"host{k}"), sys.executable, str(work), str(job_dir), bundle)
        await session.install_agent()
        sessions.append(session)
    pulls = [
        s.pull_files("/opt/ml/processing/output/o", root / "dest" / f"algo-{k}") for k, s in enumerate(sessions, 1)
    ]
    return await asyncio.wait_for(asyncio.gather(*pulls), timeout=60)


def test_many_hosts_outputs_are_fetched_at_once_with_a_small_thread_pool(tmp_path: Path) -> None:
    counts = asyncio.run(_pull_all(tmp_path))
    assert counts == [(2, (3 << 20) + len(f"algo-{k}")) for k in range(1, HOSTS + 1)]
    for k in range(1, HOSTS + 1):
        dest = tmp_path / "dest" / f"algo-{k}"
        assert (dest / "small.txt").read_text() == f"algo-{k}"
        assert (dest / "big.bin").read_bytes() == bytes([k]) * (3 << 20)
