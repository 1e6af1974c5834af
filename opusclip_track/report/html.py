"""Render a `Report` as one HTML page: inline CSS, inline SVG charts, an inline script, clips as `<video>`.

Everything that comes from a run (names, config values, alert text, captions) is HTML-escaped: a run's config
is data, never markup. Numbers are shown rounded and carried exactly in `data-value` attributes, which is what
the browser tests compare with `scipy.stats`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from opusclip_track._downsample import bucket_mean, ema, minmax_downsample
from opusclip_track.report.assets import CSS, SCRIPT
from opusclip_track.report.build import METHODS, MetricStats, Report
from opusclip_track.report.clips import Clip
from opusclip_track.report.data import PerFrameTable, RunData
from opusclip_track.report.stats import Comparison, GroupSummary
from opusclip_track.report.svg import Series, format_number, line_chart
from opusclip_track.store import config_diff

__all__ = ["render_page"]

_MAX_DIFF_ROWS = 300
_MAX_ALERTS = 100
# A series this short is drawn as it is: an EMA over a handful of evaluations only shifts them (TensorBoard's
# smoothing drags a 4-point val/loss curve visibly behind its points).
MIN_POINTS_TO_SMOOTH = 30


def render_page(report: Report) -> str:
    """The whole page as a string."""
    sections = [_header(report), _alerts(report), _sweep(report), _findings(report), _run_table(report),
                _config_diff(report),
                _curves(report), _per_frame(report), _gallery(report), _statistics(report), _system(report),
                _footer(report)]
    body = "\n".join(s for s in sections if s)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(report.title)}</title><style>{CSS}</style></head>\n"
            f"<body><main>\n{body}\n</main><script>{SCRIPT}</script></body></html>\n")


# ---- small pieces ------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: float | None, *, unit: str = "") -> str:
    """A numeric cell: rounded text, the exact value in data-value."""
    if value is None:
        return '<td class="num">&ndash;</td>'
    shown = format_number(value) + (f" {unit}" if unit else "")
    return f'<td class="num" data-value="{value!r}">{_e(shown)}</td>'


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "&ndash;"
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


def _swatch(report: Report, run: str) -> str:
    return f'<span class="swatch" style="background:{report.colors.get(run, "#888")}"></span>'


def _short(report: Report, run: str) -> str:
    """The run's name without the prefix every run shares (shown once, in the header)."""
    return run.removeprefix(report.prefix)


def _run(report: Report, run: str) -> str:
    """A run's colour and short name, the full name on hover."""
    return f'{_swatch(report, run)}<span title="{_e(run)}">{_e(_short(report, run))}</span>'


def _table(head: Sequence[str], rows: Iterable[str], css: str = "") -> str:
    cells = "".join(f'<th{" class=num" if h.startswith("#") else ""}>{_e(h.lstrip("#"))}</th>' for h in head)
    return (f'<div class="scroll"><table class="{css}"><thead><tr>{cells}</tr></thead><tbody>'
            f'{"".join(rows)}</tbody></table></div>')


def _value(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) <= limit:
        return _e(text)
    return f'<span title="{_e(text)}">{_e(text[:limit - 1])}&hellip;</span>'


# ---- sections ----------------------------------------------------------------------------------------------
def _header(report: Report) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(report.generated_at))
    groups = ", ".join(f"{_e(g)} ({len(rs)})" for g, rs in report.groups.items())
    command = f'<div class="sub">made by <code>{_e(report.command)}</code></div>' if report.command else ""
    if report.prefix:
        command += (f'<div class="sub">run names below leave out their common prefix <code>{_e(report.prefix)}'
                    "</code></div>")
    sections = [("runs", "Runs"), ("config", "Config diff"), ("curves", "Learning curves"),
                ("per-frame", "Per-frame quality"), ("clips", "Clips"), ("statistics", "Statistics"),
                ("system", "System load")]
    if report.sweep is not None:
        sections.insert(0, ("sweep", "Sweep"))
    nav = "".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in sections)
    return (f"<header><h1>{_e(report.title)}</h1>"
            f'<div class="sub">{len(report.runs)} runs, generated {when}; grouped by <b>{_e(report.group_key)}</b>: '
            f"{groups}</div>{command}<nav>{nav}</nav></header>")


