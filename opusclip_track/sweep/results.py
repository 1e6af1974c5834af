"""Sweep results: every trial as a `TrialRecord`, the `SweepResult` summary, its figures, parameter importances
and HTML report.

Figures and importances are Optuna's own (`optuna.visualization.matplotlib`, `optuna.importance` with fANOVA),
written next to the study's runs as `optimization_history.png`, `parallel_coordinate.png` and
`param_importances.png`; `write_report` puts them, the trials best first and the trial runs into one offline HTML
page (`report.html`, with `stats.json`).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from .._text import format_number, format_table
from ..config import redact_secrets
from ._study import TPE_STARTUP_TRIALS, no_experimental_warnings
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
    error: str | None = None
    """A failed trial's exception, `"Type: message"` (secrets redacted)."""


@dataclass(frozen=True)
class SweepResult:
    """The outcome of a sweep: best trial, every trial, figures, parameter importances and notes."""

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
    """The optimization history PNG (also in `figures`)."""
    figures: dict[str, Path] = field(default_factory=dict)
    """`optimization_history`, `parallel_coordinate`, `param_importances` -> PNG path (those written)."""
    importances: dict[str, float] | None = None
    """Parameter -> fANOVA importance (summing to 1) over the completed trials; None when they cannot say."""
    notes: tuple[str, ...] = ()
    """What the numbers alone do not say: an already complete sweep, repeated points, missing importances."""
    ran: tuple[int, ...] = ()
    """The numbers of the trials this call ran (a resumed sweep's earlier trials are not among them)."""
    already_complete: bool = False
    """True when the sweep had nothing left to run (its grid or run_cap was done before this call)."""
    report: Path | None = None
    """The HTML report of the trial runs (`write_report`), when one was written (or exists, for a complete sweep)."""

    def completed(self) -> list[TrialRecord]:
        """The trials that finished normally."""
        return [t for t in self.trials if t.state == "COMPLETE"]

    def ranked(self) -> list[TrialRecord]:
        """Every trial, best first: completed ones by value (the goal's way), then pruned ones by their last
        reported value, then running and waiting ones, then failed ones; ties by trial number."""
        sign = 1.0 if self.goal == "minimize" else -1.0
        order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 2, "FAIL": 3}

        def key(t: TrialRecord) -> tuple[int, float, int]:
            value = sign * t.value if t.value is not None and t.state in ("COMPLETE", "PRUNED") else math.inf
            return order.get(t.state, 3), value, t.number

        return sorted(self.trials, key=key)

    def failure(self) -> str | None:
        """When every trial this call ran failed: the first one's error (None if any finished, or none ran)."""
        mine = [t for t in self.trials if t.number in self.ran]
        if not mine or any(t.state in ("COMPLETE", "PRUNED") for t in mine):
            return None
        first = min(mine, key=lambda t: t.number)
        return f"trial {first.number}: {first.error or 'failed (its traceback is in the log above)'}"

    def format_table(self) -> str:
        """A plain-text table of trials: number, state, value, parameters; the best is marked `*`."""
        names = list(dict.fromkeys(k for t in self.trials for k in t.params))
        header = ["", "trial", "state", self.metric, *names]
        rows = [["*" if t.number == self.best_number else "", str(t.number), t.state, format_number(t.value),
                 *(format_number(t.params.get(n, "")) for n in names)] for t in self.trials]
        return format_table(header, rows)

    def format_importances(self) -> str | None:
        """`"parameter importances (fANOVA, 4 completed trials): lr 0.81, width 0.19"`, or None."""
        if not self.importances:
            return None
        ranked = ", ".join(f"{name} {value:.2f}" for name, value in self.importances.items())
        return f"parameter importances (fANOVA, {len(self.completed())} completed trials): {ranked}"

    def __str__(self) -> str:
        best = ("no completed trial" if self.best_number is None else
                f"best trial {self.best_number}: {self.metric}={format_number(self.best_value)} {self.best_params}")
        lines = [f"sweep {self.name!r} ({self.goal} {self.metric}): {best}", *(f"note: {n}" for n in self.notes),
                 self.format_table()]
        importances = self.format_importances()
        return "\n".join([*lines, importances] if importances else lines)


