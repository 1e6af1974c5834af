"""Sweeps: W&B config parsing, the Optuna engine on real SQLite and PostgreSQL, resume after SIGKILL,
worker processes, hyperband pruning, tracked trial runs, the W&B engine's online requirement."""

from __future__ import annotations

import copy
import itertools
import math
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from _postgres import postgres_server
from opusclip_track.sweep import SweepConfig, SweepResult, TrialContext, run_sweep, run_wandb_sweep

optuna.logging.set_verbosity(optuna.logging.WARNING)
REPO = Path(__file__).resolve().parents[1]


def grid(name: str = "g", **parameters: list[Any]) -> dict[str, Any]:
    params = parameters or {"lr": [0.001, 0.01], "wd": [0.0, 0.1]}
    return {"name": name, "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
            "parameters": {k: {"values": v} for k, v in params.items()}}


def points(result: SweepResult, state: str = "COMPLETE") -> list[tuple[Any, ...]]:
    return [tuple(sorted(t.params.items())) for t in result.trials if t.state == state]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from postgres_server()


# ---- config parsing and validation ------------------------------------------------------------------
def test_config_infers_distributions_like_wandb_and_round_trips_unchanged() -> None:
    raw = {"name": "demo", "method": "random", "program": "train.py", "command": ["${program}"],
           "metric": {"name": "val/psnr", "goal": "maximize"}, "run_cap": 8,
           "early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2},
           "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
                          "depth": {"min": 2, "max": 8}, "dropout": {"min": 0.0, "max": 0.5},
                          "opt": {"values": ["adam", "sgd"]}, "epochs": {"value": 3}}}
    original = copy.deepcopy(raw)
    cfg = SweepConfig.from_dict(raw)
    kinds = {n: p.distribution for n, p in cfg.parameters.items()}
    assert kinds == {"lr": "log_uniform_values", "depth": "int_uniform", "dropout": "uniform",
                     "opt": "categorical", "epochs": "constant"}
    assert (cfg.metric_name, cfg.goal, cfg.run_cap) == ("val/psnr", "maximize", 8)
    hb = cfg.early_terminate
    assert hb is not None and (hb.min_iter, hb.eta, hb.max_iter) == (3, 3, 27)  # 27 / 3**2
    assert cfg.to_dict() == original and raw == original  # what W&B receives, untouched


def test_yaml_examples_parse_and_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    quick = SweepConfig.from_yaml(REPO / "sweeps" / "quick_grid.yaml")
    assert quick.method == "grid" and quick.grid_size == 4
    bayes = SweepConfig.from_yaml(REPO / "sweeps" / "bayes_hyperband.yaml")
    assert bayes.method == "bayes" and bayes.early_terminate is not None
    path = tmp_path / "my_sweep.yaml"
    path.write_text("method: grid\nparameters:\n  a:\n    values: [1, 2]\n")
    assert SweepConfig.from_yaml(path).name == "my_sweep"


BASE = {"method": "random", "metric": {"name": "loss"}, "parameters": {"lr": {"min": 0.001, "max": 0.1}}}