def _alerts(report: Report) -> str:
    alerts = sorted(((run, a) for run in report.runs for a in run.alerts), key=lambda ra: ra[1]["wall_time"])
    problems = [(run, p) for run in report.runs for p in run.health_problems]
    if not alerts and not problems:
        return ""
    items = []
    for run, alert in alerts[:_MAX_ALERTS]:
        data = alert["data"] or {}
        level = str(data.get("level") or "warn")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(alert["wall_time"]))
        step = f", step {alert['step']}" if alert["step"] is not None else ""
        items.append(f'<div class="alert {_e(level)}" data-run="{_e(run.name)}">'
                     f"<b>{_e(data.get('title', 'alert'))}</b> &middot; {_run(report, run.name)}{step} &middot; {when} "
                     f"&middot; {_e(level)}<br>{_e(data.get('text', ''))}</div>")
    if len(alerts) > _MAX_ALERTS:
        items.append(f'<div class="note">{len(alerts) - _MAX_ALERTS} more alerts in the runs\' stores</div>')
    for run, problem in problems:
        items.append(f'<div class="alert error"><b>health</b> &middot; {_run(report, run.name)}: {_e(problem)} '
                     "(see the run's meta)</div>")
    return f'<section id="alerts" class="alerts"><h2>Alerts ({len(alerts)})</h2>{"".join(items)}</section>'


def _findings(report: Report) -> str:
    lines = [(key, s) for key, m in report.metrics.items() for s in m.sentences]
    if not lines:
        if len(report.groups) < 2 and report.sweep is None:  # a sweep's comparison is its trial table
            return (f'<p class="note">All runs are in one group by {_e(report.group_key)}: nothing to compare '
                    "between groups (choose another key with --group-by).</p>")
        return ""
    items = "".join(f'<li class="sentence" data-metric="{_e(k)}">{_e(s)}</li>' for k, s in lines)
    return f'<section class="findings"><b>Findings</b><ul>{items}</ul></section>'


# The sweep's own plots, in the order a reader wants them, with what each shows.
_SWEEP_FIGURES = {
    "parallel_coordinate": "Parallel coordinates: one line per completed trial, through its parameters to its "
                           "metric",
    "param_importances": "Parameter importances (fANOVA over the completed trials)",
    "optimization_history": "Optimization history: each trial's value and the best so far",
}
_STATE_BADGE = {"COMPLETE": "finished", "FAIL": "failed", "RUNNING": "running", "WAITING": "running"}


def _sweep(report: Report) -> str:
    """The sweep's trials best first, its parameter importances and its plots (Optuna's PNGs, embedded)."""
    sweep = report.sweep
    if sweep is None:
        return ""
    in_report = {r.name for r in report.runs}
    names = list(dict.fromkeys(k for t in sweep.trials for k in t.params))
    rows = []
    for rank, trial in enumerate(sweep.trials, 1):
        run = (_run(report, trial.run_name) if trial.run_name in in_report
               else _e(trial.run_name or "(not tracked)"))
        badge = f'<span class="badge {_STATE_BADGE.get(trial.state, "")}">{_e(trial.state.lower())}</span>'
        best = " <b>best</b>" if trial.number == sweep.best_number else ""
        params = "".join(f"<td>{_value(trial.params[n]) if n in trial.params else ''}</td>" for n in names)
        rows.append(f'<tr data-trial="{trial.number}" data-state="{_e(trial.state)}"><td class=num>{rank}</td>'
                    f"<td class=num>{trial.number}{best}</td><td>{run}</td><td>{badge}</td>{_num(trial.value)}"
                    f'{params}<td class="note">{_e(trial.error or "")}</td></tr>')
    way = "lowest" if sweep.goal == "minimize" else "highest"
    head = ["#rank", "#trial", "run", "state", f"#{sweep.metric}", *names, "error"]
    notes = "".join(f"<li>{_e(n)}</li>" for n in sweep.notes)
    return (f'<section id="sweep"><h2>Sweep {_e(sweep.name)}</h2><p class="note">{len(sweep.trials)} trials, best '
            f"first: completed ones by {_e(sweep.metric)} ({way} first, the sweep's goal is to {_e(sweep.goal)} "
            "it), then pruned ones by their last reported value, then running and failed ones.</p>"
            f'{_table(head, rows, "sweep-trials")}{f"<ul class=note>{notes}</ul>" if notes else ""}'
            f"{_importances(sweep.importances)}{_sweep_figures(sweep.figures)}</section>")