def write_report(result: SweepResult, log_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 json_path: str | os.PathLike[str] | None = None) -> Path | None:
    """Write the offline HTML report of a sweep's trial runs (`opusclip_track.report`), best trials first.

    The page opens with the sweep: every trial best first (state, value, parameters, error), the parameter
    importances and the sweep's plots (`result.figures`: parallel coordinates, importances, history; the PNGs are
    embedded, so the page stays one file). Then the usual report of the trial runs, in the same order, with the
    sweep's metric as the first chosen key (curves and statistics), then `train/loss`, `val/loss`, `video/*`.

    Args:
        result: The sweep's summary.
        log_dir: Where the trial runs are (`<root>/<sweep>/` for `run_sweep`).
        out: The HTML file (default `<log_dir>/report.html`).
        json_path: Every number as JSON (default `<log_dir>/stats.json`).

    Returns:
        The page's path, or None when no trial has a run under `log_dir` (untracked trials, or all elsewhere).
    """
    from ..report.build import SweepSection, SweepTrial, build_report
    from ..report.data import DEFAULT_KEYS
    from ..store import DB_NAME

    folder = Path(log_dir)
    ranked = result.ranked()
    runs = [folder / t.run_name for t in ranked if t.run_name and (folder / t.run_name / DB_NAME).is_file()]
    if not runs:
        return None
    section = SweepSection(
        name=result.name, metric=result.metric, goal=result.goal, best_number=result.best_number,
        trials=[SweepTrial(t.number, t.state, t.value, t.params, t.run_name, t.error) for t in ranked],
        importances=result.importances, figures=dict(result.figures), notes=result.notes)
    # One group, the sweep (a failed trial's run lacks the recipe's settings, so grouping by one of them would split
    # it off), unless the sweep chose the model: then its statistics compare the models.
    group_by = "hparams.model" if any("model" in t.params for t in ranked) else "group"
    out = folder / "report.html" if out is None else Path(out)
    written = build_report([str(r) for r in runs], out, keys=list(dict.fromkeys([result.metric, *DEFAULT_KEYS])),
                           group_by=group_by, json_path=folder / "stats.json" if json_path is None else Path(json_path),
                           sweep=section, title=f"sweep {result.name}: {len(runs)} trial runs ({result.goal} "
                           f"{result.metric})")
    return written.html


def record(config: SweepConfig, trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """A finished (or running) Optuna trial as the summary shows it, parameters in W&B's values."""
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return TrialRecord(number=trial.number, state=cast(TrialStateName, trial.state.name),
                       params=decode_params(config, planned_params(trial)), value=value,
                       steps=len(trial.intermediate_values), run_name=trial.user_attrs.get("run_name"),
                       error=trial.user_attrs.get("error"))


def planned_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Optuna's raw parameters of `trial`; for a trial that ended before its objective asked for them (a worker
    killed just after the trial started), the point it was given: the queued `fixed_params` or its grid point."""
    if trial.params:
        return dict(trial.params)
    fixed = trial.system_attrs.get("fixed_params")
    if fixed:
        return dict(fixed)
    space, grid_id = trial.system_attrs.get("search_space"), trial.system_attrs.get("grid_id")
    if isinstance(space, dict) and isinstance(grid_id, int):  # GridSampler: sorted names, cartesian product
        names = sorted(space)
        return dict(zip(names, list(itertools.product(*(space[n] for n in names)))[grid_id], strict=True))
    return {}


def summarize(study: optuna.Study, config: SweepConfig, folder: str | os.PathLike[str] | None = None,
              storage: str = "", *, ran: tuple[int, ...] = (), importances: bool = True,
              notes: tuple[str, ...] = ()) -> SweepResult:
    """Summarize a study: best parameters and value, every trial, parameter importances and notes.

    Args:
        study: The study.
        config: Its sweep config.
        folder: Where to write the figures (optimization history, parallel coordinates, importances); None
            writes none.
        storage: The storage URL to show (its password is redacted).
        ran: The trials this call ran (`SweepResult.failure` looks at them).
        importances: Compute parameter importances (imports scikit-learn for fANOVA: ~2 s once).
        notes: Notes to show first.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = (min if config.goal == "minimize" else max)(done, key=lambda t: float(cast(float, t.value))) if done \
        else None
    varying, why_not = _varying_params(done)
    ranked = _importances(study, varying) if importances and varying else None
    figures = _save_figures(study, Path(folder), varying, ranked is not None) if folder is not None and done else {}
    records = [record(config, t) for t in trials]
    return SweepResult(name=config.name, metric=config.metric_name, goal=config.goal,
                       best_params=decode_params(config, best.params) if best else None,
                       best_value=best.value if best else None, best_number=best.number if best else None,
                       trials=records, storage=redact_secrets(storage),
                       plot_path=figures.get("optimization_history"), figures=figures, importances=ranked,
                       notes=(*notes, *_sampling_notes(config, records), *([why_not] if importances and why_not
                                                                           else [])),
                       ran=ran)


