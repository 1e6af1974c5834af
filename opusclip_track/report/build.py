"""Build a report: read the runs, group them, compute the statistics, render the page, write the files.

    from opusclip_track.report import build_report
    result = build_report(["runs/cmp-*"], "report.html", json_path="stats.json")
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opusclip_track._text import plain_json
from opusclip_track.report.clips import Clip, MediaMode, choose_clips, place_clips
from opusclip_track.report.data import (
    DEFAULT_KEYS,
    RunData,
    common_prefix,
    group_runs,
    load_run,
    match_keys,
    resolve_runs,
)
from opusclip_track.report.stats import (
    Comparison,
    Direction,
    GroupSummary,
    compare_groups,
    describe_comparison,
    direction,
    summarize,
    unit,
)
from opusclip_track.report.svg import PALETTE

__all__ = ["MetricStats", "Report", "ReportResult", "SweepSection", "SweepTrial", "build_report", "collect",
           "report_json", "statistics"]

METHODS = {
    "final_value": "the last logged value of the key in each run",
    "group_interval": "mean +- t(0.975, n-1) * sd / sqrt(n) (Student t, sd with ddof 1)",
    "test": "Welch's unequal-variances t-test, two-sided (scipy.stats.ttest_ind, equal_var=False)",
    "difference_interval": "mean_a - mean_b +- t(0.975, df) * sqrt(var_a/n_a + var_b/n_b), Welch-Satterthwaite df",
    "effect_size": "Hedges' g: (mean_a - mean_b) / pooled sd * (1 - 3 / (4 (n_a + n_b) - 9))",
    "multiple_comparisons": "none: p-values are per metric and per pair, not corrected",
    "excluded": "runs whose final value is NaN or inf are left out of a metric's numbers and listed",
    "downsampling": "min and max per equal-width step bucket (spikes survive); smoothing: debiased EMA of the "
                    "bucket means",
}


@dataclass
class MetricStats:
    """One metric's statistics: per group, and for each pair of groups."""

    key: str
    direction: Direction | None
    unit: str
    groups: dict[str, GroupSummary]
    comparisons: list[Comparison]
    sentences: list[str]


@dataclass(frozen=True)
class SweepTrial:
    """One trial of a sweep as its report lists it."""

    number: int
    state: str
    """COMPLETE, PRUNED, FAIL, RUNNING or WAITING (Optuna's names)."""
    value: float | None
    """The sweep metric: the final value, or a pruned trial's last reported one."""
    params: dict[str, Any]
    run_name: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SweepSection:
    """What a sweep adds to the report of its trial runs (`opusclip_track.sweep` builds it from a `SweepResult`).

    Attributes:
        name, metric, goal: the sweep, its metric and "minimize" or "maximize".
        trials: every trial, best first.
        best_number: the best completed trial (None when none completed).
        importances: parameter -> fANOVA importance (None when the sweep cannot tell; `notes` say why).
        figures: the sweep's PNG plots by name (`parallel_coordinate`, `param_importances`,
            `optimization_history`), embedded in the page.
        notes: what the numbers alone do not say.
    """

    name: str
    metric: str
    goal: str
    trials: list[SweepTrial]
    best_number: int | None = None
    importances: dict[str, float] | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass
class Report:
    """Everything the page shows."""

    title: str
    runs: list[RunData]
    colors: dict[str, str]
    keys: list[str]
    group_key: str
    groups: dict[str, list[RunData]]
    metrics: dict[str, MetricStats]
    galleries: dict[str, list[Clip]] = field(default_factory=dict)
    prefix: str = ""  # the run names' common prefix, left out where the page names a run
    media_mode: str = "embed"
    smoothing: float = 0.6
    buckets: int = 500
    confidence: float = 0.95
    command: str | None = None
    generated_at: float = field(default_factory=time.time)
    sweep: SweepSection | None = None


@dataclass(frozen=True)
class ReportResult:
    """What `build_report` wrote."""

    html: Path
    json: Path | None
    media: str
    runs: int
    bytes: int


def statistics(groups: dict[str, list[RunData]], keys: Sequence[str], confidence: float = 0.95
               ) -> dict[str, MetricStats]:
    """For each key: every group's summary of its runs' final values, and every pair of groups compared."""
    result = {}
    for key in keys:
        summaries = {name: summarize({r.name: r.finals[key] for r in runs if key in r.finals}, confidence)
                     for name, runs in groups.items()}
        summaries = {name: s for name, s in summaries.items() if s.values or s.excluded}
        comparisons = [compare_groups(key, a, list(summaries[a].values.values()), b,
                                      list(summaries[b].values.values()), confidence)
                       for a, b in itertools.combinations(summaries, 2)]
        result[key] = MetricStats(key, direction(key), unit(key), summaries, comparisons,
                                  [describe_comparison(c) for c in comparisons])
    return result


