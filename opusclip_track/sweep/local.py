"""The local engine: `run_sweep` runs (or resumes) a sweep on Optuna, in this process or worker processes."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._checks import argument_error, is_int
from ..config import redact_secrets
from ._grid import cap, counts, enqueue_grid_remainder
from ._study import archive_study, no_experimental_warnings, open_study, study_exists, sweep_storage_url
from ._workers import Job, Progress, TrialCallback, run_round
from .config import SweepConfig, SweepSource, invalid_sweep
from .results import SweepResult, summarize, write_report
from .trial import Objective, check_declared, check_objective, resolve_objective, tracked_run

if TYPE_CHECKING:
    import optuna


def run_sweep(config: SweepSource, objective: Objective | str, *,
              count: int | None = None, workers: int = 1, storage: str | None = None,
              root: str | os.PathLike[str] = "runs/sweeps", seed: int = 0, track: bool = True,
              tracking: Mapping[str, Any] | None = None, heartbeat_interval: int = 10, plot: bool = True,
              on_trial_end: TrialCallback | None = None, fresh: bool = False, report: bool = True) -> SweepResult:
    """Run (or resume) a sweep locally with Optuna and return its summary.

    The study is named after the sweep and kept in `storage` (default `sqlite:///<root>/<name>.db`), so
    calling this again resumes it: finished trials are kept, the count continues towards `run_cap` (grid:
    towards the grid size), failed or interrupted grid points are re-run; a sweep with nothing left returns at
    once (`SweepResult.already_complete`). A worker killed mid-trial stops sending heartbeats; after
    `2 * heartbeat_interval` s its trial is marked FAIL and re-queued with the same parameters, and this call
    waits for that before returning. Everything is checked before the first trial: the config, these
    arguments, the objective's declared parameters and metrics (`check_declared`), and that a resumed study
    has the same search space.

    Args:
        config: A `SweepConfig`, a W&B sweep dict, or a YAML file path.
        objective: `objective(params, trial_context) -> float`, or a `"module:function"` string. With
            `workers > 1` it must be importable (a module-level function).
        count: How many trials this call runs at most (W&B agent `count`); needed for random/bayes sweeps
            without `run_cap`.
        workers: Worker processes on this machine, all sharing the study.
        storage: A SQLAlchemy URL (`postgresql://user@host:5432/db`) shared by workers on many machines.
        root: Folder of the default SQLite storage and of the sweep's runs and figures (`<root>/<name>/`).
        seed: Sampler seed (random/bayes reproducible with one worker; grid order).
        track: Make each trial a tracked run (`AdvancedExperimentTracker`).
        tracking: Extra `TrackingConfig` fields for the trial runs (default `log_dir=<root>/<name>`).
        heartbeat_interval: Seconds between a running trial's heartbeats.
        plot: Save the optimization history, parallel coordinates and parameter importances as PNGs in
            `<root>/<name>/`.
        on_trial_end: Called in this process as trials finish: `(record, finished, planned)`.
        fresh: Start a new study under this name; an existing one is kept as `<name>-<YYYYmmdd-HHMMSS>`
            (study, and `<root>/<name>/` renamed beside it).
        report: With `track`, write the offline HTML report of the trial runs, best trials first, with the
            plots and importances (`<root>/<name>/report.html` and `stats.json`; `results.write_report`).

    Returns:
        The `SweepResult` (best parameters and value, every trial, figures, importances, notes, the report).

    Raises:
        InvalidSweepError: the sweep cannot start (see above); no trial ran.
    """
    with invalid_sweep():
        cfg = SweepConfig.coerce(config)
        _check_run_args(cfg, count, workers, heartbeat_interval, storage)
        checked = check_objective(objective, workers)
        folder = Path(root) / cfg.name
        url = storage or sweep_storage_url(cfg.name, root)
        job = Job(config=cfg, objective=checked, storage_url=url, seed=seed, heartbeat_interval=heartbeat_interval,
                  track=track, tracking={"log_dir": str(folder), **(tracking or {})})
        study, archived, done = _open(job, folder, fresh)
    notes = (f"started afresh; the earlier study is kept as {archived!r}",) if archived else ()
    if done is not None:  # nothing to run: say so at once, no figures or importances recomputed
        existing = Path(job.tracking["log_dir"]) / "report.html"  # where write_report put it
        return replace(summarize(study, cfg, storage=url, importances=False, notes=(*notes, done)),
                       already_complete=True, figures=_existing_figures(folder),
                       report=existing if existing.is_file() else None)
    ran = _run_until_owed(study, job, count, workers, on_trial_end)
    result = summarize(study, cfg, folder if plot else None, storage=url, ran=tuple(sorted(ran)), notes=notes)
    if track:
        _log_summary(result, job)
        if report:
            result = replace(result, report=write_report(result, job.tracking["log_dir"]))
    return result


def _open(job: Job, folder: Path, fresh: bool) -> tuple[optuna.Study, str | None, str | None]:
    """The sweep's study, the archive's name (`fresh`) and an "already complete: ..." note (or None).

    An existing study is opened first (same search space?) so that a finished one returns at once; a new one
    is created only once the objective accepts the sweep, so an invalid sweep leaves no study behind.
    """
    cfg, url = job.config, job.storage_url
    archived = archive_study(cfg.name, url, folder, Path(job.tracking["log_dir"])) if fresh else None
    existing = open_study(cfg, url, seed=job.seed, heartbeat_interval=job.heartbeat_interval) \
        if study_exists(cfg.name, url) else None
    done = _already_complete(existing, cfg) if existing is not None else None
    if existing is not None and done is not None:
        return existing, archived, done
    check_declared(cfg, resolve_objective(job.objective))
    study = existing or open_study(cfg, url, seed=job.seed, heartbeat_interval=job.heartbeat_interval)
    return study, archived, None


def _check_run_args(config: SweepConfig, count: int | None, workers: int, heartbeat_interval: int,
                    storage: str | None) -> None:
    if count is not None and (not is_int(count) or count <= 0):
        raise argument_error("count", "a positive integer or None", count)
    if cap(config) is None and count is None:
        raise argument_error("count", f"a positive integer: a {config.method} sweep without run_cap never ends", None)
    if not is_int(workers) or workers < 1:
        raise argument_error("workers", "a positive integer", workers)
    if not is_int(heartbeat_interval) or heartbeat_interval < 1:
        raise argument_error("heartbeat_interval", "a positive integer (seconds)", heartbeat_interval)
    if storage is not None and "://" not in storage:
        raise argument_error("storage", "a database URL such as 'sqlite:///sweep.db' or "
                     "'postgresql://user@host:5432/db'", redact_secrets(storage))


def _already_complete(study: optuna.Study, config: SweepConfig) -> str | None:
    """"already complete: ..." when the grid or run_cap is done and nothing runs, else None."""
    limit = cap(config)
    done, running = counts(study, config)
    if limit is None or done < limit or running:
        return None
    what = "grid points" if config.method == "grid" and limit == config.grid_size else "trials (run_cap)"
    return (f"already complete: {done} of {limit} {what} done, nothing to run; fresh=True (scripts/sweep.py "
            "--fresh) starts the sweep again")


def _existing_figures(folder: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted(folder.glob("*.png"))} if folder.is_dir() else {}


def _run_until_owed(study: optuna.Study, job: Job, count: int | None, workers: int,
                    on_trial_end: TrialCallback | None) -> set[int]:
    """Run rounds of trials until this call's share is done; wait out trials of dead workers.

    Returns:
        The numbers of the trials that finished during this call.
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    progress = Progress(on_trial_end, seen=set(before))
    failed_workers: list[int] = []
    while True:
        with no_experimental_warnings():  # trials of killed workers -> FAIL -> re-queued, same params
            fail_stale_trials(study)
        n = _owed(study, job.config, count, before, exclude_running=True)
        if job.config.method == "grid":  # only points nobody took: a re-run point would be a duplicate
            n = min(n, enqueue_grid_remainder(study, job.config, before))
        done_before = counts(study, job.config)[0]
        if n > 0:
            failed_workers += run_round(study, job, n, workers, progress)
        if _owed(study, job.config, count, before, exclude_running=False) == 0:
            break
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(job.heartbeat_interval)  # a dead worker's trial turns stale after the grace period
        elif not (n > 0 and counts(study, job.config)[0] > done_before):
            break  # nothing running and the last round made no progress: its trials fail; stop here
    if failed_workers:
        warnings.warn(f"sweep {job.config.name!r}: worker processes exited with codes {failed_workers}; "
                      "see their output above", RuntimeWarning, stacklevel=3)
    return {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()} - before


def _owed(study: optuna.Study, config: SweepConfig, count: int | None, before: set[int],
          exclude_running: bool) -> int:
    """Trials this call still has to run: within `count` (trials it ran) and the cap (trials done)."""
    limit = cap(config)
    done, running = counts(study, config)
    ran = len({t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()} - before)
    budget = [count - ran if count is not None else math.inf,
              limit - done - (running if exclude_running else 0) if limit is not None else math.inf]
    return int(max(0, min(budget)))


def _log_summary(result: SweepResult, job: Job) -> None:
    """A `<sweep>-summary` run holding the summary (text) and the best trial's hyperparameters."""
    with tracked_run(result.name, f"{result.name}-summary", job.tracking) as tracker:
        tracker.log_text("sweep/summary", f"```\n{result}\n```")
        if result.best_params is not None and result.best_value is not None:
            tracker.log_hyperparameters(result.best_params, metrics={result.metric: result.best_value})