@pytest.mark.parametrize(("patch", "message"), [
    ({"method": "hill"}, "method: expected one of ['grid', 'random', 'bayes'], received 'hill'"),
    ({"parameters": {"lr": {"min": 0.5, "max": 0.1}}},
     "parameters.lr.min: expected a number < max (0.1), received 0.5"),
    ({"parameters": {"lr": {"distribution": "gamma", "min": 0, "max": 1}}},
     "parameters.lr.distribution: expected one of"),
    ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0}}},
     "parameters.lr.min: expected a number > 0 (log_uniform_values takes values, not exponents), received 0.0"),
    ({"parameters": {"n": {"distribution": "int_uniform", "min": 1.5, "max": 4}}},
     "parameters.n.min: expected an integer (int_uniform), received 1.5"),
    ({"parameters": {"lr": {"distribution": "uniform", "min": 0.0}}}, "parameters.lr.max: expected a value"),
    ({"parameters": {"lr": {"distribution": "uniform", "min": 0.0, "max": 1.0, "mu": 3}}},
     "parameters.lr.mu: expected no 'mu' for uniform"),
    ({"parameters": {"lr": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}}},
     "parameters.lr.q: expected a number > 0, received 0"),
    ({"parameters": {"lr": {"distribution": "normal", "sigma": -1}}},
     "parameters.lr.sigma: expected a number > 0, received -1"),
    ({"parameters": {"lr": {"min": "0.1", "max": 1}}}, "parameters.lr.min: expected a finite number, received '0.1'"),
    ({"parameters": {"o": {"values": []}}}, "parameters.o.values: expected a non-empty list, received []"),
    ({"parameters": {"o": {"values": [1, 1]}}}, "parameters.o.values: expected distinct values"),
    ({"parameters": {"o": {"values": [1, 2], "probabilities": [0.5, 0.6]}}},
     "parameters.o.probabilities: expected numbers summing to 1, received [0.5, 0.6]"),
    ({"parameters": {"o": {"mu": 1}}}, "parameters.o: expected 'value', 'values', 'min' and 'max'"),
    ({"parameters": {"o": {"parameters": {"a": {"value": 1}}}}}, "parameters.o.parameters: expected flat"),
    ({"parameters": {"9lives": {"value": 1}}}, "parameters: expected names of letters"),
    ({"parameters": {}}, "parameters: expected a non-empty mapping"),
    ({"metric": {"name": "loss", "goal": "up"}}, "metric.goal: expected 'minimize' or 'maximize', received 'up'"),
    ({"metric": {"goal": "minimize"}}, "metric.name: expected a non-empty string, received None"),
    ({"method": "bayes", "metric": None}, "metric: expected a mapping with 'name' (bayes search needs the metric"),
    ({"run_cap": 0}, "run_cap: expected a positive integer, received 0"),
    ({"early_terminate": {"type": "median"}}, "early_terminate.type: expected 'hyperband', received 'median'"),
    ({"early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 2.5}},
     "early_terminate.eta: expected an integer >= 2 (Optuna's reduction_factor), received 2.5"),
    ({"early_terminate": {"type": "hyperband"}}, "early_terminate: expected 'min_iter', or 'max_iter' with 's'"),
    ({"early_terminate": {"type": "hyperband", "min_iter": 4, "max_iter": 2}},
     "early_terminate.max_iter: expected an integer > min_iter (4), received 2"),
    ({"metrics": [{"name": "a"}, {"name": "b"}]}, "metrics: expected one of the W&B sweep keys"),
    ({"name": ""}, "name: expected a non-empty string, received ''"),
    ({"method": "grid"}, "parameters.lr: expected a finite discrete parameter for grid search"),
    ({"method": "grid", "parameters": {"o": {"values": [1, 2], "probabilities": [0.5, 0.5]}}},
     "parameters.o.probabilities: expected no probabilities"),
])
def test_every_invalid_field_gets_an_error_naming_it(patch: dict[str, Any], message: str) -> None:
    config = {**copy.deepcopy(BASE), **patch}
    if config.get("metric") is None:
        config.pop("metric")
    with pytest.raises(ValueError) as info:
        SweepConfig.from_dict(config)
    assert message in str(info.value)


def test_bad_run_arguments_are_named(tmp_path: Path) -> None:
    cfg = SweepConfig.from_dict(BASE)
    with pytest.raises(ValueError, match="count: expected a positive integer: a random sweep without run_cap"):
        run_sweep(cfg, "_sweep_objectives:quadratic", root=tmp_path, track=False)
    with pytest.raises(ValueError, match="workers: expected a positive integer, received 0"):
        run_sweep(cfg, "_sweep_objectives:quadratic", count=1, workers=0, track=False)
    with pytest.raises(ValueError, match="storage: expected a database URL"):
        run_sweep(cfg, "_sweep_objectives:quadratic", count=1, storage="sweeps.db", track=False)
    with pytest.raises(ValueError, match="objective: expected an importable 'module:function'"):
        run_sweep(cfg, "_sweep_objectives:nope", count=1, track=False)
    with pytest.raises(ValueError, match="objective: expected a module-level function .* when workers > 1"):
        run_sweep(cfg, lambda params, trial: 0.0, count=2, workers=2, track=False)


