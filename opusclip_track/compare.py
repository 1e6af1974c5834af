"""Compare models (or any variants) over several seeds: mean and standard deviation, a table, a bar chart.

`summarize` turns per-run results into a `ModelComparison`; `log_comparison` records it through a tracker
the way the original API shows (`<ModelName>/val_loss`, `<ModelName>/training_time`, ...), plus a table (W&B
Table, TensorBoard text) and a bar-chart figure.

Example:
    >>> results = {"VideoGenerationModel": [{"val/loss": 0.02}, {"val/loss": 0.03}],
    ...            "TransformerModel": [{"val/loss": 0.04}, {"val/loss": 0.05}]}
    >>> comparison = summarize(results, metrics=["val/loss"])
    >>> round(comparison.stats["VideoGenerationModel"]["val/loss"][0], 3)
    0.025
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._text import format_table

if TYPE_CHECKING:
    from .tracker import AdvancedExperimentTracker


@dataclass
class ModelComparison:
    """Per model and metric: `(mean, standard deviation, number of runs)` (std is 0 for a single run)."""

    metrics: list[str]
    stats: dict[str, dict[str, tuple[float, float, int]]]
    group: str | None = None

    def rows(self) -> list[list[str | float]]:
        """One row per model: name, then mean and std of each metric."""
        return [[model, *(v for m in self.metrics for v in self.stats[model].get(m, (math.nan, math.nan, 0))[:2])]
                for model in self.stats]

    def columns(self) -> list[str]:
        return ["model", *(f"{m} {part}" for m in self.metrics for part in ("mean", "std"))]

    def format_table(self) -> str:
        """A plain-text table: `mean ± std (n)` per model and metric."""
        header = ["model", *self.metrics]
        body = []
        for model, per_metric in self.stats.items():
            cells = [model]
            for metric in self.metrics:
                mean, std, n = per_metric.get(metric, (math.nan, math.nan, 0))
                cells.append(f"{mean:.4g} ± {std:.2g} (n={n})")
            body.append(cells)
        return format_table(header, body)


def summarize(results: Mapping[str, Sequence[Mapping[str, float]]], metrics: Sequence[str],
              group: str | None = None) -> ModelComparison:
    """Mean and sample standard deviation of each metric over the runs (seeds) of each model.

    Args:
        results: model name -> one result dict per run.
        metrics: the keys to compare; a run missing a key is left out of that key's statistics.
        group: the run group, for the record.
    """
    if not results:
        raise ValueError("results: expected at least one model, received none")
    stats: dict[str, dict[str, tuple[float, float, int]]] = {}
    for model, runs in results.items():
        stats[model] = {}
        for metric in metrics:
            values = [float(r[metric]) for r in runs if metric in r]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                stats[model][metric] = (statistics.fmean(values), std, len(values))
    return ModelComparison(list(metrics), stats, group)


def log_comparison(tracker: AdvancedExperimentTracker, comparison: ModelComparison, step: int = 0) -> None:
    """Record a comparison: `<model>/<metric>` means (and `_std`), a table and a bar chart per metric."""
    values: dict[str, float] = {}
    for model, per_metric in comparison.stats.items():
        for metric, (mean, std, _) in per_metric.items():
            name = metric.replace("/", "_")
            values[f"{model}/{name}"] = mean
            values[f"{model}/{name}_std"] = std
    tracker.log_metrics(values, step=step)
    tracker.log_table("comparison/table", comparison.columns(), comparison.rows(), step=step)
    tracker.log_figure(bar_chart(comparison), "comparison/bar_chart", step=step)


def bar_chart(comparison: ModelComparison):  # type: ignore[no-untyped-def]
    """One panel per metric, one bar per model, error bars of one standard deviation."""
    from matplotlib.figure import Figure  # no pyplot: safe on any thread, no GUI backend needed

    n = len(comparison.metrics)
    fig = Figure(figsize=(3.2 * n, 3.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    models = list(comparison.stats)
    for ax, metric in zip(axes, comparison.metrics, strict=True):
        means = [comparison.stats[m].get(metric, (math.nan, 0.0, 0))[0] for m in models]
        stds = [comparison.stats[m].get(metric, (math.nan, 0.0, 0))[1] for m in models]
        ax.bar(range(len(models)), means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(models))])
        ax.set_xticks(range(len(models)), [m.replace("Model", "") for m in models], fontsize=8)
        ax.set_title(metric, fontsize=9)
    return fig
