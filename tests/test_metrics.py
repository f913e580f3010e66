"""Metrics: /proc parsers, the agent's sampler, the GPU module, and the coordinator's summaries.

No machine this suite runs on has an NVIDIA GPU, so GPUs are faked: a stand-in
`pynvml` module is put in sys.modules (or `import pynvml` is made to fail) and
distproc.agent.gpu is exercised against it. The CPU, memory, disk and network
samples are real, read from this Linux machine's /proc.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distproc.agent import gpu
from distproc.agent import metrics as agent_metrics
from distproc.agent.metrics import (
    MetricsSampler,
    disk_used_bytes,
    parse_meminfo,
    parse_net_dev,
    parse_proc_stat,
    read_samples,
)
from distproc.store import metrics as coord

PROC_STAT = """\
cpu  4705 356 584 3699176 23060 0 277 10 7 3
cpu0 1393 280 307 1849328 11554 0 260 5 7 3
cpu1 3312 76 277 1849848 11506 0 17 5 0 0
intr 114930548 113199788 3 0 5 263 0 4 [... lots more numbers ...]
ctxt 1990473
btime 1062191376
processes 2915
procs_running 1
procs_blocked 0
"""

MEMINFO = """\
MemTotal:       16303300 kB
MemFree:         9211224 kB
MemAvailable:   12664148 kB
Buffers:          281532 kB
Cached:          3331032 kB
SwapCached:            0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""

NET_DEV = """\
Inter-|   Receive                                            |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
    lo: 9876543   54321    0    0    0     0          0       0  9876543   54321    0    0    0     0       0          0
  eth0: 1000000    2000    0    0    0     0          0       0   300000    1500    0    0    0     0       0          0
wlan0:12345678901   99    0    0    0     0          0       0 22      1    0    0    0     0       0          0
"""


# --- parsers -----------------------------------------------------------------


def test_proc_stat_reads_the_aggregate_line_without_guest_time() -> None:
    """busy/total come from the "cpu" line; idle+iowait are idle; guest columns are not double counted."""
    busy, total = parse_proc_stat(PROC_STAT)
    total_expected = 4705 + 356 + 584 + 3699176 + 23060 + 0 + 277 + 10
    assert total == total_expected
    assert busy == total_expected - 3699176 - 23060


def test_proc_stat_without_cpu_line_is_an_error() -> None:
    """Text that is not /proc/stat is refused rather than read as 0% CPU."""
    with pytest.raises(ValueError, match="cpu"):
        parse_proc_stat("cpu0 1 2 3 4\nintr 5\n")


def test_meminfo_used_is_total_minus_available_in_bytes() -> None:
    """used = MemTotal - MemAvailable, both converted from kB."""
    used, total = parse_meminfo(MEMINFO)
    assert total == 16303300 * 1024
    assert used == (16303300 - 12664148) * 1024


def test_meminfo_without_memavailable_falls_back_to_free_buffers_cached() -> None:
    """Kernels before 3.14 have no MemAvailable; free + buffers + cached stands in."""
    old = "\n".join(line for line in MEMINFO.splitlines() if not line.startswith("MemAvailable"))
    used, _ = parse_meminfo(old)
    assert used == (16303300 - 9211224 - 281532 - 3331032) * 1024


def test_meminfo_without_memtotal_is_an_error() -> None:
    """No MemTotal means the text is not meminfo."""
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo("MemFree: 12 kB\n")


