"""Static inline SVG line charts: axes, ticks, one path per run, in precomputed variants.

Every chart carries its linear and (when every value is positive) logarithmic y-axis, and each series its raw
and its smoothed path; the page's two checkboxes switch variants with one CSS class each, so the charts are
plain markup that renders without JavaScript and weighs a few KB (Plotly's bundle is 3.5 MB).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

__all__ = ["PALETTE", "Series", "line_chart", "nice_ticks", "format_number"]

# Tableau 10: distinguishable, and readable by most colour-blind readers.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
WIDTH, HEIGHT = 480, 250
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 10, 36


@dataclass(frozen=True)
class Series:
    """One run's line on a chart.

    Attributes:
        label: the run's name (hover text).
        color: CSS colour.
        x, y: the points to draw (already downsampled; finite).
        smooth_x, smooth_y: the smoothed line, or None for none.
        nonfinite_x: steps at which the value was NaN or inf (marked under the axis).
        markers: draw a dot at every point (short series such as per-frame curves).
    """

    label: str
    color: str
    x: np.ndarray
    y: np.ndarray
    smooth_x: np.ndarray | None = None
    smooth_y: np.ndarray | None = None
    nonfinite_x: np.ndarray | None = None
    markers: bool = False


def format_number(value: float, digits: int = 4) -> str:
    """A short human form: 4 significant digits, no trailing noise ('0.0123', '1.2e+05', '3')."""
    if value is None or not math.isfinite(value):
        return str(value)
    text = f"{value:.{digits}g}"
    return text.replace("e+0", "e+").replace("e-0", "e-")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    mantissas = (1,) if math.log10(high / low) > 2 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in mantissas]
    return [t for t in ticks if low <= t <= high] or [low, high]


def _extent(values: Sequence[np.ndarray]) -> tuple[float, float]:
    """(min, max) over the non-empty arrays; (0, 1) when there are none."""
    arrays = [v for v in values if v.size]
    if not arrays:
        return 0.0, 1.0
    return min(float(v.min()) for v in arrays), max(float(v.max()) for v in arrays)


def _range(values: Sequence[np.ndarray]) -> tuple[float, float]:
    low, high = _extent(values)
    if low == high:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


def _path(px: np.ndarray, py: np.ndarray) -> str:
    if px.size == 0:
        return ""
    coords = np.round(np.column_stack([px, py]), 1)
    return "M" + "L".join(f"{a:g},{b:g}" for a, b in coords)  # at most ~1,000 points: the chart's pixels


class _Axes:
    def __init__(self, x_low: float, x_high: float, y_low: float, y_high: float, log: bool) -> None:
        self.x_low, self.x_high, self.log = x_low, x_high, log
        self.y_low, self.y_high = (math.log10(y_low), math.log10(y_high)) if log else (y_low, y_high)
        self.w, self.h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(self, x: np.ndarray) -> np.ndarray:
        span = (self.x_high - self.x_low) or 1.0
        return LEFT + (np.asarray(x, dtype=np.float64) - self.x_low) / span * self.w

    def py(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if self.log:
            y = np.log10(y)
        return TOP + self.h - (y - self.y_low) / ((self.y_high - self.y_low) or 1.0) * self.h


def line_chart(series: Sequence[Series], *, title: str, x_label: str = "step", subtitle: str = "") -> str:
    """An SVG chart of `series` overlaid, wrapped in a `<figure class="chart">`.

    The figure holds a linear variant (`g.scale-lin`) and, when every drawn value is positive, a log-y variant
    (`g.scale-log`, and `data-log="1"` on the figure); each series has a `path.raw` and, when smoothed, a
    `path.smooth`. The page's CSS shows one variant at a time.
    """
    xs = [s.x for s in series] + [s.nonfinite_x for s in series if s.nonfinite_x is not None]
    x_low, x_high = _x_range(xs)
    ys = [s.y for s in series] + [s.smooth_y for s in series if s.smooth_y is not None]
    y_low, y_high = _range(ys)
    positive = [v for v in ys if v.size]
    log_ok = bool(positive) and all(float(v.min()) > 0 for v in positive)
    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             _x_axis(x_low, x_high, x_label)]
    parts.append(_variant(series, _Axes(x_low, x_high, y_low, y_high, False), "scale-lin"))
    if log_ok:
        lows = [float(v.min()) for v in positive]
        highs = [float(v.max()) for v in positive]
        low, high = min(lows), max(highs)
        ratio = (high / low) ** 0.04 if high > low else 1.1
        parts.append(_variant(series, _Axes(x_low, x_high, low / ratio, high * ratio, True), "scale-log"))
    parts.append(_nonfinite_marks(series, _Axes(x_low, x_high, 0, 1, False)))
    parts.append("</svg>")
    note = "" if log_ok else '<span class="nolog" title="some values are zero or negative">linear only</span>'
    caption = (f'<figcaption><b>{escape(title)}</b>{" " + escape(subtitle) if subtitle else ""} {note}'
               "</figcaption>")
    return (f'<figure class="chart" data-key="{escape(title)}" data-log="{int(log_ok)}">{caption}'
            f'{"".join(parts)}</figure>')


def _x_range(xs: Sequence[np.ndarray]) -> tuple[float, float]:
    low, high = _extent(xs)
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def _x_axis(low: float, high: float, label: str) -> str:
    axes = _Axes(low, high, 0.0, 1.0, False)
    base = TOP + axes.h
    out = [f'<g class="axis x"><line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>']
    for tick in nice_ticks(low, high, 6):
        x = float(axes.px(np.array([tick]))[0])
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{base}"/>'
                   f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle">{format_number(tick, 6)}</text>')
    out.append(f'<text class="label" x="{LEFT + axes.w / 2:.0f}" y="{HEIGHT - 4}" '
               f'text-anchor="middle">{escape(label)}</text></g>')
    return "".join(out)


def _variant(series: Sequence[Series], axes: _Axes, css: str) -> str:
    out = [f'<g class="{css}"><g class="axis y">']
    ticks = _log_ticks(10 ** axes.y_low, 10 ** axes.y_high) if axes.log else nice_ticks(axes.y_low, axes.y_high)
    for tick in ticks:
        y = float(axes.py(np.array([tick]))[0])
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
                   f'<text x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end">{format_number(tick)}</text>')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + axes.h}"/></g>')
    for s in series:
        label = escape(s.label)
        stroke = f'stroke="{escape(s.color)}"'
        out.append(f'<path class="raw{" exact" if s.smooth_y is None else ""}" {stroke} '
                   f'd="{_path(axes.px(s.x), axes.py(s.y))}"><title>{label}</title></path>')
        if s.smooth_x is not None and s.smooth_y is not None:
            out.append(f'<path class="smooth" {stroke} d="{_path(axes.px(s.smooth_x), axes.py(s.smooth_y))}">'
                       f"<title>{label} (smoothed)</title></path>")
        if s.markers:
            out.append(f'<g fill="{escape(s.color)}">' + "".join(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5"/>' for a, b in zip(axes.px(s.x), axes.py(s.y), strict=True))
                + "</g>")
    out.append("</g>")
    return "".join(out)


def _nonfinite_marks(series: Sequence[Series], axes: _Axes) -> str:
    out = []
    base = TOP + axes.h
    for s in series:
        if s.nonfinite_x is None or not s.nonfinite_x.size:
            continue
        for x in np.unique(np.round(axes.px(s.nonfinite_x)))[:200]:
            out.append(f'<path class="nonfinite" fill="{escape(s.color)}" d="M{x:g},{base - 7}l-4,7h8z">'
                       f"<title>{escape(s.label)}: NaN or inf near here</title></path>")
    return f'<g class="nonfinite">{"".join(out)}</g>' if out else ""
