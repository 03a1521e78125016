"""Small SVG line charts for the reports: population by year, a BLS series beside the population.

Hand-written SVG, no plotting library: two charts of a dozen points do not justify ~40 MB of
matplotlib in the Lambda zip and its import at every cold start. An SVG file is stored with the
reports (`reports/<ts>/*.svg`, linked from summary.md) and shown in the Prefect UI as a Markdown
image with a `data:` URI (Prefect's artifact renderer drops inline `<svg>` but shows images).
Pure: strings in, a string out; colours fixed on a white card so it reads in light and dark themes.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, PANEL_HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 720, 220, 92, 24, 40, 34
COLOURS = ("#2563eb", "#dc2626")
BAND = "#fde68a"


@dataclass(frozen=True)
class Panel:
    """One chart panel: a line through (year, value) points; a gap in the years breaks the line."""

    title: str
    points: Sequence[tuple[int, float]]
    band: tuple[int, int] | None = None  # years to shade, e.g. the 2013–2018 window
    band_label: str = ""


def short_number(value: float) -> str:
    """Axis labels: `316.1M`, `4.2k`, `12.5`."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.3g}"


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for mult in (1, 2, 2.5, 5, 10):
        if (high - low) / (step * mult) <= count:
            step *= mult
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _panel(panel: Panel, years: Sequence[int], top: float, colour: str) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PANEL_HEIGHT - TOP - BOTTOM
    y0 = top + TOP
    out = [f'<text x="{LEFT}" y="{top + 24}" font-size="15" font-weight="bold">{escape(panel.title)}</text>']
    if not panel.points:
        out.append(f'<text x="{LEFT}" y="{y0 + plot_h / 2}" font-size="13">no data</text>')
        return out
    first, last = min(years), max(years)
    values = [v for _, v in panel.points]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad

    def x(year: float) -> float:
        return LEFT + (plot_w * (year - first) / (last - first) if last > first else plot_w / 2)

    def y(value: float) -> float:
        return y0 + plot_h - plot_h * (value - low) / (high - low)

    if panel.band is not None:
        a, b = max(panel.band[0], first), min(panel.band[1], last)
        if a <= b:
            x_a, x_b = x(a - 0.5 if a > first else a), x(b + 0.5 if b < last else b)
            out.append(
                f'<rect x="{x_a:.1f}" y="{y0}" width="{x_b - x_a:.1f}" height="{plot_h}" fill="{BAND}"/>'
            )
            label = escape(panel.band_label)
            out.append(f'<text x="{x_a + 4:.1f}" y="{y0 + 14}" font-size="11" fill="#92400e">{label}</text>')
    for tick in _ticks(low, high):
        at = y(tick)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{at:.1f}" y2="{at:.1f}" stroke="#e5e7eb"/>')
        label = short_number(tick)
        out.append(f'<text x="{LEFT - 6}" y="{at + 4:.1f}" font-size="11" text-anchor="end">{label}</text>')
    step = max(1, math.ceil(len(years) / 12))
    for year in years[::step]:
        at_x, at_y = x(year), y0 + plot_h + 18
        out.append(f'<text x="{at_x:.1f}" y="{at_y}" font-size="11" text-anchor="middle">{year}</text>')
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y0 + plot_h}" y2="{y0 + plot_h}" stroke="#6b7280"/>'
    )
    runs: list[list[tuple[int, float]]] = []
    for year, value in sorted(panel.points):
        if runs and year == runs[-1][-1][0] + 1:
            runs[-1].append((year, value))
        else:
            runs.append([(year, value)])  # a missing year breaks the line: no invented value
    for run in runs:
        path = " ".join(f"{x(yr):.1f},{y(v):.1f}" for yr, v in run)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for year, value in panel.points:
        out.append(
            f'<circle cx="{x(year):.1f}" cy="{y(value):.1f}" r="3" fill="{colour}">'
            f"<title>{year}: {value:,.6g}</title></circle>"
        )
    return out


def line_chart(panels: Sequence[Panel]) -> str:
    """Panels stacked on one shared year axis, as one SVG document."""
    years = sorted({year for p in panels for year, _ in p.points}) or [0]
    height = PANEL_HEIGHT * len(panels)
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" fill="#111827">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff" rx="6"/>',
    ]
    for i, panel in enumerate(panels):
        body += _panel(panel, years, i * PANEL_HEIGHT, COLOURS[i % len(COLOURS)])
    body.append("</svg>")
    return "\n".join(body) + "\n"


def data_uri(svg: str) -> str:
    """The chart as a Markdown-embeddable image source."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