def test_net_dev_sums_every_interface_but_lo() -> None:
    """rx/tx bytes over eth0 and wlan0 (whose counter touches the colon); lo is left out."""
    rx, tx = parse_net_dev(NET_DEV)
    assert rx == 1000000 + 12345678901
    assert tx == 300000 + 22


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(lambda n: n != "lo"),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
        ),
        max_size=6,
    )
)
def test_net_dev_sum_matches_any_interface_table(interfaces: list[tuple[str, int, int]]) -> None:
    """Whatever the interfaces and counter widths, the sums are exact."""
    lines = NET_DEV.splitlines()[:3]  # the two headers and lo
    for name, rx, tx in interfaces:
        lines.append(f"{name:>6}:{rx} 1 0 0 0 0 0 0 {tx} 1 0 0 0 0 0 0")
    assert parse_net_dev("\n".join(lines)) == (sum(i[1] for i in interfaces), sum(i[2] for i in interfaces))


def test_parsers_accept_this_machines_proc() -> None:
    """The real /proc files of this Linux host parse to plausible values."""
    busy, total = parse_proc_stat(Path("/proc/stat").read_text())
    used, mem_total = parse_meminfo(Path("/proc/meminfo").read_text())
    rx, tx = parse_net_dev(Path("/proc/net/dev").read_text())
    assert 0 <= busy <= total and total > 0
    assert 0 < used < mem_total
    assert rx >= 0 and tx >= 0


def test_disk_used_counts_blocks_of_regular_files_and_skips_symlinks(tmp_path: Path) -> None:
    """st_blocks*512 of the files below; a symlink to a big file outside and a hard link add nothing."""
    work = tmp_path / "work"
    (work / "a" / "b").mkdir(parents=True)
    (work / "one").write_bytes(b"x" * 10000)
    (work / "a" / "b" / "two").write_bytes(b"y" * 70000)
    outside = tmp_path / "big"
    outside.write_bytes(b"z" * 500000)
    (work / "link").symlink_to(outside)
    (work / "dirlink").symlink_to(tmp_path)
    (work / "dangling").symlink_to(tmp_path / "missing")
    os.link(work / "one", work / "one-again")
    expected = sum(os.lstat(p).st_blocks * 512 for p in (work / "one", work / "a" / "b" / "two"))
    assert expected > 0
    assert disk_used_bytes(str(work)) == expected


def test_disk_used_of_a_missing_folder_is_zero(tmp_path: Path) -> None:
    """A work folder that is gone (or not yet made) is 0 bytes, not an error."""
    assert disk_used_bytes(str(tmp_path / "nope")) == 0


# --- fake pynvml -------------------------------------------------------------


class _Memory:
    def __init__(self, used: int, total: int) -> None:
        self.used, self.total, self.free = used, total, total - used


class _Util:
    def __init__(self, gpu_pct: int) -> None:
        self.gpu, self.memory = gpu_pct, 0


def fake_pynvml(gpus: int = 2, init_error: str | None = None, unsupported: Collection[tuple[int, str]] = ()) -> Any:
    """A pynvml stand-in: `gpus` devices; (index, function) pairs in `unsupported` raise NotSupported."""
    mod: Any = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # pynvml's own spelling
        def __str__(self) -> str:
            return "Not Supported"

    mod.NVMLError = NVMLError
    mod.NVMLError_NotSupported = NVMLError_NotSupported
    mod.NVML_TEMPERATURE_GPU = 0
    mod.calls = []

    def device_call(name: str, result: Callable[[int], Any]) -> Callable[..., Any]:
        def call(handle: int, *args: Any) -> Any:
            mod.calls.append((name, handle, args))
            if (handle, name) in unsupported:
                raise NVMLError_NotSupported()
            return result(handle)

        return call

    def init() -> None:
        mod.calls.append(("nvmlInit",))
        if init_error is not None:
            raise NVMLError(init_error)

    mod.nvmlInit = init
    mod.nvmlShutdown = lambda: mod.calls.append(("nvmlShutdown",))
    mod.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    mod.nvmlDeviceGetCount = lambda: gpus
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetName = device_call("nvmlDeviceGetName", lambda i: b"NVIDIA H100 80GB HBM3")
    mod.nvmlDeviceGetUUID = device_call("nvmlDeviceGetUUID", lambda i: f"GPU-{i:08d}")
    mod.nvmlDeviceGetMemoryInfo = device_call("nvmlDeviceGetMemoryInfo", lambda i: _Memory((i + 1) * 2**30, 80 * 2**30))
    mod.nvmlDeviceGetUtilizationRates = device_call("nvmlDeviceGetUtilizationRates", lambda i: _Util(40 + i))
    mod.nvmlDeviceGetPowerUsage = device_call("nvmlDeviceGetPowerUsage", lambda i: 75500 + i * 1000)
    mod.nvmlDeviceGetTemperature = device_call("nvmlDeviceGetTemperature", lambda i: 50 + i)
    return mod


