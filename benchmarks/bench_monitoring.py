"""Overhead of SystemMonitor, ModelWatcher and ThroughputMeter on a small CPU training loop.

Each variant trains the same MLP for `--steps` steps per round; rounds rotate the variants (ABCDE, BCDEA,
...) so that machine noise hits all of them alike, and each variant's speed is divided by the baseline's
speed of the same round. Reported: the median ratio (1.0 = no overhead) per variant, plus the measured cost
of one system sample and one watcher collection, from which the overhead at the default 10 s interval is
derived (a 10 s monitor takes no sample inside a round of ~1 s, so its measured ratio only shows the idle
thread). Besides steps per wall-clock second, steps per CPU-second of the whole process are compared: the
sampler thread's work counts there, while the load of other processes on a shared machine mostly does not.

    python benchmarks/bench_monitoring.py [--rounds 10] [--steps 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from opusclip_track.diagnostics import ModelWatcher
from opusclip_track.system import SystemMonitor, ThroughputMeter


@dataclass
class Options:
    rounds: int = 10
    steps: int = 400
    batch: int = 64
    width: int = 512
    threads: int = 1
    """torch threads: 1 keeps a shared, loaded machine from turning thread contention into noise."""
    budget_s: float = 75.0
    """Stop starting new rounds past this many seconds (at least 2 rounds run)."""
    json: str | None = None


class _Loop:
    """A 2-layer MLP trained with SGD: a few milliseconds per step on a laptop-class CPU."""

    def __init__(self, opts: Options) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(256, opts.width), nn.ReLU(), nn.Linear(opts.width, 10))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(opts.batch, 256)
        self.y = torch.randint(0, 10, (opts.batch,))

    def step(self) -> None:
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


Hook = Callable[[int], Any]


@contextmanager
def _no_hook(loop: _Loop) -> Iterator[Hook | None]:
    yield None


def _monitor(interval_s: float) -> Callable[[_Loop], Any]:
    @contextmanager
    def variant(loop: _Loop) -> Iterator[Hook | None]:
        sink: list[dict[str, float]] = []
        monitor = SystemMonitor(sink.append, interval_s=interval_s).start()
        try:
            yield None
        finally:
            monitor.stop()
    return variant


@contextmanager
def _watcher(loop: _Loop) -> Iterator[Hook | None]:
    watcher = ModelWatcher(loop.model, log="all", log_freq=100)
    kept: list[Any] = []
    yield lambda step: kept.append(watcher.maybe_collect(step))


@contextmanager
def _throughput(loop: _Loop) -> Iterator[Hook | None]:
    meter = ThroughputMeter(window=50)
    yield lambda step: meter.update(64, num_frames=64 * 16)


VARIANTS: dict[str, Callable[[_Loop], Any]] = {
    "baseline": _no_hook,
    "monitor_10s": _monitor(10.0),
    "monitor_0.1s": _monitor(0.1),
    "watcher_all_freq100": _watcher,
    "throughput_meter": _throughput,
}


def _timed_round(loop: _Loop, variant: Callable[[_Loop], Any], steps: int) -> tuple[float, float]:
    """(steps per wall second, steps per CPU second of the whole process, sampler thread included)."""
    with variant(loop) as hook:
        wall, cpu = time.perf_counter(), time.process_time()
        for step in range(steps):
            loop.step()
            if hook is not None:
                hook(step)
        return steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)


def _median_cost_s(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(opts: Options) -> dict[str, Any]:
    torch.set_num_threads(opts.threads)
    began = time.perf_counter()
    loop = _Loop(opts)
    for _ in range(50):  # warm up the allocator and the kernels
        loop.step()
    names = list(VARIANTS)
    speeds: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names if n != "baseline"}
    cpu_ratios: dict[str, list[float]] = {n: [] for n in names if n != "baseline"}
    for r in range(opts.rounds):
        if r >= 2 and time.perf_counter() - began > opts.budget_s:
            break
        order = names[r % len(names):] + names[:r % len(names)]
        this_round = {name: _timed_round(loop, VARIANTS[name], opts.steps) for name in order}
        base_wall, base_cpu = this_round["baseline"]
        for name, (wall, cpu) in this_round.items():
            speeds[name].append(wall)
            if name != "baseline":
                ratios[name].append(wall / base_wall)
                cpu_ratios[name].append(cpu / base_cpu)

    step_s = 1.0 / statistics.median(speeds["baseline"])
    monitor = SystemMonitor(lambda s: None, interval_s=10.0)
    monitor.sample()  # first call opens NVML where present
    sample_s = _median_cost_s(monitor.sample, 200)
    loop.step()
    watcher = ModelWatcher(loop.model, log="all", log_freq=100)
    collect_s = _median_cost_s(lambda: watcher.maybe_collect(0), 50)
    skip_s = _median_cost_s(lambda: watcher.maybe_collect(1), 2000)
    meter = ThroughputMeter()
    update_s = _median_cost_s(lambda: meter.update(64), 2000)
    return {
        "options": vars(opts),
        "torch_threads": torch.get_num_threads(),
        "rounds_run": len(speeds["baseline"]),
        "baseline_step_ms": 1e3 * step_s,
        "median_speed_ratio_vs_baseline": {n: statistics.median(v) for n, v in ratios.items()},
        "speed_ratio_spread": {n: [min(v), max(v)] for n, v in ratios.items()},
        # Steps per CPU-second: the monitor's own thread counts, other processes' load does not.
        "median_cpu_efficiency_ratio_vs_baseline": {n: statistics.median(v) for n, v in cpu_ratios.items()},
        "cpu_efficiency_ratio_spread": {n: [min(v), max(v)] for n, v in cpu_ratios.items()},
        "system_sample_ms": 1e3 * sample_s,
        "watcher_collect_ms": 1e3 * collect_s,
        "watcher_skip_us": 1e6 * skip_s,
        "throughput_update_us": 1e6 * update_s,
        # Derived: time the sampler thread takes per second (it holds the GIL for most of a sample).
        "estimated_overhead_monitor_10s_pct": 100.0 * sample_s / 10.0,
        "estimated_overhead_watcher_freq100_pct": 100.0 * (collect_s + 99 * skip_s) / (100 * step_s),
    }


def _print(result: dict[str, Any]) -> None:
    print(f"baseline: {result['baseline_step_ms']:.2f} ms/step (MLP, {result['torch_threads']} torch threads), "
          f"{result['rounds_run']} rounds")
    print("ratio vs baseline, median over rounds (1.00 = no overhead) [min, max]:")
    print(f"  {'variant':<22} {'steps/wall-s':>24}   {'steps/CPU-s (all threads)':>26}")
    for name, ratio in result["median_speed_ratio_vs_baseline"].items():
        low, high = result["speed_ratio_spread"][name]
        cpu = result["median_cpu_efficiency_ratio_vs_baseline"][name]
        cpu_low, cpu_high = result["cpu_efficiency_ratio_spread"][name]
        print(f"  {name:<22} {ratio:6.3f} [{low:.3f}, {high:.3f}]   {cpu:6.3f} [{cpu_low:.3f}, {cpu_high:.3f}]")
    print(f"one system sample: {result['system_sample_ms']:.3f} ms -> at the default 10 s interval "
          f"{result['estimated_overhead_monitor_10s_pct']:.4f}% of wall time")
    print(f"watcher collect (log='all'): {result['watcher_collect_ms']:.3f} ms, skipped step "
          f"{result['watcher_skip_us']:.2f} us -> {result['estimated_overhead_watcher_freq100_pct']:.3f}% "
          "at log_freq=100")
    print(f"throughput meter update: {result['throughput_update_us']:.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Options()
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps per variant per round")
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--budget-s", type=float, default=defaults.budget_s)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    opts = Options(**vars(parser.parse_args()))
    result = run(opts)
    _print(result)
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
