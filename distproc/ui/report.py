"""`distproc report`: one self-contained HTML page for a job (pure).

The page carries its own CSS and draws every chart as inline SVG, so it can be
mailed, attached to a ticket or opened offline and render the same, with no
JavaScript. A Content-Security-Policy forbids scripts and any network fetch,
so even a bug in escaping could not make the page run or load anything.

    html = render_report(doc)   # doc: describe's document plus Timeline/Metrics per host
    Path("report.html").write_text(html, encoding="utf-8")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..store.metrics import SAGEMAKER_METRICS, summarize
from .svg import PALETTE, Bar, Series, bytes_figure, color, esc, figure, gantt, legend

__all__ = ["PHASES", "render_report"]

PHASES = (
    "queued",  # Slurm: from submission to allocation
    "connect",
    "agent_ready",
    "image_pull",
    "inputs_staged",
    "container_running",
    "container_exited",
    "outputs_uploaded",
)
_PHASE_COLORS = dict(zip(PHASES, PALETTE, strict=False))
_OTHER_PHASE_COLOR = "#888888"
_X_LABEL = "Seconds since job start"

_CSS = """
body{font:14px/1.4 "DejaVu Sans",Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:0}dt{font-weight:bold}dd{margin:0}
pre{white-space:pre-wrap;background:#f6f6f6;border-left:4px solid #e15759;padding:6px 10px}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#f3f3f3;white-space:normal}td.num{text-align:right}
.status{font-weight:bold}.status-Completed{color:#2a7a2a}.status-Failed{color:#c0392b}.status-Stopped{color:#b8860b}
figure{margin:12px 0 20px}figcaption{font-weight:bold;margin-bottom:4px}svg{width:100%;height:auto;display:block}
svg text{font-size:12px;fill:#333}svg .axis{stroke:#555}svg .grid{stroke:#e6e6e6}
svg polyline{stroke-width:1.8}svg .phase-bar.open{stroke:#333;stroke-dasharray:3 2}
.legend{list-style:none;padding:0;margin:4px 0 0 72px;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
.empty,.gpu-note{color:#666;font-style:italic;white-space:normal}
td .gpu-note{display:inline-block;min-width:12em}
"""
# No scripts, no fetches of any kind; inline styles only (and data: images, should one appear).
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


# Parsed once at the edge. Every field is optional: documents come from jobs
# that failed early, from older stores, or from hosts whose sampler broke.
@dataclass(frozen=True)
class _Phase:
    name: str
    start: float
    end: float | None


@dataclass(frozen=True)
class _Gpu:
    index: int
    util: float | None
    mem: float | None


@dataclass(frozen=True)
class _Sample:
    t: float
    cpu: float | None
    mem: float | None
    disk: float | None
    rx: float | None
    tx: float | None
    gpus: tuple[_Gpu, ...]


@dataclass(frozen=True)
class _Host:
    algo: str
    inventory: str
    status: str
    exit_code: int | None
    phases: tuple[_Phase, ...]
    samples: tuple[_Sample, ...]
    gpu_note: str | None
    #: SAGEMAKER_METRICS name -> {"max", "mean"} over the samples (None: no reading).
    cloudwatch: Mapping[str, Mapping[str, float] | None]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _host(h: Mapping[str, Any]) -> _Host:
    phases = tuple(
        _Phase(str(p.get("Phase", "?")), start, _num(p.get("End")))
        for p in h.get("Timeline") or ()
        if (start := _num(p.get("Start"))) is not None
    )
    samples = tuple(
        _Sample(
            t,
            _num(s.get("cpu_percent")),
            _num(s.get("mem_used_bytes")),
            _num(s.get("disk_used_bytes")),
            _num(s.get("net_rx_bytes")),
            _num(s.get("net_tx_bytes")),
            tuple(
                _Gpu(int(_num(g.get("index")) or i), _num(g.get("util_percent")), _num(g.get("mem_used_bytes")))
                for i, g in enumerate(s.get("gpus") or ())
            ),
        )
        for s in sorted(h.get("Metrics") or (), key=lambda s: _num(s.get("t")) or 0.0)
        if (t := _num(s.get("t"))) is not None
    )
    code = h.get("ExitCode")
    note = h.get("GpuNote")
    return _Host(
        algo=str(h.get("Host", "?")),
        inventory=str(h.get("InventoryHost") or ""),
        status=str(h.get("Status") or ""),
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        phases=phases,
        samples=samples,
        gpu_note=None if note is None else str(note),
        cloudwatch={
            k: v
            for k, v in summarize([dict(s) for s in h.get("Metrics") or () if isinstance(s, Mapping)]).items()
            if k in SAGEMAKER_METRICS
        },
    )


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if isinstance(iso, str) else None
    except ValueError:
        return None


def _span(doc: Mapping[str, Any], hosts: Sequence[_Host]) -> tuple[float, float]:
    """The job's (start, end) in epoch seconds: the x range shared by every chart."""
    events = [t for h in hosts for p in h.phases for t in (p.start, p.end) if t is not None]
    events += [s.t for h in hosts for s in h.samples]
    started = [t for key in ("ProcessingStartTime", "CreationTime") if (t := _epoch(doc.get(key))) is not None]
    # Connecting may precede the recorded start; never let a bar begin left of zero.
    origin = min(events + started[:1], default=0.0)
    ended = _epoch(doc.get("ProcessingEndTime"))
    end = max([*events, origin] if ended is None else [*events, origin, ended])
    return origin, end


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m {s:02d}s" if m < 60 else f"{m // 60}h {m % 60:02d}m"


def _header(doc: Mapping[str, Any], origin: float, end: float) -> str:
    status = str(doc.get("ProcessingJobStatus") or "Unknown")
    rows = [("Status", f'<span class="status status-{esc(status)}">{esc(status)}</span>')]
    for label, key in (("Created", "CreationTime"), ("Started", "ProcessingStartTime"), ("Ended", "ProcessingEndTime")):
        rows.append((label, esc(doc.get(key) or "—")))
    rows.append(("Duration", _duration(end - origin)))
    out = [f'<h1 id="job-name">{esc(doc.get("ProcessingJobName") or "?")}</h1><dl id="summary">']
    out += [f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows]
    out.append("</dl>")
    for key, el_id in (("FailureReason", "failure-reason"), ("ExitMessage", "exit-message")):
        if doc.get(key):
            out.append(f'<h2>{key}</h2><pre id="{el_id}">{esc(doc[key])}</pre>')
    return "".join(out)


def _phase_names(hosts: Sequence[_Host]) -> list[str]:
    seen = {p.name for h in hosts for p in h.phases}
    return [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))


def _gpu_cell(h: _Host) -> str:
    n = len({g.index for s in h.samples for g in s.gpus})
    return str(n) if n else f'<span class="gpu-note">{esc(h.gpu_note or "none reported")}</span>'


def _table(hosts: Sequence[_Host], phases: Sequence[str], end: float) -> str:
    head = ["Host", "Inventory host", "Status", "Exit code", *phases, "GPUs"]
    # Phase names are long single words: <wbr> lets a header break after "_" and keeps the table narrow.
    ths = "".join(f"<th>{esc(c).replace('_', '_<wbr>')}</th>" for c in head)
    out = [f'<table id="hosts"><thead><tr>{ths}</tr></thead><tbody>']
    for h in hosts:
        by_name = {p.name: p for p in h.phases}
        cells = [esc(h.algo), esc(h.inventory), f'<span class="status status-{esc(h.status)}">{esc(h.status)}</span>']
        cells.append("—" if h.exit_code is None else str(h.exit_code))
        for name in phases:
            p = by_name.get(name)
            if p is None:
                cells.append("—")
            elif p.end is None:  # no recorded end: it ran at least until the job's end
                cells.append(f"≥ {_duration(end - p.start)}")
            else:
                cells.append(_duration(p.end - p.start))
        cells.append(_gpu_cell(h))
        tds = "".join(
            f'<td class="num">{c}</td>' if 3 <= i < len(cells) - 1 else f"<td>{c}</td>" for i, c in enumerate(cells)
        )
        out.append(f'<tr class="host-row" data-host="{esc(h.algo)}">{tds}</tr>')
    return "".join(out) + "</tbody></table>"


def _cloudwatch(hosts: Sequence[_Host]) -> str:
    """Each host's SageMaker CloudWatch metrics (CPUUtilization, ...), max / mean, in percent."""

    def cell(stat: Mapping[str, float] | None) -> str:
        return "—" if stat is None else f"{stat['max']:.1f} / {stat['mean']:.1f}"

    ths = "".join(f"<th>{esc(c)}</th>" for c in ("Host", *SAGEMAKER_METRICS))
    rows = "".join(
        f'<tr data-host="{esc(h.algo)}"><td>{esc(h.algo)}</td>'
        + "".join(f'<td class="num">{cell(h.cloudwatch.get(k))}</td>' for k in SAGEMAKER_METRICS)
        + "</tr>"
        for h in hosts
    )
    return (
        '<table id="cloudwatch"><caption>SageMaker\'s CloudWatch metrics, in percent: max / mean over the'
        " samples (CPU and GPU ones summed over cores and GPUs, as SageMaker does)</caption>"
        f"<thead><tr>{ths}</tr></thead><tbody>{rows}</tbody></table>"
    )


def _timeline(hosts: Sequence[_Host], phases: Sequence[str], origin: float, end: float) -> str:
    bars = [
        Bar(
            row=i,
            start=p.start - origin,
            end=(p.end if p.end is not None else end) - origin,
            color=_PHASE_COLORS.get(p.name, _OTHER_PHASE_COLOR),
            tooltip=f"{h.algo} {p.name}: from {p.start - origin:.1f} s to "
            + (f"{p.end - origin:.1f} s" if p.end is not None else "(no end recorded)"),
            attrs={"data-host": h.algo, "data-phase": p.name},
            open=p.end is None,
        )
        for i, h in enumerate(hosts)
        for p in h.phases
    ]
    svg = gantt("Per-phase timeline", [h.algo for h in hosts], bars, end - origin, _X_LABEL)
    keys = legend([(p, _PHASE_COLORS.get(p, _OTHER_PHASE_COLOR)) for p in phases])
    return f'<figure id="timeline"><figcaption class="chart-title">Per-phase timeline</figcaption>{svg}{keys}</figure>'


Getter = Callable[[_Sample], float | None]


def _lines(hosts: Sequence[_Host], origin: float, get: Getter) -> list[Series]:
    return [Series(h.algo, color(i), [(s.t - origin, get(s)) for s in h.samples]) for i, h in enumerate(hosts)]


def _rates(hosts: Sequence[_Host], origin: float, get: Getter) -> list[Series]:
    """Per-second rates from cumulative counters; a counter that went back (a reset) leaves a gap."""
    out = []
    for i, h in enumerate(hosts):
        pts: list[tuple[float, float | None]] = []
        for a, b in zip(h.samples, h.samples[1:], strict=False):
            va, vb = get(a), get(b)
            if va is not None and vb is not None and vb >= va and b.t > a.t:
                pts.append((b.t - origin, (vb - va) / (b.t - a.t)))
            else:  # a missed read or a counter reset: a gap, not a spike
                pts.append((b.t - origin, None))
        out.append(Series(h.algo, color(i), pts))
    return out


def _gpu_lines(hosts: Sequence[_Host], origin: float, get: Callable[[_Gpu], float | None]) -> list[Series]:
    """One line per host and GPU, labelled "algo-K gpuN"."""
    keys = sorted({(i, g.index) for i, h in enumerate(hosts) for s in h.samples for g in s.gpus})
    out = []
    for n, (i, idx) in enumerate(keys):
        h = hosts[i]
        pts = [(s.t - origin, next((get(g) for g in s.gpus if g.index == idx), None)) for s in h.samples]
        out.append(Series(f"{h.algo} gpu{idx}", color(n), pts))
    return out


def _metrics(hosts: Sequence[_Host], origin: float, end: float) -> str:
    x = end - origin
    cpu = _lines(hosts, origin, lambda s: s.cpu)
    top = max((v for s in cpu for _, v in s.points if v is not None), default=0.0)
    out = [
        figure("chart-cpu", "CPU utilisation", "CPU (%)", _X_LABEL, cpu, x, max(100.0, top)),
        bytes_figure("chart-mem", "Memory used", "Memory", _X_LABEL, _lines(hosts, origin, lambda s: s.mem), x),
        bytes_figure(
            "chart-net-rx", "Network received (rx)", "Rate", _X_LABEL, _rates(hosts, origin, lambda s: s.rx), x, "/s"
        ),
        bytes_figure(
            "chart-net-tx", "Network sent (tx)", "Rate", _X_LABEL, _rates(hosts, origin, lambda s: s.tx), x, "/s"
        ),
        bytes_figure("chart-disk", "Disk used", "Disk", _X_LABEL, _lines(hosts, origin, lambda s: s.disk), x),
    ]
    if any(s.gpus for h in hosts for s in h.samples):
        util = _gpu_lines(hosts, origin, lambda g: g.util)
        out.append(figure("chart-gpu-util", "GPU utilisation", "GPU (%)", _X_LABEL, util, x, 100.0))
        mem = _gpu_lines(hosts, origin, lambda g: g.mem)
        out.append(bytes_figure("chart-gpu-mem", "GPU memory used", "GPU memory", _X_LABEL, mem, x))
    notes = [
        f'<p class="gpu-note" data-host="{esc(h.algo)}">{esc(h.algo)}: no GPU samples '
        f"({esc(h.gpu_note or 'none reported')})</p>"
        for h in hosts
        if not any(s.gpus for s in h.samples)
    ]
    return "".join(out) + (f'<div id="gpu-notes">{"".join(notes)}</div>' if notes else "")


def render_report(doc: Mapping[str, Any]) -> str:
    """The whole report as one HTML document; every user-supplied string is escaped."""
    hosts = [_host(h) for h in doc.get("Hosts") or () if isinstance(h, Mapping)]
    origin, end = _span(doc, hosts)
    phases = _phase_names(hosts)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>distproc report: {esc(doc.get('ProcessingJobName') or '?')}</title><style>{_CSS}</style></head><body>"
        f"{_header(doc, origin, end)}"
        f"<h2>Hosts</h2>{_table(hosts, phases, end)}"
        f"<h2>Timeline</h2>{_timeline(hosts, phases, origin, end)}"
        f'<h2>Metrics</h2>{_cloudwatch(hosts)}<section id="metrics">{_metrics(hosts, origin, end)}</section>'
        "</body></html>\n"
    )
