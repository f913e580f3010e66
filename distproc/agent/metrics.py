"""Host metrics, sampled at an interval into a JSON-lines file.

The parsers are pure (they take /proc text) so they are tested with plain
strings; MetricsSampler does the I/O on a daemon thread. The file holds, one
JSON object per line:

    {"t": 1700000000.0, "gpu": {"available": false, "reason": "pynvml is not installed", ...}}
    {"t": 1700000000.1, "cpu_percent": null, "cpu_count": 4, "mem_used_bytes": 1, "mem_total_bytes": 2,
     "disk_used_bytes": 3, "disk_total_bytes": 9, "net_rx_bytes": 4, "net_tx_bytes": 5,
     "gpus": [{"index": 0, ...}]}
    {"t": 1700000005.1, "error": "OSError: ..."}

The "gpu" line comes first so a reader knows why there are no GPU readings.
cpu_count and disk_total_bytes (the size of the file system holding the job's
folder) let the coordinator give SageMaker's CloudWatch metrics
(CPUUtilization, DiskUtilization: distproc/store/metrics.py).
Network counters are cumulative since boot; the coordinator turns them into
rates. Standard library only (pynvml enters through gpu.py, lazily).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Set, Tuple

from . import gpu as gpu_module

DEFAULT_INTERVAL = 5.0
# How long stop() waits for the final sample before leaving the daemon thread be.
STOP_JOIN_SECONDS = 10.0
# /proc/stat "cpu" columns counted as time: user nice system idle iowait irq
# softirq steal. guest and guest_nice are already inside user and nice.
_CPU_COLUMNS = 8
_IDLE_COLUMNS = (3, 4)  # idle, iowait


def parse_proc_stat(text: str) -> Tuple[int, int]:
    """(busy, total) jiffies of the aggregate "cpu" line of /proc/stat.

    Utilisation is the ratio of the busy and total deltas between two reads.
    """
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1 : 1 + _CPU_COLUMNS]]
            total = sum(values)
            idle = sum(values[i] for i in _IDLE_COLUMNS if i < len(values))
            return total - idle, total
    raise ValueError("/proc/stat has no aggregate cpu line")


def parse_meminfo(text: str) -> Tuple[int, int]:
    """(used, total) bytes from /proc/meminfo, used = MemTotal - MemAvailable.

    Kernels before 3.14 lack MemAvailable; MemFree + Buffers + Cached is the
    usual stand-in there.
    """
    kb: Dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[name.strip()] = int(parts[0])
    if "MemTotal" not in kb:
        raise ValueError("/proc/meminfo has no MemTotal")
    if "MemAvailable" in kb:
        available = kb["MemAvailable"]
    else:
        available = kb.get("MemFree", 0) + kb.get("Buffers", 0) + kb.get("Cached", 0)
    total = kb["MemTotal"] * 1024
    return max(total - available * 1024, 0), total


def parse_net_dev(text: str) -> Tuple[int, int]:
    """(rx, tx) bytes from /proc/net/dev, summed over every interface but lo."""
    rx = tx = 0
    for line in text.splitlines():
        # Wide counters can touch the colon ("eth0:123"), so split on it, not on spaces.
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def disk_used_bytes(path: str) -> int:
    """Bytes allocated to the regular files under path (st_blocks * 512).

    Symlinks are not followed, hard links count once, and files or folders
    that vanish or cannot be read mid-walk are skipped: the job keeps writing
    while this runs.
    """
    total = 0
    seen: Set[Tuple[int, int]] = set()
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(entry.path)
                    elif stat.S_ISREG(st.st_mode):
                        if st.st_nlink > 1:
                            key = (st.st_dev, st.st_ino)
                            if key in seen:
                                continue
                            seen.add(key)
                        total += st.st_blocks * 512
        except OSError:
            continue
    return total


def disk_total_bytes(path: str) -> Optional[int]:
    """Size of the file system that holds path; None if it cannot be read."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read()


def _describe(exc: BaseException) -> str:
    return "{}: {}".format(type(exc).__name__, exc)


