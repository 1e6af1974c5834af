"""Grid and run-cap bookkeeping: which grid points are done, which are owed, how many trials finished."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import SweepConfig
from .distributions import grid_search_space

if TYPE_CHECKING:
    import optuna


def point(config: SweepConfig, params: Mapping[str, Any]) -> tuple[Any, ...]:
    """A grid point as a hashable key (raw Optuna params or enqueued `fixed_params` alike)."""
    return tuple(repr(params.get(n)) for n in grid_search_space(config))


def enqueue_grid_remainder(study: optuna.Study, config: SweepConfig, finished_before: set[int]) -> int:
    """On resume, queue every grid point nobody finished, runs or has queued; returns how many can run.

    Points that failed before this call are queued again; a point that failed during it is not (it would
    fail again in a loop).

    A waiting trial is popped atomically by exactly one worker, so no point runs twice; GridSampler's
    own choice among unvisited points would be the same in every process (same seed) and could collide,
    and it treats failed points as visited (never re-run).
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if not trials:
        return cap(config) or 0  # fresh study: GridSampler maps trial number -> grid point, uniquely
    kept = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    taken = {point(config, t.system_attrs.get("fixed_params", t.params)) for t in trials
             if t.state in kept or (t.state == TrialState.FAIL and t.number not in finished_before)}
    space = grid_search_space(config)
    for grid_id, values in enumerate(_product(space)):
        params = dict(zip(space, values, strict=True))
        if point(config, params) not in taken:
            study.enqueue_trial(params, user_attrs={"grid_point": grid_id})
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _product(space: Mapping[str, list[Any]]) -> list[tuple[Any, ...]]:
    return list(itertools.product(*space.values()))


def counts(study: optuna.Study, config: SweepConfig) -> tuple[int, int]:
    """(finished runs, running trials); grid sweeps count distinct finished grid points."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    done = [t for t in trials if t.state != TrialState.RUNNING]
    n_done = len({point(config, t.params) for t in done}) if config.method == "grid" else len(done)
    return n_done, len(trials) - len(done)


def cap(config: SweepConfig) -> int | None:
    """How many finished trials end the sweep: the grid size (or run_cap below it), else run_cap or None."""
    if config.method == "grid":
        return min(config.grid_size, config.run_cap or config.grid_size)
    return config.run_cap