def _importances(importances: dict[str, float] | None) -> str:
    if not importances:
        return ""
    rows = [f'<tr data-param="{_e(name)}"><td>{_e(name)}</td>{_num(value)}<td><span style="display:inline-block;'
            f'height:10px;width:{max(value, 0.0) * 240:.1f}px;background:#4e79a7"></span></td></tr>'
            for name, value in importances.items()]
    return "<h3>Parameter importances</h3>" + _table(["parameter", "#importance (fANOVA)", ""], rows, "importances")


def _sweep_figures(figures: dict[str, Path]) -> str:
    parts = []
    for name in sorted(figures, key=lambda n: list(_SWEEP_FIGURES).index(n) if n in _SWEEP_FIGURES else 99):
        try:
            data = base64.b64encode(figures[name].read_bytes()).decode("ascii")
        except OSError as error:
            parts.append(f'<p class="note">{_e(name)}: {_e(error)}</p>')
            continue
        caption = _SWEEP_FIGURES.get(name, name)
        parts.append(f'<figure class="sweep-figure" data-name="{_e(name)}" style="margin:0"><figcaption>'
                     f'{_e(caption)}</figcaption><img alt="{_e(caption)}" src="data:image/png;base64,{data}" '
                     'style="max-width:100%;height:auto"></figure>')
    return f'<div class="charts">{"".join(parts)}</div>' if parts else ""


def _run_table(report: Report) -> str:
    rows = []
    for run in report.runs:
        status = run.status if run.unreadable is None else "unreadable"
        detail = run.error or run.unreadable
        badge = (f'<span class="badge {_e(status)}">{_e(status)}</span>'
                 + (f'<div class="note">{_e(detail)}</div>' if detail else ""))
        ckpt = run.best_checkpoint
        ckpt_text = "&ndash;"
        if ckpt:
            name = str(ckpt["path"] or "").rsplit("/", 1)[-1]
            numbers = [f"{k} {format_number(v)}" for k, v in ckpt["metrics"].items() if isinstance(v, (int, float))]
            metrics = _e(", ".join(numbers[:2]) + (", ..." if len(numbers) > 2 else ""))
            ckpt_text = (f'<span title="{_e(ckpt["path"])}">{_e(name)}</span><div class="note" '
                         f'title="{_e(", ".join(numbers))}">step {_e(ckpt["step"])}{"; " + metrics if metrics else ""}'
                         "</div>")
        group = next((g for g, rs in report.groups.items() if run in rs), "")
        rows.append(f'<tr data-run="{_e(run.name)}"><td>{_run(report, run.name)}</td>'
                    f"<td>{_e(group)}</td><td>{badge}</td><td class=num>{_duration(run.duration_s)}</td>"
                    f"<td class=num>{_e(run.steps if run.steps is not None else '–')}</td>"
                    f"<td class=num>{run.num_scalars:,}</td><td>{ckpt_text}</td>"
                    f"<td class=num>{len(run.alerts)}</td></tr>")
    group_head = "group" if report.group_key == "group" else f"group ({report.group_key})"
    head = ["run", group_head, "status", "#duration", "#steps", "#scalars", "best checkpoint",
            "#alerts"]
    return f'<section id="runs"><h2>Runs</h2>{_table(head, rows, "runs")}</section>'