@pytest.fixture
def no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError


def install(monkeypatch: pytest.MonkeyPatch, module: Any) -> Any:
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


# --- the GPU module ----------------------------------------------------------


def test_probe_without_pynvml_says_it_is_not_installed(no_pynvml: None) -> None:
    """No pynvml on the host: no GPUs, the reason says so, nothing raised."""
    info = gpu.probe()
    assert info == {"available": False, "reason": "pynvml is not installed", "driver": None, "count": 0, "gpus": []}
    assert gpu.open_gpu_reader() == (None, "pynvml is not installed")


def test_probe_with_nvml_failing_gives_the_nvml_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvmlInit raising (no driver) becomes a reason carrying NVML's message."""
    install(monkeypatch, fake_pynvml(init_error="Driver Not Loaded"))
    info = gpu.probe()
    assert info["available"] is False
    assert info["count"] == 0
    assert info["reason"] == "NVML could not start: Driver Not Loaded"
    reader, reason = gpu.open_gpu_reader()
    assert reader is None and reason is not None and "Driver Not Loaded" in reason


def test_probe_with_no_devices_says_none_found_and_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver with zero GPUs is "no NVIDIA GPUs found", and NVML is not left open."""
    fake = install(monkeypatch, fake_pynvml(gpus=0))
    assert gpu.probe()["reason"] == "no NVIDIA GPUs found"
    assert fake.calls == [("nvmlInit",), ("nvmlShutdown",)]


def test_probe_lists_driver_and_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs: driver, names (bytes decoded), UUIDs and memory; NVML shut down after."""
    fake = install(monkeypatch, fake_pynvml(gpus=2))
    info = gpu.probe()
    assert info["available"] is True and info["reason"] is None
    assert info["driver"] == "550.54.15"
    assert info["count"] == 2
    assert info["gpus"][1] == {
        "index": 1,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-00000001",
        "memory_total_bytes": 80 * 2**30,
    }
    assert fake.calls[-1] == ("nvmlShutdown",)


def test_reader_keeps_other_fields_when_one_query_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU 1 has no power sensor: its power is None, the rest is read; mW become W."""
    install(monkeypatch, fake_pynvml(gpus=2, unsupported={(1, "nvmlDeviceGetPowerUsage")}))
    reader, reason = gpu.open_gpu_reader()
    assert reader is not None and reason is None
    first, second = reader.sample()
    assert first == {
        "index": 0,
        "util_percent": 40.0,
        "mem_used_bytes": 2**30,
        "mem_total_bytes": 80 * 2**30,
        "power_watts": 75.5,
        "temperature_c": 50,
    }
    assert second["power_watts"] is None
    assert (second["util_percent"], second["mem_used_bytes"], second["temperature_c"]) == (41.0, 2 * 2**30, 51)
    reader.close()


def test_reader_close_shuts_nvml_down_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() calls nvmlShutdown, a second close() does not, and a closed reader samples nothing."""
    fake = install(monkeypatch, fake_pynvml(gpus=1))
    reader, _ = gpu.open_gpu_reader()
    assert reader is not None
    reader.close()
    reader.close()
    assert fake.calls.count(("nvmlShutdown",)) == 1
    assert reader.sample() == []