# ---- the local engine ---------------------------------------------------------------------------------
def test_grid_runs_exactly_the_cartesian_product_then_nothing_more(tmp_path: Path) -> None:
    from _sweep_objectives import quadratic

    result = run_sweep(grid(), quadratic, root=tmp_path, track=False)
    expected = {(("lr", lr), ("wd", wd)) for lr, wd in itertools.product([0.001, 0.01], [0.0, 0.1])}
    assert len(result.trials) == 4 and set(points(result)) == expected
    assert result.best_params == {"lr": 0.01, "wd": 0.0} and result.best_value == 0.0
    assert (tmp_path / "g.db").is_file() and result.plot_path == tmp_path / "g" / "optimization_history.png"
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = result.format_table().splitlines()
    assert table[0].split() == ["trial", "state", "val/loss", "lr", "wd"] and len(table) == 6
    assert sum(line.startswith("*") for line in table) == 1
    again = run_sweep(grid(), quadratic, root=tmp_path, track=False, plot=False)  # all done: resumes, runs none
    assert len(again.trials) == 4


def test_grid_walks_int_uniform_q_uniform_and_keeps_constants(tmp_path: Path) -> None:
    config = {"name": "g2", "method": "grid", "parameters": {
        "n": {"distribution": "int_uniform", "min": 1, "max": 3},
        "q": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 5},
        "shape": {"values": [[8, 8], [16, 16]]}, "lr": {"value": 0.01}}}
    result = run_sweep(config, lambda p, t: float(p["n"] + p["q"]), root=tmp_path, track=False, plot=False)
    combos = {(t.params["n"], t.params["q"], tuple(t.params["shape"])) for t in result.trials}
    assert combos == set(itertools.product([1, 2, 3], [0, 5, 10], [(8, 8), (16, 16)]))
    assert all(t.params["lr"] == 0.01 and t.state == "COMPLETE" for t in result.trials)
    assert result.metric == "objective" and result.best_value == 1.0


SPACE = {
    "u": {"distribution": "uniform", "min": -1.0, "max": 1.0},
    "n": {"distribution": "int_uniform", "min": 3, "max": 7},
    "lv": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
    "le": {"distribution": "log_uniform", "min": -2.0, "max": 0.0},  # exponents: values in [e^-2, 1]
    "qu": {"distribution": "q_uniform", "min": 0, "max": 64, "q": 8},
    "qlv": {"distribution": "q_log_uniform_values", "min": 16, "max": 512, "q": 16},
    "nrm": {"distribution": "q_normal", "mu": 10.0, "sigma": 2.0, "q": 0.5},
    "w": {"values": ["a", "b"], "probabilities": [0.0, 1.0]},
    "c": {"values": ["x", "y", "z"]},
}


def _check_bounds(params: dict[str, Any]) -> None:
    assert -1.0 <= params["u"] <= 1.0
    assert isinstance(params["n"], int) and 3 <= params["n"] <= 7
    assert 1e-5 <= params["lv"] <= 1e-2
    assert math.exp(-2) <= params["le"] <= 1.0
    assert isinstance(params["qu"], int) and params["qu"] % 8 == 0 and 0 <= params["qu"] <= 64
    assert isinstance(params["qlv"], int) and params["qlv"] % 16 == 0 and 16 <= params["qlv"] <= 512
    assert (params["nrm"] / 0.5).is_integer() and 0 < params["nrm"] < 20
    assert params["w"] == "b" and params["c"] in {"x", "y", "z"}


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_bayes_are_reproducible_and_respect_bounds(tmp_path: Path, method: str) -> None:
    config = {"name": method, "method": method, "metric": {"name": "loss"}, "parameters": SPACE}

    def objective(params: dict[str, Any], trial: TrialContext) -> float:
        return (math.log10(params["lv"]) + 3) ** 2 + abs(params["u"])

    count = 12  # bayes: 10 random start-up trials, then TPE proposals
    runs = [run_sweep(config, objective, count=count, seed=s, root=tmp_path / f"{i}-{s}", track=False, plot=False)
            for i, s in enumerate([7, 7, 8])]
    sampled = [[t.params for t in r.trials] for r in runs]
    assert len(sampled[0]) == count and all(t.state == "COMPLETE" for t in runs[0].trials)
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]
    for params in sampled[0] + sampled[2]:
        _check_bounds(params)


def test_hyperband_prunes_trials_that_are_clearly_worse(tmp_path: Path) -> None:
    config = {"name": "hb", "method": "random", "metric": {"name": "loss"},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "max_iter": 9, "eta": 3},
              "parameters": {"offset": {"min": 0.0, "max": 100.0}}}
    result = run_sweep(config, "_sweep_objectives:learning_curve", count=30, seed=1, root=tmp_path,
                       track=False, plot=False)
    pruned = [t for t in result.trials if t.state == "PRUNED"]
    complete = [t for t in result.trials if t.state == "COMPLETE"]
    assert pruned and complete and len(pruned) + len(complete) == 30
    assert any(t.steps < 9 for t in pruned) and all(t.steps == 9 for t in complete)
    best = min(t.params["offset"] for t in result.trials)
    assert any(t.params["offset"] == best for t in complete)  # the best trial is never pruned
    assert min(t.params["offset"] for t in pruned) > best