def _config_diff(report: Report) -> str:
    runs = [r for r in report.runs if r.unreadable is None]
    if len(runs) < 2:
        return ""
    diff = config_diff({str(i): r.settings for i, r in enumerate(runs)})  # by position: names may repeat
    differ, partial = list(diff.differ), list(diff.partial)
    if not differ and not partial:
        return '<section id="config"><h2>Config diff</h2><p class="note">All runs share one config.</p></section>'
    head = ["key", *(_short(report, r.name) for r in runs)]
    text = (f'<section id="config"><h2>Config diff</h2><p class="note">Only the keys whose values differ between '
            f"runs (config and hyperparameters, <code>hparams.*</code>): {len(differ)} set to different values"
            f"{f', {len(partial)} set in some runs only' if partial else ''}.</p>")
    if differ:
        text += _table(head, _diff_rows(runs, differ), "config-diff")
    if partial:
        text += (f"<details><summary>{len(partial)} keys set in some runs only (the same value wherever set)"
                 f"</summary>{_table(head, _diff_rows(runs, partial), 'config-partial')}</details>")
    return text + "</section>"


def _diff_rows(runs: Sequence[RunData], keys: Sequence[str]) -> list[str]:
    rows = []
    for key in keys[:_MAX_DIFF_ROWS]:
        cells = "".join(f"<td>{'<span class=note>(unset)</span>' if key not in r.settings else _value(r.settings[key])}"
                        "</td>" for r in runs)
        rows.append(f'<tr data-key="{_e(key)}"><td><code>{_e(key)}</code></td>{cells}</tr>')
    if len(keys) > _MAX_DIFF_ROWS:
        rows.append(f'<tr><td class="note" colspan="{len(runs) + 1}">{len(keys) - _MAX_DIFF_ROWS} more keys '
                    "(all are in --json)</td></tr>")
    return rows


def _legend(report: Report, runs: Sequence[RunData]) -> str:
    return '<div class="legend">' + "".join(
        f"<span>{_run(report, r.name)}</span>" for r in runs) + "</div>"


def _curve_series(report: Report, run: RunData, key: str) -> Series:
    steps, values = run.series[key]
    bad = ~np.isfinite(values)
    x, y = minmax_downsample(steps, values, report.buckets)
    smooth_x = smooth_y = None
    if report.smoothing > 0 and steps.size >= MIN_POINTS_TO_SMOOTH:
        smooth_x, means = bucket_mean(steps, values, report.buckets)
        smooth_y = ema(means, report.smoothing)
    return Series(run.name, report.colors[run.name], x, y, smooth_x, smooth_y, steps[bad] if bad.any() else None,
                  markers=x.size <= 3)


def _curves(report: Report) -> str:
    if not report.keys:
        return '<section id="curves"><h2>Learning curves</h2><p class="note">No chosen key was logged.</p></section>'
    charts = []
    for key in report.keys:
        runs = [r for r in report.runs if key in r.series]
        series = [_curve_series(report, r, key) for r in runs]
        points = sum(r.series[key][0].size for r in runs)
        way = report.metrics[key].direction
        subtitle = f"({way} is better; {points:,} points)" if way else f"({points:,} points)"
        charts.append(line_chart(series, title=key, subtitle=subtitle))
    controls = ('<div class="controls"><label><input type="checkbox" id="smooth" checked> smoothing '
                f"(EMA {report.smoothing:g})</label><label><input type=\"checkbox\" id=\"logy\"> log-scale y</label>"
                f"{_legend(report, [r for r in report.runs if r.unreadable is None])}</div>")
    note = ('<p class="note">Curves keep the minimum and maximum of every step bucket, so single spikes show; '
            "triangles under the axis mark NaN or inf values.</p>")
    return f'<section id="curves"><h2>Learning curves</h2>{controls}<div class="charts">{"".join(charts)}</div>' \
           f"{note}</section>"