def test_a_misbehaving_pynvml_is_a_reason_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even an error that is not an NVMLError stays inside the GPU module."""
    fake = fake_pynvml(gpus=1)
    fake.nvmlDeviceGetCount = lambda: 1 / 0
    install(monkeypatch, fake)
    info = gpu.probe()
    assert info["available"] is False
    assert "NVML could not list GPUs" in info["reason"]
    assert fake.calls[-1] == ("nvmlShutdown",)


# --- the sampler -------------------------------------------------------------


def wait_for_lines(path: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Poll the metrics file until it holds `count` whole lines (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(lines)} of {count} metrics lines after {timeout}s: {text!r}")
        time.sleep(0.01)


SAMPLE_KEYS = {
    "t",
    "cpu_percent",
    "cpu_count",
    "mem_used_bytes",
    "mem_total_bytes",
    "disk_used_bytes",
    "disk_total_bytes",
    "net_rx_bytes",
    "net_tx_bytes",
    "gpus",
}


def run_sampler(tmp_path: Path, samples: int, gpu_on: bool = True) -> tuple[list[dict[str, Any]], Path]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "data").write_bytes(b"d" * 8192)
    out = tmp_path / "metrics.jsonl"
    sampler = MetricsSampler(str(out), str(work), interval=0.05, gpu=gpu_on)
    sampler.start()
    try:
        wait_for_lines(out, 1 + samples)
    finally:
        sampler.stop()
    return [json.loads(line) for line in out.read_text().splitlines()], out


def test_sampler_writes_real_samples_without_pynvml(tmp_path: Path, no_pynvml: None) -> None:
    """Without pynvml: a gpu line with the reason, then CPU/memory/disk/net samples with gpus == []."""
    lines, out = run_sampler(tmp_path, samples=3)
    header, first, *rest = lines
    assert header["gpu"]["available"] is False
    assert header["gpu"]["reason"] == "pynvml is not installed"
    assert header["gpu"]["count"] == 0
    assert len(rest) >= 2
    for sample in [first, *rest]:
        assert set(sample) == SAMPLE_KEYS
        assert sample["gpus"] == []
        assert isinstance(sample["t"], float)
        for key in SAMPLE_KEYS - {"t", "cpu_percent", "gpus"}:
            assert isinstance(sample[key], int), key
        assert 0 < sample["mem_used_bytes"] < sample["mem_total_bytes"]
        assert sample["disk_used_bytes"] >= 8192
        assert sample["cpu_count"] == os.cpu_count()
        fs = os.statvfs(tmp_path / "work")
        assert sample["disk_total_bytes"] == fs.f_blocks * fs.f_frsize
    assert first["cpu_percent"] is None
    later = [s["cpu_percent"] for s in rest if s["cpu_percent"] is not None]
    assert later and all(isinstance(c, float) and 0.0 <= c <= 100.0 for c in later)
    assert [s["t"] for s in lines] == sorted(s["t"] for s in lines)
    assert (out.stat().st_mode & 0o777) == 0o644
    assert read_samples(str(out)) == (header["gpu"], [first, *rest])


def test_sampler_with_nvml_failing_records_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvmlInit failing: the gpu line says why and samples still come, with no GPU readings."""
    install(monkeypatch, fake_pynvml(init_error="NVML Shared Library Not Found"))
    lines, _ = run_sampler(tmp_path, samples=2)
    assert lines[0]["gpu"]["reason"] == "NVML could not start: NVML Shared Library Not Found"
    assert all(line["gpus"] == [] for line in lines[1:])
    assert not any("error" in line for line in lines)


