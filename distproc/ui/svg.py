"""Drawing primitives for the HTML report: inline SVG line charts, a Gantt
timeline and their legends, all as strings.

Drawn server-side so the report renders with no JavaScript and no network.
Every piece of text passes through `esc`: host names and labels come from
users and the report must never turn them into markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

# Tableau 10: distinguishable, and still readable when printed in grey.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip

_WIDTH = 960
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 24, 12, 44
_CHART_HEIGHT = 240
_ROW_HEIGHT, _BAR_HEIGHT = 26, 16


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Series:
    """One line of a chart; a None value breaks the line (a missed sample)."""

    label: str
    color: str
    points: Sequence[tuple[float, float | None]]


@dataclass(frozen=True)
class Bar:
    """One bar of the timeline, in seconds since the job started."""

    row: int
    start: float
    end: float
    color: str
    tooltip: str
    attrs: Mapping[str, str] = field(default_factory=dict)
    open: bool = False


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """Ticks from 0 to at least `hi` at a 1-2-5 step, so labels read as round numbers."""
    if not hi > 0 or not math.isfinite(hi):
        hi = 1.0
    raw = hi / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(hi / step - 1e-9)
    # Rounding to the step's precision keeps float noise (0.30000000000000004) off the axis.
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(i * step, digits) for i in range(n + 1)]


def fmt_num(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:g}"


def legend(items: Sequence[tuple[str, str]]) -> str:
    """An HTML legend, which wraps by itself however many hosts there are."""
    lis = "".join(
        f'<li><span class="swatch" style="background:{esc(c)}"></span>{esc(label)}</li>' for label, c in items
    )
    return f'<ul class="legend">{lis}</ul>'


def _axes(width: float, height: float, x_max: float, x_label: str, y_label: str | None) -> tuple[list[str], float]:
    """Frame, x grid and labels; returns the parts and the plot width."""
    plot_w = width - _LEFT - _RIGHT
    base = height - _BOTTOM
    parts = [f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_LEFT + plot_w}" y2="{base}"/>']
    # One tick density for every chart, so the timeline and the metrics line up by eye.
    for t in nice_ticks(x_max, 8):
        if t > x_max * 1.001:  # past the data: the x axis ends where the job ended
            break
        x = _LEFT + plot_w * t / x_max
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{base}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{base + 16}" text-anchor="middle">{fmt_num(t)}</text>')
    parts.append(
        f'<text class="axis-label x-label" x="{_LEFT + plot_w / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle">{esc(x_label)}</text>'
    )
    if y_label is not None:
        mid = _TOP + (base - _TOP) / 2
        parts.append(
            f'<text class="axis-label y-label" x="14" y="{mid:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {mid:.1f})">{esc(y_label)}</text>'
        )
    return parts, plot_w


def _svg(title: str, width: float, height: float, parts: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}"><title>{esc(title)}</title>{"".join(parts)}</svg>'
    )


def line_chart(
    title: str, y_label: str, x_label: str, series: Sequence[Series], x_max: float, y_max: float | None = None
) -> str:
    """An SVG line chart; x from 0 to `x_max`, y from 0 to `y_max` or the data's top."""
    x_max = x_max if x_max > 0 else 1.0
    values = [v for s in series for _, v in s.points if v is not None]
    y_ticks = nice_ticks(y_max if y_max is not None else max(values, default=0.0))
    y_top = y_ticks[-1]
    parts, plot_w = _axes(_WIDTH, _CHART_HEIGHT, x_max, x_label, y_label)
    plot_h = _CHART_HEIGHT - _TOP - _BOTTOM

    def y_of(v: float) -> float:
        return _TOP + plot_h * (1 - max(0.0, min(v, y_top)) / y_top)

    for tick in y_ticks:
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_num(tick)}</text>')
    for s in series:
        runs: list[list[str]] = [[]]
        for t, value in s.points:
            if value is None:
                runs.append([])
            else:
                runs[-1].append(f"{_LEFT + plot_w * min(t, x_max) / x_max:.1f},{y_of(value):.1f}")
        shapes = []
        for run in filter(None, runs):
            if len(run) == 1:  # a lone sample has no segment to draw: mark it with a dot
                cx, cy = run[0].split(",")
                shapes.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{esc(s.color)}"/>')
            else:
                shapes.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{esc(s.color)}"/>')
        parts.append(
            f'<g class="series" data-series="{esc(s.label)}"><title>{esc(s.label)}</title>{"".join(shapes)}</g>'
        )
    return _svg(title, _WIDTH, _CHART_HEIGHT, parts)


def figure(
    chart_id: str,
    title: str,
    y_label: str,
    x_label: str,
    series: Sequence[Series],
    x_max: float,
    y_max: float | None = None,
) -> str:
    """A titled line chart with its legend, or a note when there is nothing to draw."""
    drawn = [s for s in series if any(v is not None for _, v in s.points)]
    body = (
        line_chart(title, y_label, x_label, drawn, x_max, y_max) + legend([(s.label, s.color) for s in drawn])
        if drawn
        else '<p class="empty">No samples recorded.</p>'
    )
    return (
        f'<figure class="chart" id="{esc(chart_id)}"><figcaption class="chart-title">{esc(title)}</figcaption>'
        f"{body}</figure>"
    )


def bytes_unit(largest: float) -> tuple[float, str]:
    """The binary unit (divisor, name) that keeps axis labels to a few digits."""
    div, unit = 1.0, "B"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if largest < div * 1024:
            break
        div, unit = div * 1024, name
    return div, unit


def bytes_figure(
    chart_id: str, title: str, what: str, x_label: str, series: Sequence[Series], x_max: float, per: str = ""
) -> str:
    """`figure` for byte counts (or byte rates, with per="/s"), scaled to one readable unit."""
    div, unit = bytes_unit(max((v for s in series for _, v in s.points if v is not None), default=0.0))
    scaled = [Series(s.label, s.color, [(t, None if v is None else v / div) for t, v in s.points]) for s in series]
    return figure(chart_id, title, f"{what} ({unit}{per})", x_label, scaled, x_max)


def gantt(title: str, rows: Sequence[str], bars: Sequence[Bar], x_max: float, x_label: str) -> str:
    """A timeline with one labelled row per entry of `rows`."""
    x_max = x_max if x_max > 0 else 1.0
    height = _TOP + _ROW_HEIGHT * max(len(rows), 1) + _BOTTOM
    parts, plot_w = _axes(_WIDTH, height, x_max, x_label, None)
    for i, name in enumerate(rows):
        y = _TOP + _ROW_HEIGHT * (i + 0.5)
        parts.append(f'<text class="row-label" x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{esc(name)}</text>')
    for b in bars:
        x0 = _LEFT + plot_w * max(0.0, min(b.start, x_max)) / x_max
        x1 = _LEFT + plot_w * max(0.0, min(b.end, x_max)) / x_max
        y = _TOP + _ROW_HEIGHT * b.row + (_ROW_HEIGHT - _BAR_HEIGHT) / 2
        extra = "".join(f' {esc(k)}="{esc(v)}"' for k, v in b.attrs.items())
        # 2 px at least: an instant phase (container_exited) must still be visible.
        parts.append(
            f'<rect class="phase-bar{" open" if b.open else ""}"{extra} x="{x0:.1f}" y="{y:.1f}" '
            f'width="{max(x1 - x0, 2.0):.1f}" height="{_BAR_HEIGHT}" fill="{esc(b.color)}">'
            f"<title>{esc(b.tooltip)}</title></rect>"
        )
    return _svg(title, _WIDTH, height, parts)