def _varying_params(done: list[optuna.trial.FrozenTrial]) -> tuple[list[str], str | None]:
    """The parameters that took >= 2 values over the completed trials (importances need that), and a note."""
    if len(done) < 2:
        return [], (f"parameter importances need at least 2 completed trials with different values; this sweep "
                    f"has {len(done)}")
    if len({t.value for t in done}) < 2:  # fANOVA has no variance to split ("zero total variance")
        return [], (f"parameter importances need completed trials with different results; all {len(done)} "
                    f"gave {format_number(done[0].value)}")
    names = list(dict.fromkeys(name for t in done for name in t.params))
    varying = [n for n in names if len({repr(t.params.get(n)) for t in done}) >= 2]
    fixed = [n for n in names if n not in varying]
    if not varying:
        return [], (f"parameter importances need a parameter with at least 2 values among the completed "
                    f"trials; {', '.join(names) or 'none'} took one value each")
    return varying, (f"parameter importances leave out {', '.join(fixed)}: one value in every completed trial"
                     if fixed else None)


def _importances(study: optuna.Study, params: list[str]) -> dict[str, float]:
    import optuna

    # fANOVA fits a random forest: seeded, so the same trials give the same importances.
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    with no_experimental_warnings():
        ranked = optuna.importance.get_param_importances(study, evaluator=evaluator, params=params)
    return {name: float(value) for name, value in ranked.items()}


def _sampling_notes(config: SweepConfig, records: list[TrialRecord]) -> list[str]:
    """Say when random/bayes draws look alike: TPE's random start-up, repeated points of a small space."""
    finished = [t for t in records if t.state in ("COMPLETE", "PRUNED")]
    notes = []
    if config.method == "bayes" and 0 < len(finished) <= TPE_STARTUP_TRIALS:
        notes.append(f"bayes: TPE draws its first {TPE_STARTUP_TRIALS} trials at random, the same points as "
                     f"method random with the same seed; these {len(finished)} trials are all such draws, so bayes "
                     f"differs from random only after trial {TPE_STARTUP_TRIALS}")
    size = config.space_size
    distinct = len({repr(sorted(t.params.items())) for t in finished})
    if config.method != "grid" and size is not None and distinct < len(finished):
        notes.append(f"{config.method}: {len(finished)} trials drew only {distinct} distinct "
                     f"point{'s' if distinct > 1 else ''} of this {size}-point space (repeats); method grid runs "
                     "each point once")
    return notes


def _save_figures(study: optuna.Study, folder: Path, varying: list[str], importances: bool) -> dict[str, Path]:
    import optuna
    from optuna.trial import TrialState

    plots = optuna.visualization.matplotlib
    makers: dict[str, Any] = {"optimization_history": plots.plot_optimization_history}
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2 and varying:
        makers["parallel_coordinate"] = plots.plot_parallel_coordinate  # one line per completed trial
    if varying and importances:
        makers["param_importances"] = functools.partial(
            plots.plot_param_importances, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            params=varying)
    return {name: _save_figure(make, study, folder / f"{name}.png") for name, make in makers.items()}


def _save_figure(make: Any, study: optuna.Study, path: Path) -> Path:
    import matplotlib.pyplot as plt  # headless machines fall back to Agg on their own

    path.parent.mkdir(parents=True, exist_ok=True)
    with no_experimental_warnings(), warnings.catch_warnings():
        # A parameter with one value among the trials gets a flat axis: matplotlib widens it and warns.
        warnings.filterwarnings("ignore", "Attempting to set identical", UserWarning)
        ax = make(study)
    figure = cast("Figure", ax.figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
