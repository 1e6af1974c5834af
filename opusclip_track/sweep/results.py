"""Sweep results: every trial as a `TrialRecord`, the `SweepResult` summary and its plots."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from ..config import redact_secrets
from ._study import no_experimental_warnings
from .config import Goal, SweepConfig
from .distributions import decode_params

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

TrialStateName = Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a sweep, as the summary shows it."""

    number: int
    state: TrialStateName
    params: dict[str, Any]
    value: float | None
    """The final metric; for a pruned trial, its last reported value."""
    steps: int = 0
    """How many intermediate values the trial reported."""
    run_name: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """The outcome of a sweep: best trial, every trial, the history plot."""

    name: str
    metric: str
    goal: Goal
    best_params: dict[str, Any] | None
    best_value: float | None
    best_number: int | None
    trials: list[TrialRecord]
    storage: str
    """The study's storage URL (password redacted)."""
    plot_path: Path | None = None

    def completed(self) -> list[TrialRecord]:
        """The trials that finished normally."""
        return [t for t in self.trials if t.state == "COMPLETE"]

    def format_table(self) -> str:
        """A plain-text table of trials: number, state, value, parameters; the best is marked `*`."""
        names = list(dict.fromkeys(k for t in self.trials for k in t.params))
        header = ["", "trial", "state", self.metric, *names]
        rows = [["*" if t.number == self.best_number else "", str(t.number), t.state, _fmt(t.value),
                 *(_fmt(t.params.get(n, "")) for n in names)] for t in self.trials]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        best = ("no completed trial" if self.best_number is None else
                f"best trial {self.best_number}: {self.metric}={_fmt(self.best_value)} {self.best_params}")
        return f"sweep {self.name!r} ({self.goal} {self.metric}): {best}\n{self.format_table()}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def record(config: SweepConfig, trial: optuna.trial.FrozenTrial) -> TrialRecord:
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return TrialRecord(number=trial.number, state=cast(TrialStateName, trial.state.name),
                       params=decode_params(config, trial.params), value=value, steps=len(trial.intermediate_values),
                       run_name=trial.user_attrs.get("run_name"))


def summarize(study: optuna.Study, config: SweepConfig, folder: str | os.PathLike[str] | None = None,
              storage: str = "") -> SweepResult:
    """Summarize a study: best parameters and value, every trial, and (with `folder`) a history plot PNG."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = (min if config.goal == "minimize" else max)(done, key=lambda t: float(cast(float, t.value))) if done \
        else None
    plot = _save_history_plot(study, Path(folder)) if folder is not None and done else None
    return SweepResult(name=config.name, metric=config.metric_name, goal=config.goal,
                       best_params=decode_params(config, best.params) if best else None,
                       best_value=best.value if best else None, best_number=best.number if best else None,
                       trials=[record(config, t) for t in trials], storage=redact_secrets(storage),
                       plot_path=plot)


def _save_history_plot(study: optuna.Study, folder: Path) -> Path:
    import matplotlib.pyplot as plt  # headless machines fall back to Agg on their own
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "optimization_history.png"
    with no_experimental_warnings():
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    figure = cast("Figure", ax.figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