def test_failing_trials_are_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    def objective(params: dict[str, Any], trial: TrialContext) -> Any:
        return None if params["lr"] == 0.001 else 1.0

    result = run_sweep(grid(lr=[0.001, 0.01, 0.1]), objective, root=tmp_path, track=False, plot=False)
    assert Counter(t.state for t in result.trials) == {"COMPLETE": 2, "FAIL": 1}
    assert result.best_params is not None and result.best_params["lr"] != 0.001


def test_run_cap_counts_across_calls_and_a_changed_config_is_refused(tmp_path: Path) -> None:
    config = {**BASE, "name": "cap", "run_cap": 5}
    first = run_sweep(config, "_sweep_objectives:quadratic", count=3, root=tmp_path, track=False, plot=False)
    second = run_sweep(config, "_sweep_objectives:quadratic", count=10, root=tmp_path, track=False, plot=False)
    assert len(first.trials) == 3 and len(second.trials) == 5
    assert len({t.params["lr"] for t in second.trials}) == 5  # the resumed sampler does not replay draws
    changed = {**config, "parameters": {"lr": {"min": 0.001, "max": 0.5}}}
    with pytest.raises(ValueError, match="parameters: the study 'cap' .* was run with"):
        run_sweep(changed, "_sweep_objectives:quadratic", count=1, root=tmp_path, track=False)


def test_two_workers_share_a_grid_and_a_sigkilled_workers_trial_is_rerun(tmp_path: Path) -> None:
    config = grid("w2", lr=[0.001, 0.01, 0.1], wd=[0.0, 0.1, 0.2])
    storage = f"sqlite:///{tmp_path / 'w2.db'}"
    outcome: dict[str, Any] = {}
    seen: list[int] = []

    def sweep() -> None:
        with pytest.warns(RuntimeWarning, match=r"worker processes exited with codes \[-9\]"):
            outcome["result"] = run_sweep(
                config, "_sweep_objectives:slow_quadratic", workers=2, root=tmp_path, track=False, plot=False,
                heartbeat_interval=1, on_trial_end=lambda record, finished, planned: seen.append(finished))

    thread = threading.Thread(target=sweep)
    thread.start()
    victim = _wait_for(lambda: _running_worker_after_some_complete(tmp_path / "w2.db"))
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    result: SweepResult = outcome["result"]

    completed = points(result)
    assert len(completed) == 9 and len(set(completed)) == 9  # every grid point once, none twice
    (failed,) = [t for t in result.trials if t.state == "FAIL"]  # the killed worker's trial, found stale
    assert tuple(sorted(failed.params.items())) in completed  # ...and re-run
    pids = Counter(t.user_attrs["pid"] for t in optuna.load_study(study_name="w2", storage=storage).trials)
    assert victim in pids and len(pids) >= 2  # the trials ran in two worker processes
    assert len(seen) >= 9 and seen == sorted(seen)  # progress of every finished trial, in order


def test_a_stopped_grid_resumes_without_rerunning_finished_points_and_reruns_failed_ones(
        tmp_path: Path) -> None:
    config = grid("resume", lr=[0.001, 0.01, 0.1], wd=[0.0, 0.1])
    calls: list[tuple[float, float]] = []

    def flaky(params: dict[str, Any], trial: TrialContext) -> float:
        calls.append((params["lr"], params["wd"]))
        if len(calls) == 2:
            raise RuntimeError("out of memory")  # the second trial of the first session fails
        return (params["lr"] - 0.01) ** 2 + params["wd"]

    first = run_sweep(config, flaky, count=3, root=tmp_path, track=False, plot=False)  # stopped after 3
    assert Counter(t.state for t in first.trials) == {"COMPLETE": 2, "FAIL": 1}
    failed_point = calls[1]
    second = run_sweep(config, flaky, root=tmp_path, track=False, plot=False)  # same command again
    completed = points(second)
    assert len(completed) == 6 and len(set(completed)) == 6
    assert len(calls) == 3 + 4 and calls[3:].count(failed_point) == 1  # 3 new points + the failed one
    assert Counter(calls)[calls[0]] == 1 and Counter(calls)[calls[2]] == 1  # finished ones not rerun


