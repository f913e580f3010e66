"""The HTML report: escaped, self-contained, and rendered by a real browser."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from distproc.ui.report import PHASES, render_report
from tests.browser import Elements, run_chromium

T0 = 1_700_000_000.0
GiB = 1024**3


def metrics(n: int, *, gpus: int = 0, offset: float = 0.0) -> list[dict[str, Any]]:
    """n samples two seconds apart, with counters that keep rising."""
    return [
        {
            "t": T0 + 2 + 2 * i,
            "cpu_percent": (37.0 * i + offset) % 100,
            "mem_used_bytes": int((2 + i % 5 + offset / 10) * GiB),
            "mem_total_bytes": 16 * GiB,
            "disk_used_bytes": int((40 + offset + i * 0.5) * GiB),
            "net_rx_bytes": int(i * (i + 1) * (5 + offset / 10) * 1e6),
            "net_tx_bytes": int(i * (3 + offset / 10) * 1e6),
            "gpus": [
                {
                    "index": g,
                    "util_percent": (20.0 * i + 30 * g + offset) % 100,
                    "mem_used_bytes": (1 + i % 3 + g) * GiB,
                    "mem_total_bytes": 24 * GiB,
                    "power_watts": 150.0,
                    "temperature_c": 60,
                }
                for g in range(gpus)
            ],
        }
        for i in range(n)
    ]


def timeline(
    phases: tuple[str, ...] = PHASES, *, stretch: float = 1.0, last_open: bool = False
) -> list[dict[str, Any]]:
    """Back-to-back phases; the last one has no end when `last_open`."""
    out, t = [], T0
    for k, name in enumerate(phases):
        length = 0.0 if name == "container_exited" else (3.0 + 4 * k) * stretch
        out.append({"Phase": name, "Start": t, "End": t + length})
        t += length
    if last_open and out:
        out[-1]["End"] = None
    return out


def host(k: int, *, samples: int = 20, gpus: int = 0, **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Host": f"algo-{k}",
        "InventoryHost": f"h{k}",
        "Status": "Completed",
        "ExitCode": 0,
        "Timeline": timeline(stretch=1 + 0.15 * (k - 1)),
        "Metrics": metrics(samples, gpus=gpus, offset=10.0 * k),
        "GpuNote": None if gpus else "pynvml is not installed",
    }
    doc.update(kw)
    return doc


def job(hosts: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ProcessingJobName": "my-job",
        "ProcessingJobStatus": "Completed",
        "FailureReason": None,
        "ExitMessage": None,
        "CreationTime": "2023-11-14T22:13:19.000+00:00",
        "ProcessingStartTime": "2023-11-14T22:13:20.000+00:00",
        "ProcessingEndTime": "2023-11-14T22:14:40.000+00:00",
        "Hosts": hosts,
    }
    doc.update(kw)
    return doc


def test_user_text_is_escaped() -> None:
    """A job name, host name or message holding markup shows as text, never as a tag."""
    evil = "<script>alert(1)</script>"
    h = host(1, Host=f"algo-1{evil}", InventoryHost=f'h1"{evil}', Status=evil)
    html = render_report(job([h], ProcessingJobName=f"job{evil}", ExitMessage=evil, FailureReason=evil))
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = Elements(html)
    assert not [t for t, _ in page.elements if t == "script"]
    assert f"job{evil}" in "".join(page.text)


def test_page_needs_no_network() -> None:
    """Nothing on the page points outside it: no external scripts, styles, fonts or images."""
    html = render_report(job([host(1, gpus=1), host(2)]))
    for needle in ('src="http', "src='http", 'href="http', "@import", "url(http", "url(//", "<link", "<script"):
        assert needle not in html.lower(), needle
    # And the browser is told so: no scripts and no fetches, whatever slipped into the page.
    assert "default-src 'none'" in html
    # The only URL in the page is SVG's namespace, which is a name, not a fetch.
    assert set(re.findall(r"https?://[^\s\"')]+", html)) == {"http://www.w3.org/2000/svg"}


def test_one_bar_per_phase_given() -> None:
    """Each host's row has exactly the phases it reported, tagged with host and phase."""
    hosts = [host(1), host(2, Timeline=timeline(PHASES[:3], last_open=True)), host(3, Timeline=[])]
    page = Elements(render_report(job(hosts)))
    bars = page.with_class("phase-bar")
    assert len(bars) == len(PHASES) + 3
    assert [b["data-phase"] for b in bars if b["data-host"] == "algo-2"] == list(PHASES[:3])
    assert [b["data-phase"] for b in bars if "open" in (b["class"] or "").split()] == [PHASES[2]]
    assert [r["data-host"] for r in page.with_class("host-row")] == ["algo-1", "algo-2", "algo-3"]