def collect(patterns: Sequence[str], *, keys: Sequence[str] | None = None, group_by: str | None = None,
            log_dir: str | Path = "runs", confidence: float = 0.95, title: str | None = None) -> Report:
    """Read the runs matching `patterns` and compute the report's contents (no media placed, nothing written)."""
    wanted = list(keys) if keys else list(DEFAULT_KEYS)
    paths = resolve_runs(patterns, log_dir)
    runs = [load_run(p, wanted) for p in paths]
    present = match_keys({k for r in runs for k in r.series}, wanted)
    group_key, groups = group_runs([r for r in runs if r.unreadable is None], group_by)
    colors = {r.name: PALETTE[i % len(PALETTE)] for i, r in enumerate(runs)}
    return Report(title=title or _title(runs), runs=runs, colors=colors, keys=present, group_key=group_key,
                  groups=groups, metrics=statistics(groups, present, confidence), confidence=confidence,
                  prefix=common_prefix([r.name for r in runs]))


def _title(runs: Sequence[RunData]) -> str:
    experiments = sorted({r.experiment for r in runs if r.experiment})
    return f"{', '.join(experiments) or 'runs'}: {len(runs)} run{'s' * (len(runs) != 1)}"


def build_report(patterns: Sequence[str], out: str | Path = "report.html", *, keys: Sequence[str] | None = None,
                 group_by: str | None = None, json_path: str | Path | None = None, log_dir: str | Path = "runs",
                 clip_step: int | None = None, media: MediaMode = "auto", smoothing: float = 0.6,
                 buckets: int = 500, confidence: float = 0.95, title: str | None = None,
                 command: str | None = None, sweep: SweepSection | None = None) -> ReportResult:
    """Write an offline HTML report comparing the runs matching `patterns` (and their statistics as JSON).

    Args:
        patterns: run directories, run names under `log_dir`, or globs of either.
        out: the HTML file.
        keys: scalar keys (or globs) for curves and statistics; default: train/loss, val/loss and video/*.
        group_by: `group`, a config key (`train.model`) or `hparams.<name>`; default: the first of group,
            train.model, model that splits the runs.
        json_path: also write every number here.
        log_dir: where run names are looked up.
        clip_step: the step whose clips the gallery shows; default: the last step all runs have a clip for.
        media: "embed" clips in the page, put them in a "folder" beside it, or "auto" (embed up to 8 MiB).
        smoothing: EMA weight of the smoothed curves, in [0, 1) (0: no smoothed line).
        buckets: curve resolution: min and max of this many step intervals per curve.
        confidence: of every interval.
        title: the page's heading (default: the experiments and the number of runs).
        command: the command line that made the report, shown in the page.
        sweep: the sweep these runs are the trials of: its trials best first, parameter importances and plots
            are shown first (pass the runs best first too).
    """
    from opusclip_track.report.html import render_page

    if media not in ("auto", "embed", "folder"):
        raise ValueError(f"media: expected 'auto', 'embed' or 'folder', received {media!r}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise ValueError(f"smoothing: expected a number in [0, 1), received {smoothing!r}")
    out = Path(out)
    report = collect(patterns, keys=keys, group_by=group_by, log_dir=log_dir, confidence=confidence, title=title)
    report.smoothing, report.buckets, report.command, report.sweep = float(smoothing), buckets, command, sweep
    report.galleries = choose_clips([r for r in report.runs if r.unreadable is None], clip_step)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.media_mode = place_clips(report.galleries, out, media)
    page = render_page(report)
    out.write_text(page, encoding="utf-8")
    written_json = None
    if json_path is not None:
        written_json = Path(json_path)
        written_json.parent.mkdir(parents=True, exist_ok=True)
        written_json.write_text(json.dumps(report_json(report), indent=2, allow_nan=False) + "\n")
    return ReportResult(out, written_json, report.media_mode, len(report.runs), len(page.encode("utf-8")))


def report_json(report: Report) -> dict[str, Any]:
    """Every number of the report as plain JSON (NaN and inf as strings, missing as null)."""
    runs = [{
        "name": r.name, "path": str(r.path), "group": r.group, "status": r.status, "error": r.error,
        "unreadable": r.unreadable, "duration_s": r.duration_s, "steps": r.steps, "num_scalars": r.num_scalars,
        "final": r.finals, "system": {k: {"mean": m, "max": x} for k, (m, x) in r.system.items()},
        "best_checkpoint": r.best_checkpoint,
        "alerts": [{"step": a["step"], "wall_time": a["wall_time"], **(a["data"] or {})} for a in r.alerts],
        "health_problems": r.health_problems,
    } for r in report.runs]
    metrics = {key: {
        "direction": m.direction, "unit": m.unit,
        "groups": {name: s.to_dict() for name, s in m.groups.items()},
        "comparisons": [{**c.to_dict(), "sentence": s} for c, s in zip(m.comparisons, m.sentences, strict=True)],
    } for key, m in report.metrics.items()}
    sweep = None if report.sweep is None else {
        **dataclasses.asdict(report.sweep), "figures": {k: str(v) for k, v in report.sweep.figures.items()}}
    return plain_json({
        "title": report.title, "generated_at": report.generated_at, "confidence": report.confidence,
        "group_by": report.group_key, "groups": {g: [r.name for r in rs] for g, rs in report.groups.items()},
        "keys": report.keys, "runs": runs, "metrics": metrics, "methods": METHODS, "sweep": sweep,
    })

