"""The local engine's workers: the function Optuna calls per trial, the worker processes sharing a study,
and the progress reported back to the calling process.

A worker process (spawned) imports this module, Optuna and the objective's module, nothing heavier.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._grid import cap, counts
from ._study import no_experimental_warnings, open_study
from .config import SweepConfig
from .results import TrialRecord, record
from .trial import Objective, resolve_objective, run_trial

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs to join the study (picklable)."""

    config: SweepConfig
    objective: Any  # Objective | str
    storage_url: str
    seed: int
    heartbeat_interval: int
    track: bool
    tracking: dict[str, Any]
    worker: int = 0
    n_trials: int = 0


class StopWhenDone:
    """Optuna callback: stop this worker once the sweep reached `run_cap` or the metric's `target`."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        limit, metric = cap(self.config), self.config.metric
        if limit is not None and counts(study, self.config)[0] >= limit:
            study.stop()
        if metric is not None and metric.target is not None and trial.value is not None:
            reached = trial.value <= metric.target if metric.goal == "minimize" else trial.value >= metric.target
            if reached:
                study.stop()


class _OptunaObjective:
    """The function Optuna calls: resolves the user's objective once per process, runs a tracked trial."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._fn: Objective | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        if self._fn is None:
            self._fn = resolve_objective(self.job.objective)
        # Where the trial ran: which worker of which machine (to find its logs).
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        return run_trial(self.job.config, self._fn, trial, track=self.job.track, tracking=self.job.tracking)


def optimize(study: optuna.Study, job: Job, callbacks: Sequence[Callable[..., None]] = ()) -> None:
    """Run `job.n_trials` trials of `study` in this process (stopping early at the cap or target)."""
    # Exceptions are recorded as FAIL trials (the sweep goes on, like a W&B agent); their tracebacks
    # are logged by Optuna.
    with no_experimental_warnings():
        study.optimize(_OptunaObjective(job), n_trials=job.n_trials, catch=(Exception,),
                       callbacks=[StopWhenDone(job.config), *callbacks])


def _worker_main(job: Job) -> None:
    """Entry point of a worker process (spawned): join the study and run this worker's share."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(job.config, job.storage_url, seed=job.seed, heartbeat_interval=job.heartbeat_interval,
                       worker=job.worker)
    optimize(study, job)


TrialCallback = Callable[[TrialRecord, int, int], None]
"""`on_trial_end(record, finished, planned)`: called in the calling process as trials finish; `finished` and
`planned` count the trials of this `run_sweep` call."""


@dataclass
class Progress:
    """Reports each finished trial once to `callback`, in trial-number order."""

    callback: TrialCallback | None
    seen: set[int]
    finished: int = 0
    planned: int = 0

    def report(self, config: SweepConfig, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        for t in sorted(trials, key=lambda t: t.number):
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                self.finished += 1
                if self.callback is not None:
                    self.callback(record(config, t), self.finished, max(self.planned, self.finished))


def run_round(study: optuna.Study, job: Job, n_trials: int, workers: int, progress: Progress) -> list[int]:
    """Run `n_trials` trials over `workers` processes; returns the exit codes of failed workers."""
    progress.seen |= {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    progress.planned += n_trials

    def report(trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        progress.report(job.config, trials)

    shares = [share for i in range(workers) if (share := n_trials // workers + (i < n_trials % workers))]
    if len(shares) == 1:  # one process's worth of work (e.g. a retried trial) runs here, no spawn
        optimize(study, replace(job, n_trials=n_trials), [lambda s, t: report([t])])
        return []
    ctx = multiprocessing.get_context("spawn")  # fork would copy live DB connections and threads
    procs = [ctx.Process(target=_worker_main, args=(replace(job, worker=i, n_trials=share),),
                         name=f"sweep-{job.config.name}-worker{i}")
             for i, share in enumerate(shares)]
    for proc in procs:
        proc.start()
    while any(p.is_alive() for p in procs):
        time.sleep(0.5)
        report(study.get_trials(deepcopy=False))
    for proc in procs:
        proc.join()
    report(study.get_trials(deepcopy=False))
    return [p.exitcode for p in procs if p.exitcode]  # type: ignore[misc]