def test_sampler_reads_fake_gpus_and_shuts_nvml_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fake GPUs: the gpu line lists them, every sample has both, NVML is shut down at stop."""
    fake = install(monkeypatch, fake_pynvml(gpus=2, unsupported={(0, "nvmlDeviceGetTemperature")}))
    lines, _ = run_sampler(tmp_path, samples=2)
    assert lines[0]["gpu"]["count"] == 2 and lines[0]["gpu"]["available"] is True
    for sample in lines[1:]:
        assert [g["index"] for g in sample["gpus"]] == [0, 1]
        assert sample["gpus"][0]["temperature_c"] is None
        assert sample["gpus"][1]["power_watts"] == 76.5
    assert fake.calls.count(("nvmlInit",)) == 1
    assert fake.calls[-1] == ("nvmlShutdown",)


def test_sampler_with_gpu_off_never_imports_pynvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu=False: NVML is not touched, and the gpu line says metrics are off."""
    fake = install(monkeypatch, fake_pynvml(gpus=2))
    lines, _ = run_sampler(tmp_path, samples=1, gpu_on=False)
    assert lines[0]["gpu"]["available"] is False and "off" in lines[0]["gpu"]["reason"]
    assert fake.calls == []


def test_stop_returns_promptly_and_takes_a_final_sample(tmp_path: Path, no_pynvml: None) -> None:
    """With a 60 s interval, stop() wakes the thread at once and a last sample is written."""
    out = tmp_path / "m.jsonl"
    sampler = MetricsSampler(str(out), str(tmp_path), interval=60.0)
    sampler.start()
    wait_for_lines(out, 2)
    began = time.monotonic()
    sampler.stop()
    assert time.monotonic() - began < 5.0
    _, samples = read_samples(str(out))
    assert len(samples) == 2


def test_a_failing_sample_becomes_an_error_line_and_sampling_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pynvml: None
) -> None:
    """An exception while sampling is recorded as {"error": ...}; the thread keeps going."""

    def broken(text: str) -> tuple[int, int]:
        raise ValueError("meminfo is odd today")

    monkeypatch.setattr(agent_metrics, "parse_meminfo", broken)
    out = tmp_path / "m.jsonl"
    sampler = MetricsSampler(str(out), str(tmp_path), interval=0.05)
    sampler.start()
    try:
        lines = wait_for_lines(out, 4)
    finally:
        sampler.stop()
    errors = lines[1:]
    assert all(e["error"] == "ValueError: meminfo is odd today" and isinstance(e["t"], float) for e in errors)
    assert read_samples(str(out))[1] == []


def test_read_samples_tolerates_a_cut_off_last_line(tmp_path: Path) -> None:
    """A half-written last line is skipped; the gpu line and whole samples are kept."""
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"t": 1.0, "gpu": {"available": false, "reason": "x", "count": 0}}\n'
        '{"t": 2.0, "cpu_percent": null, "gpus": []}\n'
        '{"t": 3.0, "error": "boom"}\n'
        '{"t": 4.0, "cpu_percent": 12.5, "gpus": []}\n'
        '{"t": 5.0, "cpu_perc'
    )
    info, samples = read_samples(str(path))
    assert info == {"available": False, "reason": "x", "count": 0}
    assert [s["t"] for s in samples] == [2.0, 4.0]
    assert read_samples(str(tmp_path / "absent")) == (None, [])


# --- coordinator: summarize and to_csv ---------------------------------------


def host_samples() -> list[dict[str, Any]]:
    def gpu_reading(index: int, util: float | None, power: float | None) -> dict[str, Any]:
        return {
            "index": index,
            "util_percent": util,
            "mem_used_bytes": 1000 * (index + 1),
            "mem_total_bytes": 8000,
            "power_watts": power,
            "temperature_c": 60,
        }

    base = {"mem_total_bytes": 100, "disk_used_bytes": 10}
    return [
        {**base, "t": 0.0, "cpu_percent": None, "mem_used_bytes": 10, "net_rx_bytes": 1000, "net_tx_bytes": 0,
         "gpus": [gpu_reading(0, 10.0, 100.0), gpu_reading(1, None, 50.0)]},
        {**base, "t": 5.0, "cpu_percent": 20.0, "mem_used_bytes": 30, "net_rx_bytes": 6000, "net_tx_bytes": 500,
         "gpus": [gpu_reading(0, 30.0, None), gpu_reading(1, None, 70.0)]},
        {**base, "t": 6.0, "cpu_percent": 60.0, "mem_used_bytes": 20, "net_rx_bytes": 9000, "net_tx_bytes": 500,
         "gpus": [gpu_reading(0, 50.0, 300.0)]},
    ]  # fmt: skip