def _per_frame(report: Report) -> str:
    latest: dict[str, dict[str, PerFrameTable]] = {}
    for run in report.runs:
        for table in run.per_frame:
            kept = latest.setdefault(table.name, {}).get(run.name)
            if kept is None or (table.step or 0) >= (kept.step or 0):
                latest[table.name][run.name] = table
    if not latest:
        return ('<section id="per-frame"><h2>Per-frame quality</h2><p class="note">No run logged a per-frame table '
                "(<code>tracker.evaluate_videos</code> writes <code>video/per_frame</code>).</p></section>")
    charts = []
    for name, tables in latest.items():
        columns = list(dict.fromkeys(c for t in tables.values() for c in t.columns if c != "t"))
        for column in columns:
            series = []
            for run_name, table in tables.items():
                if column in table.columns:
                    t, v = table.column("t"), table.column(column)
                    keep = np.isfinite(v) & np.isfinite(t)
                    series.append(Series(f"{run_name} (step {table.step})", report.colors[run_name], t[keep],
                                         v[keep], markers=True))
            key = f"{name.removesuffix('/per_frame')}/{column}"
            way = report.metrics[key].direction if key in report.metrics else None
            charts.append(line_chart(series, title=key, x_label="generated frame index t",
                                     subtitle=f"per frame, last evaluation{f'; {way} is better' if way else ''}"))
    shown = [r for r in report.runs if any(r.name in tables for tables in latest.values())]
    return (f'<section id="per-frame"><h2>Per-frame quality</h2><p class="note">Quality against the index of '
            "the generated frame: where along the horizon quality collapses.</p>"
            f"{_legend(report, shown)}"
            f'<div class="charts">{"".join(charts)}</div></section>')


def _gallery(report: Report) -> str:
    if not report.galleries:
        return '<section id="clips"><h2>Clips</h2><p class="note">No run logged a clip.</p></section>'
    parts = []
    for name, clips in report.galleries.items():
        playable = [c for c in clips if c.file is not None]
        if not playable:
            continue
        fps = playable[0].fps
        frames = max(c.frames for c in playable)
        cells = "".join(_clip_cell(report, c) for c in clips)
        steps = sorted({c.step for c in playable if c.step is not None})
        at = f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(map(str, steps))
        parts.append(
            f'<div class="gallery" data-name="{_e(name)}" data-fps="{fps!r}" data-frames="{frames}">'
            f"<h3>{_e(name)} <span class=note>at {at}; generated above the reference when logged with "
            "<code>reference=</code></span></h3>"
            '<div class="player"><button class="prev" title="previous frame">&#9664;</button>'
            '<button class="play">Play</button><button class="next" title="next frame">&#9654;</button> '
            f'<input type="range" min="0" max="{frames - 1}" value="0" step="1" aria-label="frame"> '
            '<span class="frame-label"></span></div>'
            f'<div class="clips">{cells}</div></div>')
    media = ("embedded in this page" if report.media_mode == "embed"
             else "in the folder beside this page (keep the two together)")
    return (f'<section id="clips"><h2>Clips</h2><p class="note">All clips play in lock-step: one frame index for '
            f"every run. Clips are {media}.</p>{''.join(parts)}</section>")


def _clip_cell(report: Report, clip: Clip) -> str:
    label = _run(report, clip.run.name)
    if clip.file is None:
        return f'<figure><div class="missing">{_e(clip.problem or "no clip")}</div><figcaption>{label}</figcaption>' \
               "</figure>"
    caption = f'<div class="note">{_e(clip.caption)}</div>' if clip.caption else ""
    return (f'<figure data-run="{_e(clip.run.name)}"><video muted playsinline preload="auto" '
            f'data-run="{_e(clip.run.name)}" data-fps="{clip.fps!r}" data-frames="{clip.frames}" '
            f'src="{_e(clip.src)}"></video><figcaption>{label} &middot; step {clip.step}{caption}</figcaption>'
            "</figure>")