class MetricsSampler:
    """Appends a sample of this host to out_path every `interval` seconds.

    The first sample is taken at start() and a last one at stop(). Nothing
    here raises into the agent: a failed sample becomes an {"error": ...} line
    and sampling goes on.

        sampler = MetricsSampler("/job/metrics.jsonl", "/job/ml", interval=5.0)
        sampler.start()
        ...  # the container runs
        sampler.stop()
    """

    def __init__(
        self,
        out_path: str,
        work_path: str,
        interval: float = DEFAULT_INTERVAL,
        gpu: bool = True,
        no_gpu_reason: str = "GPU metrics are turned off",
    ) -> None:
        self.out_path = out_path
        self.work_path = work_path
        self.interval = interval
        self.gpu = gpu
        self.no_gpu_reason = no_gpu_reason
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._out: Optional[IO[str]] = None
        self._reader: Optional[gpu_module.GpuReader] = None
        self._last_cpu: Optional[Tuple[int, int]] = None

    def start(self) -> None:
        """Start sampling on a daemon thread; returns at once (NVML starts on the thread)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="distproc-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take the final sample and stop; waits at most STOP_JOIN_SECONDS."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_SECONDS)

    def _run(self) -> None:
        try:
            fd = os.open(self.out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            return  # nowhere to record anything, not even this failure
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)  # the umask must not hide metrics from the coordinator's user
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            self._out = out
            try:
                self._guarded(self._write_gpu_info)
                self._guarded(self._write_sample)
                while not self._stop.wait(self.interval):
                    self._guarded(self._write_sample)
                self._guarded(self._write_sample)
            finally:
                if self._reader is not None:
                    self._reader.close()
                self._out = None

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._emit({"t": time.time(), "error": _describe(exc)})

    def _emit(self, doc: Dict[str, Any]) -> None:
        assert self._out is not None
        self._out.write(json.dumps(doc, sort_keys=True) + "\n")
        self._out.flush()

    def _write_gpu_info(self) -> None:
        if not self.gpu:
            info = gpu_module.unavailable(self.no_gpu_reason)
        else:
            self._reader, reason = gpu_module.open_gpu_reader()
            info = self._reader.describe() if self._reader is not None else gpu_module.unavailable(reason or "")
        self._emit({"t": time.time(), "gpu": info})

    def _write_sample(self) -> None:
        t = time.time()
        busy, total = parse_proc_stat(_read("/proc/stat"))
        cpu_percent: Optional[float] = None
        if self._last_cpu is not None:
            d_busy, d_total = busy - self._last_cpu[0], total - self._last_cpu[1]
            if d_total > 0:
                cpu_percent = round(100.0 * max(d_busy, 0) / d_total, 2)
        self._last_cpu = (busy, total)
        mem_used, mem_total = parse_meminfo(_read("/proc/meminfo"))
        rx, tx = parse_net_dev(_read("/proc/net/dev"))
        gpus: List[Dict[str, Any]] = self._reader.sample() if self._reader is not None else []
        self._emit(
            {
                "t": t,
                "cpu_percent": cpu_percent,
                "cpu_count": os.cpu_count(),
                "mem_used_bytes": mem_used,
                "mem_total_bytes": mem_total,
                "disk_used_bytes": disk_used_bytes(self.work_path),
                "disk_total_bytes": disk_total_bytes(self.work_path),
                "net_rx_bytes": rx,
                "net_tx_bytes": tx,
                "gpus": gpus,
            }
        )


def read_samples(path: str) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """(gpu info, samples) from a metrics file; (None, []) if it does not exist.

    Lines that are not whole JSON objects (the last one, cut off while being
    written) and {"error": ...} lines are left out; of several "gpu" lines
    (a restarted sampler appends) the latest wins.
    """
    gpu_info: Optional[Dict[str, Any]] = None
    samples: List[Dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None, []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if isinstance(doc.get("gpu"), dict):
            gpu_info = doc["gpu"]
        elif "error" not in doc and "t" in doc:
            samples.append(doc)
    return gpu_info, samples