def test_summarize_gives_max_and_mean_ignoring_none() -> None:
    """Gauges: max and mean of the non-None values (the first cpu_percent is None)."""
    summary = coord.summarize(host_samples())
    assert summary["samples"] == 3
    assert summary["cpu_percent"] == {"max": 60.0, "mean": 40.0}
    assert summary["mem_used_bytes"] == {"max": 30, "mean": 20.0}
    assert summary["disk_used_bytes"] == {"max": 10, "mean": 10.0}


def test_summarize_turns_network_counters_into_time_weighted_rates() -> None:
    """rx: 1000 B/s then 3000 B/s over 1 s; max is the fastest interval, mean is 8000 B over 6 s."""
    summary = coord.summarize(host_samples())
    assert summary["net_rx_bytes_per_s"] == {"max": 3000.0, "mean": 8000 / 6}
    assert summary["net_tx_bytes_per_s"] == {"max": 100.0, "mean": 500 / 6}


def test_summarize_skips_an_interval_whose_counter_went_back() -> None:
    """A counter that drops (interface gone, reboot) gives no negative rate."""
    samples = [{"t": 0.0, "net_rx_bytes": 500}, {"t": 1.0, "net_rx_bytes": 100}, {"t": 2.0, "net_rx_bytes": 300}]
    assert coord.summarize(samples)["net_rx_bytes_per_s"] == {"max": 200.0, "mean": 200.0}


def test_summarize_per_gpu() -> None:
    """Each GPU index is summarised on its own; a field never read is None."""
    gpus = coord.summarize(host_samples())["gpus"]
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["util_percent"] == {"max": 50.0, "mean": 30.0}
    assert gpus[0]["power_watts"] == {"max": 300.0, "mean": 200.0}
    assert gpus[1]["util_percent"] is None
    assert gpus[1]["power_watts"] == {"max": 70.0, "mean": 60.0}
    assert gpus[1]["mem_used_bytes"] == {"max": 2000, "mean": 2000.0}


def test_summarize_of_no_samples_has_every_metric_none() -> None:
    """A host that never sampled: every metric None, no GPUs."""
    summary = coord.summarize([])
    assert summary["samples"] == 0 and summary["gpus"] == []
    assert all(summary[k] is None for k in ("cpu_percent", "mem_used_bytes", "net_rx_bytes_per_s"))


def test_to_csv_flattens_hosts_and_gpus_in_a_stable_order() -> None:
    """Header first, hosts in algo order (2 before 10), gpu<i>_ columns, ISO UTC times, blanks for None."""
    cpu_only: list[dict[str, Any]] = [
        {"t": 1700000000.25, "cpu_percent": None, "mem_used_bytes": 1, "mem_total_bytes": 2}
        | {"disk_used_bytes": 3, "net_rx_bytes": 4, "net_tx_bytes": 5, "gpus": []}
    ]
    text = coord.to_csv({"algo-10": cpu_only, "algo-2": host_samples()})
    rows = [line.split(",") for line in text.splitlines()]
    header = rows[0]
    width = 2 + len(coord.CSV_HOST_COLUMNS)
    assert header[:width] == ["host", "time", *coord.CSV_HOST_COLUMNS]
    assert header[width:] == [f"gpu{i}_{f}" for i in (0, 1) for f in coord.CSV_GPU_COLUMNS]
    assert [r[0] for r in rows[1:]] == ["algo-2"] * 3 + ["algo-10"]
    assert all(len(r) == len(header) for r in rows)
    first = dict(zip(header, rows[1], strict=True))
    assert first["time"] == "1970-01-01T00:00:00.000+00:00"
    assert first["cpu_percent"] == ""
    assert first["gpu0_power_watts"] == "100.0" and first["gpu1_util_percent"] == ""
    third = dict(zip(header, rows[3], strict=True))
    assert third["gpu1_temperature_c"] == ""  # GPU 1 missing from that sample
    last = dict(zip(header, rows[4], strict=True))
    assert last["time"] == "2023-11-14T22:13:20.250+00:00"
    assert last["net_tx_bytes"] == "5" and last["gpu0_util_percent"] == ""