def _running_worker_after_some_complete(db: Path) -> int | None:
    """The pid of a worker running a trial once 5 trials completed (read-only: no Optuna, no DDL races)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT t.state, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
                                "ON a.trial_id = t.trial_id AND a.key = 'pid'").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return None
    running = [int(pid) for state, pid in rows if state == "RUNNING" and pid is not None]
    return running[0] if sum(state == "COMPLETE" for state, _ in rows) >= 5 and running else None


def _wait_for(condition: Any, limit_s: float = 180.0) -> Any:
    deadline = time.monotonic() + limit_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.05)
    return value


def test_postgres_server_is_the_shared_storage_of_two_workers(postgres_url: str, tmp_path: Path) -> None:
    config = {**BASE, "name": "pg", "run_cap": 6}
    result = run_sweep(config, "_sweep_objectives:quadratic", workers=2, storage=postgres_url, seed=3,
                       root=tmp_path, track=False, plot=False, heartbeat_interval=1)
    assert not (tmp_path / "pg.db").exists()
    assert result.storage == postgres_url and Counter(t.state for t in result.trials) == {"COMPLETE": 6}
    assert len({t.params["lr"] for t in result.trials}) == 6  # the two workers drew different values
    import psycopg2

    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                    "WHERE s.study_name = 'pg' AND t.state = 'COMPLETE'")
        assert cur.fetchone() == (6,)


# ---- tracked trials and the W&B engine ----------------------------------------------------------------
def test_each_trial_is_a_tracked_run_with_hparams_and_reported_values(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    from _readers import tensorboard_accumulator
    from opusclip_track.store import RunStore

    def objective(params: dict[str, Any], trial: TrialContext) -> float:
        for step in (1, 2, 3):
            trial.report(params["lr"] * 10 / step, step)
        # a training loop that logs the metric itself reports it through the wrapped tracker
        trial.reporting_tracker().log_metrics({"train/extra": 1.0, "val/loss": params["lr"] * 2}, step=4)
        return params["lr"]

    result = run_sweep(grid("tr", lr=[0.001, 0.01]), objective, root=tmp_path,
                       tracking={"use_wandb": False, "system_monitor_interval_s": 0})
    assert [t.run_name for t in result.trials] == ["tr-trial000", "tr-trial001"]
    for trial in result.trials:
        run_dir = tmp_path / "tr" / str(trial.run_name)
        store = RunStore(run_dir)
        lr = trial.params["lr"]
        assert [v for _, _, v in store.history("val/loss")] == pytest.approx(
            [lr * 10, lr * 5, lr * 10 / 3, lr * 2, lr])  # reported, logged by the loop, final beside hparams
        assert trial.steps == 4  # the pruner saw the loop's value too
        assert store.meta()["group"] == "tr" and "train/extra" in store.keys()
        acc = tensorboard_accumulator(run_dir)
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert start.hparams["lr"].number_value == pytest.approx(lr)
    summary = RunStore(tmp_path / "tr" / "tr-summary")
    (text,) = summary.events("text")
    assert text["data"]["text"].count("COMPLETE") == 2 and "val/loss=0.001 {'lr': 0.001}" in text["data"]["text"]


def test_wandb_engine_needs_an_api_key_and_never_goes_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(RuntimeError, match="engine 'wandb': expected a W&B API key"):
        run_wandb_sweep(grid(), "_sweep_objectives:quadratic", count=1)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(RuntimeError, match="engine 'wandb': expected W&B online .* WANDB_MODE='offline'"):
        run_wandb_sweep(grid(), "_sweep_objectives:quadratic", count=1)


@pytest.mark.slow
def test_sweep_script_trains_the_example_model_and_prints_the_summary(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), "--config",
                          str(REPO / "sweeps" / "quick_grid.yaml"), "--count", "1", "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    assert "sweep 'quick_grid' (minimize val/loss): best trial 0: val/loss=" in out
    study = optuna.load_study(study_name="quick_grid", storage=f"sqlite:///{tmp_path / 'quick_grid.db'}")
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and 0 < trial.value < 1 and len(trial.intermediate_values) >= 3
    assert (tmp_path / "quick_grid" / "optimization_history.png").is_file()
