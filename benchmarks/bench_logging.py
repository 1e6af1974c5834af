"""Hot-path cost and end-to-end throughput of `log_metrics` against SummaryWriter, wandb.log (offline) and MLflow.

One process, one loop shape for every logger: each call logs 10 float scalars at one step. MLflow's peers write
to a local SQLite tracking store in a temporary directory: `mlflow.log_metrics(values, step=...)` once per step
(the way users call it) and `MlflowClient.log_batch` with the step's 10 metrics. They cost milliseconds per call,
so they are timed over fewer calls (`--mlflow-calls`); `opusclip_track+mlflow` is our tracker with the MLflow
backend on the same store (its hot path is ours; end to end includes every write into MLflow).

* back-to-back: calls in a tight loop;
* paced: a 2 ms sleep between calls, like a training step, so each logger's background thread gets to run
  between calls as it would in real training (the case the hot-path target is about);
* compute-paced: ~2 ms of single-threaded torch matmuls between calls instead of the sleep. Like a real
  step it releases the GIL (background threads run) but keeps the core busy; after a sleep, a VM's vCPU
  comes back with cold caches, which inflates every logger's first microseconds after the wake-up;
* end to end: N calls plus close(), i.e. until everything is on disk, in scalars per second;
* alerts: our tracker end to end with the alert rules off, on over keys no rule watches, and on with a loss key
  rising every step (every value above its window's median: the loss-spike rule's most expensive case), as ratios
  to the rules off, best of `--repeats` rounds (`--alerts-only` runs this part alone).

Run: `python benchmarks/bench_logging.py [--calls 2000] [--json out.json]`. Machines are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEYS = [f"train/metric_{i}" for i in range(10)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _compute_step(seconds: float) -> None:
    """Busy the CPU for about `seconds` with torch work that releases the GIL, as a training step does."""
    import torch

    a = torch.ones(128, 128)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = (a @ a).clamp_(max=1.0)


def _time_calls(log: Callable[[int, dict[str, float]], None], calls: int, pace_s: float,
                compute: bool = False, keys: list[str] = KEYS) -> list[float]:
    """Per-call wall time in microseconds. The values are built before the clock starts, for every logger."""
    times = []
    for step in range(calls):
        values = {k: 0.5 + step for k in keys}
        start = time.perf_counter()
        log(step, values)
        times.append((time.perf_counter() - start) * 1e6)
        if pace_s and compute:
            _compute_step(pace_s)
        elif pace_s:
            time.sleep(pace_s)
    return times


class _Ours:
    name = "opusclip_track"
    options: dict[str, Any] = {}

    def __init__(self, root: Path, options: dict[str, Any] | None = None) -> None:
        from opusclip_track import AdvancedExperimentTracker, TrackingConfig

        self.t = AdvancedExperimentTracker(TrackingConfig(experiment_name="bench", log_dir=str(root),
                                                          use_wandb=False, system_monitor_interval_s=0.0,
                                                          **(self.options if options is None else options)))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.t.log_metrics(values, step=step)

    def close(self) -> None:
        self.t.close()


class _SummaryWriter:
    name = "SummaryWriter"

    def __init__(self, root: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(root / "sw"))

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)

    def close(self) -> None:
        self.w.close()


class _Wandb:
    name = "wandb.log"

    def __init__(self, root: Path) -> None:
        import wandb

        self.run = wandb.init(project="bench", dir=str(root), mode="offline",
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def mlflow_store(root: Path) -> str:
    """One SQLite tracking store for every MLflow peer, created (and migrated, ~5 s) before any timing."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("video-opusclip", artifact_location=(root / "mlartifacts").as_uri())
    return uri