def test_to_csv_of_nothing_is_just_the_header() -> None:
    """No hosts: one header line with no GPU columns."""
    assert coord.to_csv({}) == "host,time," + ",".join(coord.CSV_HOST_COLUMNS) + "\n"


# --- SageMaker's CloudWatch names (issue 17 part 7) ----------------------------------------------


def test_sagemaker_values_follow_cloudwatchs_definitions() -> None:
    """CPUUtilization sums the cores (25% of 4 CPUs is 100); GPU metrics sum the GPUs; the rest are 0-100."""
    sample = {
        "cpu_percent": 25.0,
        "cpu_count": 4,
        "mem_used_bytes": 3,
        "mem_total_bytes": 12,
        "disk_used_bytes": 1,
        "disk_total_bytes": 8,
        "gpus": [
            {"index": 0, "util_percent": 50.0, "mem_used_bytes": 1, "mem_total_bytes": 4},
            {"index": 1, "util_percent": 70.0, "mem_used_bytes": 2, "mem_total_bytes": 4},
        ],
    }
    assert coord.sagemaker_values(sample) == {
        "CPUUtilization": 100.0,
        "MemoryUtilization": 25.0,
        "DiskUtilization": 12.5,
        "GPUUtilization": 120.0,
        "GPUMemoryUtilization": 75.0,
    }
    assert tuple(coord.sagemaker_values(sample)) == coord.SAGEMAKER_METRICS


def test_sagemaker_values_are_none_where_a_reading_is_missing() -> None:
    """An older agent (no cpu_count, no disk_total_bytes), no GPUs, a zero total: None, never a guess."""
    old = {"cpu_percent": 40.0, "mem_used_bytes": 1, "mem_total_bytes": 0, "disk_used_bytes": 5, "gpus": []}
    assert set(coord.sagemaker_values(old).values()) == {None}


def test_summarize_and_csv_carry_the_sagemaker_names_and_keep_todays_values() -> None:
    samples = [
        {"t": 0.0, "cpu_percent": 10.0, "cpu_count": 2, "mem_used_bytes": 1, "mem_total_bytes": 4, "gpus": []},
        {"t": 5.0, "cpu_percent": 30.0, "cpu_count": 2, "mem_used_bytes": 3, "mem_total_bytes": 4, "gpus": []},
    ]
    summary = coord.summarize(samples)
    assert summary["cpu_percent"] == {"max": 30.0, "mean": 20.0}  # today's value, unchanged
    assert summary["CPUUtilization"] == {"max": 60.0, "mean": 40.0}
    assert summary["MemoryUtilization"] == {"max": 75.0, "mean": 50.0}
    assert summary["GPUUtilization"] is None
    rows = [line.split(",") for line in coord.to_csv({"algo-1": samples}).splitlines()]
    second = dict(zip(rows[0], rows[2], strict=True))
    assert (second["cpu_percent"], second["CPUUtilization"], second["MemoryUtilization"]) == ("30.0", "60.0", "75.0")
    assert coord.with_sagemaker_values(samples)[0] == {**samples[0], **coord.sagemaker_values(samples[0])}
