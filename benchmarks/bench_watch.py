"""What `tracker.watch(model)` costs a training step, against the same loop unwatched and against `wandb.watch`.

Two small models, so that the fixed costs show: an MLP of 4 layers (8 parameter tensors) and a deep stack of 50
narrow layers (100 parameter tensors: both watchers put one hook on each). Each model is trained, in the same
process, in five variants that each own a copy of it (same weights): unwatched; `tracker.watch(log=...,
log_freq=100)` for "gradients" and "all"; `wandb.watch(log=..., log_freq=100)` (an offline run) for the same two.
A step is zero_grad + forward + backward + SGD step; nothing else is logged, so the difference is the watching:
the hooks on every pass, and every 100th pass the statistics (ours: device tensors handed to the tracker's
worker; wandb: histograms computed and logged on the training thread).

Rounds rotate the variants so that machine noise hits them alike; reported per variant: the median time per step,
wall and CPU time of the training thread (less sensitive to a loaded machine; the tracker's worker thread, which
bins our histograms, and wandb's service process are not in it), the median per-round ratios to the unwatched
loop, and ours against wandb's. Read the ratios.

    python benchmarks/bench_watch.py [--rounds 7] [--steps 300] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from opusclip_track import AdvancedExperimentTracker, TrackingConfig


@dataclass
class Options:
    rounds: int = 7
    steps: int = 300  # per variant per round: 3 collections at log_freq=100
    batch: int = 32
    threads: int = 1  # one torch thread keeps a shared machine's contention out of the ratios
    device: str = "cpu"
    json: str | None = None


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256),
                        nn.ReLU(), nn.Linear(256, 10))
    deep = nn.Sequential(*[layer for _ in range(50) for layer in (nn.Linear(64, 64), nn.Tanh())])
    return {"mlp, 8 tensors": mlp, "deep, 100 tensors": deep}


class _Loop:
    def __init__(self, model: nn.Module, batch: int, device: str) -> None:
        self.model = model.to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        self.x = torch.randn(batch, first.in_features, device=device)
        self.device = device

    def run(self, steps: int) -> tuple[float, float]:
        """Seconds per step over `steps` steps: wall time, and CPU time of the training thread (on a CPU with one
        torch thread the whole step runs on it; other processes' load and the tracker's worker do not count)."""
        self._sync()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            self.model(self.x).square().mean().backward()
            self.optimizer.step()
        self._sync()
        return (time.perf_counter() - wall) / steps, (time.thread_time() - cpu) / steps

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def _variants(model: nn.Module, opts: Options, tracker: AdvancedExperimentTracker,
              wandb_run: Any) -> dict[str, _Loop]:
    loops = {name: _Loop(copy.deepcopy(model), opts.batch, opts.device) for name in
             ("unwatched", "ours gradients", "ours all", "wandb gradients", "wandb all")}
    for log in ("gradients", "all"):
        tracker.watch(loops[f"ours {log}"].model, log=log, log_freq=100)  # type: ignore[arg-type]
        wandb_run.watch(loops[f"wandb {log}"].model, log=log, log_freq=100)
    return loops


def run(opts: Options) -> dict[str, Any]:
    import wandb

    torch.set_num_threads(opts.threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("WANDB_SILENT", "true")
        wandb_run = wandb.init(project="bench-watch", dir=tmp, mode="offline")
        config = TrackingConfig(experiment_name="bench-watch", log_dir=tmp, use_wandb=False,
                                system_monitor_interval_s=0.0)
        with AdvancedExperimentTracker(config) as tracker:
            for model_name, model in _models().items():
                loops = _variants(model, opts, tracker, wandb_run)
                for loop in loops.values():
                    loop.run(20)  # warm up the allocator, the kernels and the hooks
                names = list(loops)
                seconds: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
                for r in range(opts.rounds):
                    order = names[r % len(names):] + names[:r % len(names)]
                    for name in order:
                        seconds[name].append(loops[name].run(opts.steps))
                    tracker.log_metrics({"bench/round": r})  # the statistics reach the worker meanwhile
                results[model_name] = _summary(seconds)
        wandb_run.finish()
    return results


def _summary(seconds: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """Per variant: median ms per step (wall, training-thread CPU) and the median per-round ratios to the
    unwatched loop; and ours against wandb's, for each `log`."""
    def ratio(a: str, b: str, kind: int) -> float:
        return statistics.median(x[kind] / y[kind] for x, y in zip(seconds[a], seconds[b], strict=True))

    out: dict[str, Any] = {name: {"wall_ms": 1e3 * statistics.median(s[0] for s in runs),
                                  "cpu_ms": 1e3 * statistics.median(s[1] for s in runs),
                                  "wall_vs_unwatched": ratio(name, "unwatched", 0),
                                  "cpu_vs_unwatched": ratio(name, "unwatched", 1)} for name, runs in seconds.items()}
    for log in ("gradients", "all"):
        out[f"ours/wandb {log}"] = {"wall": ratio(f"ours {log}", f"wandb {log}", 0),
                                    "cpu": ratio(f"ours {log}", f"wandb {log}", 1)}
    return out


def _print(results: dict[str, Any], opts: Options) -> None:
    print(f"watch overhead, log_freq=100, {opts.rounds} rounds x {opts.steps} steps, device {opts.device}, "
          f"{opts.threads} torch thread(s); medians")
    for model_name, variants in results.items():
        print(f"\n{model_name}")
        print(f"  {'variant':<18} {'wall ms':>8} {'vs unwatched':>13} {'thread CPU ms':>14} {'vs unwatched':>13}")
        for name, row in variants.items():
            if not name.startswith("ours/wandb"):
                print(f"  {name:<18} {row['wall_ms']:>8.3f} {row['wall_vs_unwatched']:>12.3f}x "
                      f"{row['cpu_ms']:>14.3f} {row['cpu_vs_unwatched']:>12.3f}x")
        for log in ("gradients", "all"):
            both = variants[f"ours/wandb {log}"]
            print(f"  ours / wandb.watch, {log}: {both['wall']:.3f}x the wall time, {both['cpu']:.3f}x the "
                  "training thread's CPU time")


def main() -> None:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    opts = Options(**vars(parser.parse_args()))
    results = run(opts)
    _print(results, opts)
    if opts.json:
        with open(opts.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
