"""Opening a sweep's study: its storage (SQLite or any SQLAlchemy URL), sampler and pruner, and the check
that a resumed study was run with the same search space."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import redact_secrets
from .config import InvalidSweepError, SweepConfig
from .distributions import grid_search_space

if TYPE_CHECKING:
    import optuna

# Optuna's default: TPE draws its first 10 trials with its RandomSampler (same seed, same points as `random`).
TPE_STARTUP_TRIALS = 10


@contextlib.contextmanager
def no_experimental_warnings() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning: the heartbeat API and plots carry it though long in use."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _storage(url: str, heartbeat_interval: int) -> optuna.storages.RDBStorage:
    import optuna

    try:  # Optuna >= 4.9 renamed the callback class and its RDBStorage argument
        retry_cls: Any = optuna.storages.RetryHeartbeatStaleTrialCallback
        callback_arg = "heartbeat_stale_trial_callback"
    except AttributeError:
        retry_cls, callback_arg = optuna.storages.RetryFailedTrialCallback, "failed_trial_callback"
    # SQLite serialises writers; a long busy timeout lets worker processes queue instead of failing.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    kwargs = {callback_arg: retry_cls(max_retry=3)}
    storage = optuna.storages.RDBStorage(_driver_url(url), engine_kwargs=engine, heartbeat_interval=heartbeat_interval,
                                         **kwargs)
    if storage.engine.name == "sqlite":
        _tune_sqlite(storage.engine)
    return storage


def _driver_url(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is installed."""
    import importlib.util

    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def _tune_sqlite(engine: Any) -> None:
    """WAL journal + `synchronous=NORMAL`: readers (the progress poll, other workers) no longer block the
    writer, and a commit costs no fsync (WAL stays consistent on a crash; the last commits may be lost on
    power failure, which the heartbeat/retry path already covers)."""
    import sqlalchemy

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections predate the listener
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # persistent: stored in the database file


def _sampler(config: SweepConfig, seed: int, worker: int, n_existing: int) -> optuna.samplers.BaseSampler:
    import optuna

    if config.method == "grid":
        # Every process must shuffle the grid identically: grid ids index into the shuffled list.
        return _grid_sampler(grid_search_space(config), seed=seed)
    # Distinct streams per worker and per resumption, so workers (and a resumed sweep) do not replay the
    # same draws; a fresh single-worker sweep with the same seed is reproducible.
    seed = seed + 1_000_003 * n_existing + 7919 * worker
    if config.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)


@functools.cache
def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):  # type: ignore[misc]
        """Optuna's GridSampler, tolerating the grid points a resumed sweep enqueues (no `grid_id`)."""

        def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any,
                        values: Any) -> None:
            # The base class looks up the trial's grid_id to decide when to stop; an enqueued point has
            # none, and `StopWhenDone` already stops the sweep when every point is done.
            if "fixed_params" not in trial.system_attrs:
                super().after_trial(study, trial, state, values)

    return GridSampler


def _grid_sampler(search_space: dict[str, list[Any]], seed: int) -> Any:
    return _grid_sampler_class()(search_space, seed=seed)


def _pruner(config: SweepConfig) -> optuna.pruners.BasePruner:
    import optuna

    hb = config.early_terminate
    if hb is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=hb.min_iter, max_resource=hb.max_iter or "auto",
                                          reduction_factor=hb.eta)


def open_study(config: SweepConfig, storage_url: str, *, seed: int, heartbeat_interval: int,
               worker: int = 0) -> optuna.Study:
    """Create the study, or load it (resume) after checking it was run with the same config.

    Args:
        config: The sweep; its name names the study.
        storage_url: A SQLAlchemy URL.
        seed: The sampler seed (see `_sampler`).
        heartbeat_interval: Seconds between a running trial's heartbeats.
        worker: This process's worker index (distinct random streams per worker).
    """
    import optuna

    with no_experimental_warnings():
        storage = _storage(storage_url, heartbeat_interval)
    study = optuna.create_study(storage=storage, pruner=_pruner(config), study_name=config.name,
                                direction=config.goal, load_if_exists=True)
    _check_same_sweep(study, config, storage_url)
    study.sampler = _sampler(config, seed, worker, len(study.get_trials(deepcopy=False)))
    return study


def _check_same_sweep(study: optuna.Study, config: SweepConfig, storage_url: str) -> None:
    # What decides which trials exist and how they compare; `run_cap`, `metric.target` may change.
    mine = json.loads(json.dumps({"method": config.method, "parameters": config.raw.get("parameters"),
                                  "metric": [config.metric_name, config.goal]}, default=str))
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", mine)
        return
    changes = [change for key in mine for change in _changes(key, stored.get(key), mine[key])]
    if changes:
        first = next(key for key in mine if stored.get(key) != mine[key])
        raise InvalidSweepError(
            f"{first}: the study {config.name!r} in {redact_secrets(storage_url)} was run with another sweep: "
            f"{'; '.join(changes)}. Start a fresh study under this name with fresh=True (scripts/sweep.py "
            "--fresh; the old study and its runs are kept under '<name>-<date>'), or give the sweep another name")


def _changes(key: str, old: Any, new: Any) -> list[str]:
    """What differs between the stored and the new value of `key`, parameter by parameter."""
    if old == new:
        return []
    if key != "parameters" or not isinstance(old, dict) or not isinstance(new, dict):
        return [f"{key} {old!r} -> {new!r}"]
    return ([f"parameters.{n} added" for n in new if n not in old]
            + [f"parameters.{n} removed" for n in old if n not in new]
            + [f"parameters.{n} {old[n]!r} -> {new[n]!r}" for n in new if n in old and old[n] != new[n]])


def study_exists(name: str, storage_url: str) -> bool:
    """Whether the storage holds study `name`; a SQLite file that does not exist is not created."""
    import optuna

    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).is_file():
        return False
    return name in optuna.get_all_study_names(storage=_driver_url(storage_url))


def archive_study(name: str, storage_url: str, folder: Path, log_dir: Path) -> str | None:
    """Move study `name` out of the way, kept under `<name>-<YYYYmmdd-HHMMSS>`: the study (copied, then
    deleted), its folder of plots and runs (`folder`, renamed beside it) and, when the runs went to another
    `log_dir`, each of its runs (moved into `<log_dir>/<archive>/`), so a fresh study's runs start empty.

    Returns:
        The archive's name, or None when the storage holds no study `name`.
    """
    import optuna

    if not study_exists(name, storage_url):
        return None
    url = _driver_url(storage_url)
    archive = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    old = optuna.load_study(study_name=name, storage=url)
    runs = {t.user_attrs["run_name"] for t in old.get_trials(deepcopy=False) if "run_name" in t.user_attrs}
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=url, to_study_name=archive)
    optuna.delete_study(study_name=name, storage=url)
    if folder.is_dir():
        folder.rename(folder.with_name(archive))
    if log_dir.resolve() != folder.resolve():
        for run in sorted(runs | {f"{name}-summary"}):
            if (log_dir / run).is_dir():
                (log_dir / archive).mkdir(exist_ok=True)
                (log_dir / run).rename(log_dir / archive / run)
    return archive


def sweep_storage_url(name: str, root: str | os.PathLike[str] = "runs/sweeps") -> str:
    """The default storage of sweep `name`: the SQLite file `<root>/<name>.db`."""
    path = Path(root) / f"{name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"