def _statistics(report: Report) -> str:
    if not report.metrics:
        return ""
    level = f"{round(report.confidence * 100):g}%"
    parts = [f'<p class="note">Final value of each run, grouped by <b>{_e(report.group_key)}</b>. {level} '
             f"intervals from the t distribution; between groups Welch's t-test (two-sided) and Hedges' g "
             "(bias-corrected standardised mean difference). p-values are not corrected for multiple comparisons."
             "</p>"]
    for key, m in report.metrics.items():
        way = f"{m.direction} is better" if m.direction else "no better direction known"
        parts.append(f'<div class="metric" data-metric="{_e(key)}"><h3>{_e(key)} <span class=note>({way})</span></h3>'
                     f"{_group_table(report, m, level)}{_comparison_table(m, level)}</div>")
    return f'<section id="statistics"><h2>Statistics</h2>{"".join(parts)}</section>'


def _group_table(report: Report, m: MetricStats, level: str) -> str:
    rows = []
    for name, s in m.groups.items():
        rows.append(_group_row(report, name, s, m.unit))
    head = ["group", "#n", "#mean", "#std", f"#{level} CI low", f"#{level} CI high", "runs (final values)", "note"]
    return _table(head, rows, "groups")


def _group_row(report: Report, name: str, s: GroupSummary, unit: str) -> str:
    values = ", ".join(f"{_e(_short(report, run))} {format_number(v)}" for run, v in s.values.items())
    notes = [s.note] if s.note else []
    if s.excluded:
        notes.append("excluded (not finite): " + ", ".join(f"{_short(report, run)} {v}"
                                                            for run, v in s.excluded.items()))
    return (f'<tr data-group="{_e(name)}"><td>{_e(name)}</td><td class="num" data-value="{s.n}">{s.n}</td>'
            f"{_num(s.mean, unit=unit)}{_num(s.std)}{_num(s.ci_low)}{_num(s.ci_high)}"
            f'<td class="note">{values}</td><td class="note">{_e("; ".join(notes))}</td></tr>')


def _comparison_table(m: MetricStats, level: str) -> str:
    if not m.comparisons:
        return ""
    rows = [_comparison_row(c, s) for c, s in zip(m.comparisons, m.sentences, strict=True)]
    head = ["A vs B", "#mean A - mean B", f"#{level} CI low", f"#{level} CI high", "#Welch t", "#df", "#p",
            "#Hedges' g", "in words"]
    return _table(head, rows, "comparisons")


def _comparison_row(c: Comparison, sentence: str) -> str:
    return (f'<tr data-a="{_e(c.a)}" data-b="{_e(c.b)}"><td>{_e(c.a)} vs {_e(c.b)}</td>{_num(c.diff)}'
            f"{_num(c.ci_low)}{_num(c.ci_high)}{_num(c.t)}{_num(c.df)}{_num(c.p)}{_num(c.hedges_g)}"
            f'<td class="sentence">{_e(sentence)}</td></tr>')


def _system(report: Report) -> str:
    runs = [r for r in report.runs if r.system]
    if not runs:
        return ('<section id="system"><h2>System load</h2><p class="note">No <code>sys/*</code> samples (the system '
                "monitor was off).</p></section>")
    keys = sorted({k for r in runs for k in r.system})
    rows = []
    for run in runs:
        cells = "".join(_mean_max(run.system.get(key)) for key in keys)
        rows.append(f'<tr data-run="{_e(run.name)}"><td>{_run(report, run.name)}</td>{cells}</tr>')
    head = ["run", *(f"#{key.removeprefix('sys/')}" for key in keys)]
    return (f'<section id="system"><h2>System load</h2><p class="note">Mean / max of each <code>sys/*</code> '
            f'series over the run.</p>{_table(head, rows, "system")}</section>')


def _mean_max(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "<td></td>"
    mean, high = pair
    return (f'<td class="num" data-mean="{mean!r}" data-max="{high!r}">{format_number(mean, 3)} / '
            f"{format_number(high, 3)}</td>")


def _footer(report: Report) -> str:
    items = "".join(f"<li><b>{_e(k.replace('_', ' '))}</b>: {_e(v)}</li>" for k, v in METHODS.items())
    return f"<footer><b>Methods</b><ul>{items}</ul>Made by opusclip-track report.</footer>"