def test_gpu_charts_only_with_gpu_samples() -> None:
    """GPU charts appear only when some host sampled a GPU; hosts without one show why."""
    without = Elements(render_report(job([host(1), host(2)])))
    assert "chart-gpu-util" not in without.ids()
    assert "chart-gpu-mem" not in without.ids()
    assert [n["data-host"] for n in without.with_class("gpu-note") if n.get("data-host")] == ["algo-1", "algo-2"]
    assert "pynvml is not installed" in "".join(without.text)

    mixed = Elements(render_report(job([host(1, gpus=2), host(2)])))
    assert {"chart-gpu-util", "chart-gpu-mem"} <= mixed.ids()
    series = [a["data-series"] for t, a in mixed.elements if t == "g" and "series" in (a.get("class") or "")]
    assert {"algo-1 gpu0", "algo-1 gpu1"} <= set(series)
    assert "algo-2 gpu0" not in series
    assert [n["data-host"] for n in mixed.with_class("gpu-note") if n.get("data-host")] == ["algo-2"]


def test_empty_and_single_sample_metrics_render() -> None:
    """No samples gives a note per chart; one sample draws a dot, not an invisible line."""
    empty = render_report(job([host(1, samples=0, Timeline=[])], ProcessingStartTime=None, ProcessingEndTime=None))
    assert empty.count('class="empty"') == 5  # cpu, memory, rx, tx, disk
    single = render_report(job([host(1, samples=1)]))
    cpu = single.split('id="chart-cpu"')[1].split("</figure>")[0]
    assert "<circle" in cpu
    # A rate needs two samples: with one, the network charts say so rather than draw nothing.
    assert (
        'id="chart-net-rx"><figcaption class="chart-title">Network received (rx)</figcaption><p class="empty">'
        in single
    )


def test_charts_have_titles_and_axis_labels() -> None:
    """Every chart names what it plots and both its axes, in units a person reads."""
    page = Elements(render_report(job([host(1), host(2)])))
    text = "".join(page.text)
    for title in ("Per-phase timeline", "CPU utilisation", "Memory used", "Network received (rx)", "Disk used"):
        assert title in text
    for label in ("Seconds since job start", "CPU (%)", "Memory (GiB)", "Rate (MiB/s)", "Disk (GiB)"):
        assert label in text


def test_browser_renders_the_report(tmp_path: Path) -> None:
    """Chromium, offline, shows the host rows, the timeline bars and every chart, and paints them."""
    doc = job([host(1, gpus=2), host(2, gpus=1), host(3, Timeline=timeline(PHASES[:5], last_open=True))])
    page = tmp_path / "report.html"
    page.write_text(render_report(doc), encoding="utf-8")

    dom = Elements(run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout)
    assert [r["data-host"] for r in dom.with_class("host-row")] == ["algo-1", "algo-2", "algo-3"]
    assert len(dom.with_class("phase-bar")) == 2 * len(PHASES) + 5
    ids = dom.ids()
    assert {"timeline", "hosts", "chart-cpu", "chart-mem", "chart-net-rx", "chart-net-tx", "chart-disk"} <= ids
    assert {"chart-gpu-util", "chart-gpu-mem"} <= ids
    text = "".join(dom.text)
    for title in ("Per-phase timeline", "CPU utilisation", "Network sent (tx)", "GPU utilisation", "GPU memory used"):
        assert title in text

    shot = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1400, 2000)
    # A blank or text-only page compresses to a few kB; bars and lines in colour do not.
    assert len(png) > 40_000, len(png)


def test_report_shows_sagemakers_cloudwatch_metrics_per_host() -> None:
    """A table of CPUUtilization, ... (max / mean, percent), from the same samples the charts draw."""
    samples = [
        {"t": T0 + 2, "cpu_percent": 10.0, "cpu_count": 4, "mem_used_bytes": GiB, "mem_total_bytes": 4 * GiB},
        {"t": T0 + 4, "cpu_percent": 30.0, "cpu_count": 4, "mem_used_bytes": 3 * GiB, "mem_total_bytes": 4 * GiB},
    ]
    html = render_report(job([host(1, Metrics=samples), host(2, samples=0)]))
    table = html.split('<table id="cloudwatch">')[1].split("</table>")[0]
    page = Elements(table)
    assert [c for c in page.text if c.endswith("Utilization")] == [
        "CPUUtilization",
        "MemoryUtilization",
        "DiskUtilization",
        "GPUUtilization",
        "GPUMemoryUtilization",
    ]
    row1 = table.split('data-host="algo-1"')[1].split("</tr>")[0]
    assert re.findall(r'<td class="num">([^<]*)</td>', row1) == ["120.0 / 80.0", "75.0 / 50.0", "—", "—", "—"]
    row2 = table.split('data-host="algo-2"')[1].split("</tr>")[0]
    assert re.findall(r'<td class="num">([^<]*)</td>', row2) == ["—"] * 5