class _MlflowFluent:
    name = "mlflow.log_metrics"
    uri = ""
    slow = True

    def __init__(self, root: Path) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment("video-opusclip")
        self.mlflow = mlflow
        self.run = mlflow.start_run()

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class _MlflowBatch:
    name = "MlflowClient.log_batch"
    uri = ""
    slow = True

    def __init__(self, root: Path) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        self.client = MlflowClient(self.uri)
        self.Metric = Metric
        experiment = self.client.get_experiment_by_name("video-opusclip")
        assert experiment is not None
        self.run_id = self.client.create_run(experiment.experiment_id).info.run_id

    def log(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.Metric(k, v, now, step) for k, v in values.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _OursMlflow(_Ours):
    name = "opusclip_track+mlflow"


PEERS: list[type[Any]] = [_Ours, _SummaryWriter, _Wandb, _MlflowFluent, _MlflowBatch]


def _calls_for(cls: type[Any], calls: int, mlflow_calls: int) -> int:
    return min(calls, mlflow_calls) if getattr(cls, "slow", False) else calls


def hot_path(root: Path, calls: int, pace_s: float, compute: bool = False,
             mlflow_calls: int = 300) -> dict[str, dict[str, float]]:
    out = {}
    for cls in PEERS:
        logger = cls(root)
        n = _calls_for(cls, calls, mlflow_calls)
        _time_calls(logger.log, min(200, n), 0.0)  # warm-up: imports, first file, JIT-free paths
        times = _time_calls(logger.log, n, pace_s, compute)
        logger.close()
        out[cls.name] = {"median_us": statistics.median(times), "p99_us": _percentile(times, 0.99)}
    return out


def end_to_end(root: Path, calls: int, mlflow_calls: int = 300) -> dict[str, float]:
    out = {}
    for cls in (_Ours, _SummaryWriter, _OursMlflow, _MlflowFluent, _MlflowBatch):
        n = _calls_for(cls, calls, mlflow_calls)
        start = time.perf_counter()
        logger = cls(root)
        _time_calls(logger.log, n, 0.0)
        logger.close()
        out[cls.name] = n * len(KEYS) / (time.perf_counter() - start)
    return out


def alerts_end_to_end(root: Path, calls: int, repeats: int) -> dict[str, dict[str, float]]:
    """Our tracker end to end with the alert rules off and on: the best of `repeats` rounds of scalars per second
    (wall time) and of the process's CPU time per scalar (all threads: the worker's rules included), which a busy
    shared machine disturbs less."""
    cases: dict[str, tuple[dict[str, Any], list[str]]] = {
        "alerts off": ({"alerts": False}, KEYS),
        "alerts on, no loss key": ({}, KEYS),
        "alerts on, loss rising": ({}, ["train/loss", *KEYS[1:]]),  # every value of train/loss above its median
    }
    warm = _Ours(root, {})  # imports and first-run costs outside the timing
    _time_calls(warm.log, 200, 0.0)
    warm.close()
    best = {name: {"scalars_per_s": 0.0, "cpu_us_per_scalar": math.inf} for name in cases}
    names = list(cases)
    for round_ in range(repeats):  # each round in another order, so no case always follows the same one
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            options, keys = cases[name]
            start, cpu = time.perf_counter(), time.process_time()
            logger = _Ours(root, options)
            _time_calls(logger.log, calls, 0.0, keys=keys)
            logger.close()
            wall_s, cpu_s, scalars = time.perf_counter() - start, time.process_time() - cpu, calls * len(keys)
            figures = best[name]
            figures["scalars_per_s"] = max(figures["scalars_per_s"], scalars / wall_s)
            figures["cpu_us_per_scalar"] = min(figures["cpu_us_per_scalar"], cpu_s / scalars * 1e6)
    return best


def alerts_on_the_worker(records: int = 10_000, repeats: int = 5) -> dict[str, float]:
    """Microseconds per record of 10 scalars that `AlertRules.apply` costs the store's worker (no tracker around it),
    the best of `repeats`: rules off, no key a rule watches, a noisy loss, a loss rising every step."""
    import random

    from opusclip_track.alerts import AlertRules
    from opusclip_track.records import Scalars

    rng = random.Random(0)

    def steps(loss: Callable[[int], float] | None) -> list[Scalars]:
        keys = KEYS if loss is None else KEYS[1:]
        return [Scalars(s, 1e9 + s, {**({} if loss is None else {"train/loss": loss(s)}), **{k: 0.5 + s for k in keys}})
                for s in range(records)]

    cases: dict[str, tuple[Any, list[Scalars]]] = {
        "alerts off": (False, steps(None)), "alerts on, no loss key": (None, steps(None)),
        "alerts on, noisy loss": (None, steps(lambda s: 1.0 + rng.gauss(0, 0.1))),
        "alerts on, loss rising": (None, steps(lambda s: 0.5 + s))}
    best = dict.fromkeys(cases, math.inf)
    for _ in range(repeats):
        for name, (settings, batch) in cases.items():
            rules = AlertRules(settings)
            start = time.perf_counter()
            for i in range(0, records, 64):  # the worker's batches
                rules.apply(batch[i:i + 64])
            best[name] = min(best[name], (time.perf_counter() - start) / records * 1e6)
    return best


def print_alerts(figures: dict[str, dict[str, float]], worker: dict[str, float], calls: int) -> None:
    print("\n[alerts]  AlertRules.apply on the store's worker, microseconds per record of 10 scalars")
    for name, us in worker.items():
        print(f"  {name:<28}{us:>8.2f}")
    print(f"\n[alerts]  our tracker, {calls} calls of 10 scalars + close(), best of rounds")
    print(f"  {'case':<28}{'scalars/s':>12}{'vs off':>8}{'CPU us/scalar':>15}{'vs off':>8}")
    base = figures["alerts off"]
    for name, f in figures.items():
        print(f"  {name:<28}{f['scalars_per_s']:>12,.0f}{f['scalars_per_s'] / base['scalars_per_s']:>7.2f}x"
              f"{f['cpu_us_per_scalar']:>15.2f}{f['cpu_us_per_scalar'] / base['cpu_us_per_scalar']:>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per logger and mode")
    parser.add_argument("--e2e-calls", type=int, default=5000, help="calls for the end-to-end throughput")
    parser.add_argument("--mlflow-calls", type=int, default=300,
                        help="timed calls of the MLflow peers (milliseconds each), per mode and end to end")
    parser.add_argument("--alerts-calls", type=int, default=20000, help="calls per case of the alerts part")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the alerts part")
    parser.add_argument("--alerts-only", action="store_true", help="run the alerts part alone")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.alerts_only:
        with tempfile.TemporaryDirectory() as tmp:
            figures = alerts_end_to_end(Path(tmp), args.alerts_calls, args.repeats)
        worker = alerts_on_the_worker(repeats=args.repeats)
        print_alerts(figures, worker, args.alerts_calls)
        if args.json:
            args.json.write_text(json.dumps({"alerts": figures, "alerts_worker_us_per_record": worker}, indent=2))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _MlflowFluent.uri = _MlflowBatch.uri = mlflow_store(root)
        _OursMlflow.options = {"use_tensorboard": False, "backends": ["mlflow"],
                               "mlflow_tracking_uri": _MlflowBatch.uri}
        m = args.mlflow_calls
        results: dict[str, Any] = {
            "back_to_back": hot_path(root, args.calls, 0.0, mlflow_calls=m),
            "paced_2ms": hot_path(root, args.calls, 0.002, mlflow_calls=m),
            "compute_paced_2ms": hot_path(root, args.calls, 0.002, compute=True, mlflow_calls=m),
            "end_to_end_scalars_per_s": end_to_end(root, args.e2e_calls, m),
            "alerts": alerts_end_to_end(root, args.alerts_calls, args.repeats),
            "alerts_worker_us_per_record": alerts_on_the_worker(repeats=args.repeats),
        }
    ours = "opusclip_track"
    print(f"log 10 scalars per call; {args.calls} calls per logger, {args.mlflow_calls} for MLflow's "
          f"(cpu count {os.cpu_count()})")
    for mode in ("back_to_back", "paced_2ms", "compute_paced_2ms"):
        print(f"\n[{mode}]  per-call cost, microseconds")
        print(f"  {'logger':<24}{'median':>10}{'p99':>10}{'median ratio vs ours':>24}")
        base = results[mode][ours]["median_us"]
        for name, r in results[mode].items():
            print(f"  {name:<24}{r['median_us']:>10.2f}{r['p99_us']:>10.2f}{r['median_us'] / base:>23.1f}x")
    e2e = results["end_to_end_scalars_per_s"]
    ratio = e2e[ours] / e2e["SummaryWriter"]
    print(f"\n[end to end]  {args.e2e_calls} calls ({args.mlflow_calls} for MLflow's) + close(), scalars/s")
    print(f"  {'logger':<24}{'scalars/s':>14}{'opusclip_track+mlflow is':>28}")
    for name, rate in e2e.items():
        peer = name in (_MlflowFluent.name, _MlflowBatch.name)
        versus = f"{e2e[_OursMlflow.name] / rate:>27.1f}x" if peer else ""
        print(f"  {name:<24}{rate:>14,.0f}{versus}")
    print(f"  ratio ours / SummaryWriter: {ratio:.1f}x")
    print_alerts(results["alerts"], results["alerts_worker_us_per_record"], args.alerts_calls)
    paced = results["paced_2ms"]
    computed = results["compute_paced_2ms"]
    results["ratios"] = {
        "paced_median_vs_summarywriter": paced["SummaryWriter"]["median_us"] / paced[ours]["median_us"],
        "paced_median_vs_wandb": paced["wandb.log"]["median_us"] / paced[ours]["median_us"],
        "compute_paced_median_vs_summarywriter":
            computed["SummaryWriter"]["median_us"] / computed[ours]["median_us"],
        "compute_paced_median_vs_wandb": computed["wandb.log"]["median_us"] / computed[ours]["median_us"],
        "end_to_end_vs_summarywriter": ratio,
        "paced_median_vs_mlflow_log_metrics": paced["mlflow.log_metrics"]["median_us"] / paced[ours]["median_us"],
        "paced_median_vs_mlflow_log_batch": paced["MlflowClient.log_batch"]["median_us"] / paced[ours]["median_us"],
        "end_to_end_ours_mlflow_vs_mlflow_log_metrics": e2e["opusclip_track+mlflow"] / e2e["mlflow.log_metrics"],
        "end_to_end_ours_mlflow_vs_mlflow_log_batch": e2e["opusclip_track+mlflow"] / e2e["MlflowClient.log_batch"],
    }
    print("\ntargets: paced median >= 50x below both peers; end to end >= 10x SummaryWriter")
    for name, value in results["ratios"].items():
        print(f"  {name}: {value:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
