"""Host metrics on the coordinator: per-host summaries and the CSV series.

The samples are the agent's metrics lines (distproc/agent/metrics.py), read
back with read_samples. Everything here is pure: plain data in, plain data
out, so `describe` and `distproc metrics` share it and tests need no host.

    >>> summarize([{"t": 0.0, "cpu_percent": None}, {"t": 5.0, "cpu_percent": 40.0}])["cpu_percent"]
    {'max': 40.0, 'mean': 40.0}
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

# Gauges: summarised as read, one value per sample.
HOST_GAUGES = ("cpu_percent", "mem_used_bytes", "disk_used_bytes")
GPU_GAUGES = ("util_percent", "mem_used_bytes", "power_watts", "temperature_c")
# Counters since boot, summarised as bytes per second between samples.
NET_COUNTERS = (("net_rx_bytes", "net_rx_bytes_per_s"), ("net_tx_bytes", "net_tx_bytes_per_s"))

#: SageMaker's CloudWatch metrics for processing jobs (namespace /aws/sagemaker/ProcessingJobs,
#: dimension Host = <job>/algo-K), all in CloudWatch's unit Percent, as AWS's "Metrics for
#: monitoring Amazon SageMaker AI with Amazon CloudWatch" (monitoring-cloudwatch) defines them:
#: CPUUtilization is the sum over cores (0-100 each: 0-400 with 4 vCPUs); GPUUtilization and
#: GPUMemoryUtilization are summed over GPUs likewise; MemoryUtilization and DiskUtilization are 0-100.
#: distproc derives them from its own readings (sagemaker_values), which it keeps too.
SAGEMAKER_METRICS = ("CPUUtilization", "MemoryUtilization", "DiskUtilization", "GPUUtilization", "GPUMemoryUtilization")
SAGEMAKER_UNIT = "Percent"

CSV_HOST_COLUMNS = (
    "cpu_percent",
    "mem_used_bytes",
    "mem_total_bytes",
    "disk_used_bytes",
    "net_rx_bytes",
    "net_tx_bytes",
    "cpu_count",
    "disk_total_bytes",
    *SAGEMAKER_METRICS,
)
CSV_GPU_COLUMNS = ("util_percent", "mem_used_bytes", "mem_total_bytes", "power_watts", "temperature_c")

Stat = dict[str, float] | None


def _number(value: Any) -> float | None:
    # bool is an int to Python but never a reading.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _stat(values: Iterable[Any]) -> Stat:
    numbers = [n for n in (_number(v) for v in values) if n is not None]
    if not numbers:
        return None
    return {"max": max(numbers), "mean": sum(numbers) / len(numbers)}


def _rate(samples: list[dict[str, Any]], key: str) -> Stat:
    """Max of the per-interval rates; mean as total bytes over total time.

    An interval is skipped when either end lacks the counter or the time, when
    time does not advance, or when the counter goes back (an interface went
    away or the host rebooted), since its delta then means nothing. Weighting
    the mean by time keeps the short interval before the final sample from
    counting as much as a full one.
    """
    rates: list[float] = []
    moved = elapsed = 0.0
    for before, after in itertools.pairwise(samples):
        t0, t1 = _number(before.get("t")), _number(after.get("t"))
        v0, v1 = _number(before.get(key)), _number(after.get(key))
        if t0 is None or t1 is None or v0 is None or v1 is None or t1 <= t0 or v1 < v0:
            continue
        rates.append((v1 - v0) / (t1 - t0))
        moved += v1 - v0
        elapsed += t1 - t0
    if not rates:
        return None
    return {"max": max(rates), "mean": moved / elapsed}


def _percent(part: Any, whole: Any) -> float | None:
    p, w = _number(part), _number(whole)
    return None if p is None or w is None or w <= 0 else round(100.0 * p / w, 2)


def _sum(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present), 2) if present else None


def sagemaker_values(sample: dict[str, Any]) -> dict[str, float | None]:
    """One sample's SAGEMAKER_METRICS, in percent; None where a reading is missing.

    CPUUtilization is the host's CPU share times its CPU count (SageMaker sums the
    cores); memory is MemTotal - MemAvailable over MemTotal; disk is the job's folder
    over the size of its file system (on SageMaker the job has a volume of its own,
    here it shares the host's); the GPU metrics are summed over the host's GPUs.
    A sample from an agent without cpu_count or disk_total_bytes gives None for those.
    """
    cpu, count = _number(sample.get("cpu_percent")), _number(sample.get("cpu_count"))
    gpus = [r for r in sample.get("gpus") or () if isinstance(r, dict)]
    return {
        "CPUUtilization": None if cpu is None or count is None else round(cpu * count, 2),
        "MemoryUtilization": _percent(sample.get("mem_used_bytes"), sample.get("mem_total_bytes")),
        "DiskUtilization": _percent(sample.get("disk_used_bytes"), sample.get("disk_total_bytes")),
        "GPUUtilization": _sum(_number(g.get("util_percent")) for g in gpus),
        "GPUMemoryUtilization": _sum(_percent(g.get("mem_used_bytes"), g.get("mem_total_bytes")) for g in gpus),
    }


def with_sagemaker_values(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples as read, each with its SAGEMAKER_METRICS added (`distproc metrics`)."""
    return [{**s, **sagemaker_values(s)} for s in samples]


def _gpu_indexes(samples: Iterable[dict[str, Any]]) -> list[int]:
    found = set()
    for sample in samples:
        for reading in sample.get("gpus") or ():
            index = reading.get("index") if isinstance(reading, dict) else None
            if isinstance(index, int) and not isinstance(index, bool):
                found.add(index)
    return sorted(found)


def _gpu_readings(sample: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["index"]: r for r in sample.get("gpus") or () if isinstance(r, dict) and isinstance(r.get("index"), int)}


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Max and mean of each metric of one host's samples, None values ignored.

    Returns {"samples": n, "cpu_percent": {"max", "mean"}, "mem_used_bytes": ...,
    "disk_used_bytes": ..., "CPUUtilization": ... (each of SAGEMAKER_METRICS),
    "net_rx_bytes_per_s": ..., "net_tx_bytes_per_s": ...,
    "gpus": [{"index": 0, "util_percent": {"max", "mean"}, "mem_used_bytes": ...,
    "power_watts": ..., "temperature_c": ...}]}; a metric with no value at all
    is None. Network counters become rates (see _rate), since their raw
    values count from boot.
    """
    summary: dict[str, Any] = {"samples": len(samples)}
    for key in HOST_GAUGES:
        summary[key] = _stat(s.get(key) for s in samples)
    named = [sagemaker_values(s) for s in samples]
    for key in SAGEMAKER_METRICS:
        summary[key] = _stat(v[key] for v in named)
    for counter, name in NET_COUNTERS:
        summary[name] = _rate(samples, counter)
    readings = [_gpu_readings(s) for s in samples]
    gpus = []
    for index in _gpu_indexes(samples):
        entry: dict[str, Any] = {"index": index}
        for key in GPU_GAUGES:
            entry[key] = _stat(r[index].get(key) for r in readings if index in r)
        gpus.append(entry)
    summary["gpus"] = gpus
    return summary


def _host_order(name: str) -> tuple[str, int]:
    # algo-2 before algo-10.
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def _iso(t: Any) -> str:
    seconds = _number(t)
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _cell(value: Any) -> Any:
    return "" if value is None else value


def to_csv(series: dict[str, list[dict[str, Any]]]) -> str:
    """The samples of every host as CSV text, header first.

    Columns: host, time (ISO-8601 UTC), the CSV_HOST_COLUMNS, then for every
    GPU index seen on any host gpu<i>_<field> for the CSV_GPU_COLUMNS. Rows go
    host by host (algo-1, algo-2, ..., algo-10), each host's in sample order.
    Network columns are the raw counters; an absent value is an empty cell.
    """
    indexes = _gpu_indexes(s for samples in series.values() for s in samples)
    gpu_columns = [(i, f) for i in indexes for f in CSV_GPU_COLUMNS]
    header = ["host", "time", *CSV_HOST_COLUMNS, *(f"gpu{i}_{f}" for i, f in gpu_columns)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for host in sorted(series, key=_host_order):
        for sample in series[host]:
            readings = _gpu_readings(sample)
            row = [host, _iso(sample.get("t"))]
            values = {**sample, **sagemaker_values(sample)}
            row += [_cell(values.get(key)) for key in CSV_HOST_COLUMNS]
            row += [_cell(readings.get(i, {}).get(f)) for i, f in gpu_columns]
            writer.writerow(row)
    return out.getvalue()
