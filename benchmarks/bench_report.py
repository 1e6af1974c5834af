"""`opusclip-track report` on a big run: how long it takes next to reading the run's store, and what it writes.

A synthetic run is written through `RunStore` (real SQLite, one transaction per batch, the index built at
close, as the tracker writes it): `--scalars` values (default 1M) spread over 20 keys shaped like a training
run's (`train/loss`, `val/loss`, five `video/*` metrics, `perf/*`, nine `sys/*` keys), with a loss spike
and a NaN in `train/loss`. Then, in rotating order, best of `--reps`:

* read: every key's history through `RunStore.history` into Python lists, what `runs show` does: the floor for
  anything that reads the whole run through the store's public API;
* report: `build_report` end to end (read, numpy arrays, min/max downsampling, smoothing, statistics, SVG,
  HTML written to disk), with its read share measured separately.

Printed: the times, report / read as a ratio, the HTML size and the points drawn; the spike's presence in the
page is checked. Machines are noisy: read the ratios.

    python benchmarks/bench_report.py [--scalars 1000000] [--reps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from opusclip_track._downsample import minmax_downsample
from opusclip_track.report import build_report
from opusclip_track.report.data import DEFAULT_KEYS, load_run
from opusclip_track.store import RunStore

KEYS = ("train/loss", "train/grad_norm", "train/lr", "val/loss", "video/psnr", "video/ssim", "video/lpips",
        "video/flicker", "video/temporal_diff", "perf/samples_per_s", "perf/step_time_s",
        *(f"sys/{k}" for k in ("cpu_percent", "memory_used_percent", "process_rss_gb", "gpu0_util",
                               "gpu0_memory_used_percent", "gpu0_temperature_c", "disk_read_mb_s",
                               "disk_write_mb_s", "net_recv_mb_s")))


def write_run(run_dir: Path, scalars: int, batch_steps: int = 2000) -> int:
    """A run of `scalars` values over `KEYS`; returns its number of steps."""
    steps = scalars // len(KEYS)
    rng = np.random.default_rng(0)
    t = np.arange(steps, dtype=np.float64)
    series = {key: 1.0 / np.sqrt(t + 10) + 0.01 * rng.random(steps) for key in KEYS}
    series["train/loss"][steps // 3] = 50.0  # a spike the report must show
    series["train/loss"][steps // 2] = math.nan
    now = time.time()
    with RunStore(run_dir, create=True) as store:
        store.set_meta({"run_name": run_dir.name, "experiment_name": "bench", "status": "finished",
                        "created_at": now, "finished_at": now + steps * 0.1, "config": {"model": "bench"}})
        columns = {key: values.tolist() for key, values in series.items()}
        for start in range(0, steps, batch_steps):
            rows = [(key, s, now + s * 0.1, columns[key][s]) for s in range(start, min(start + batch_steps, steps))
                    for key in KEYS]
            store.write(rows)
    return steps


def read_all(run_dir: Path) -> int:
    with RunStore(run_dir) as store:
        return sum(len(store.history(key)) for key in store.keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scalars", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = root / "runs" / "big"
        t0 = time.perf_counter()
        steps = write_run(run_dir, args.scalars)
        written = time.perf_counter() - t0
        db_bytes = (run_dir / "run.db").stat().st_size
        keys = [*DEFAULT_KEYS, "train/*", "perf/*"]
        timings: dict[str, list[float]] = {"read every key (runs show)": [], "report": [], "report: read only": []}
        size = 0
        for rep in range(args.reps):
            order = list(timings)
            order = order[rep % 3:] + order[:rep % 3]
            for name in order:
                start = time.perf_counter()
                if name == "report":
                    size = build_report([str(run_dir)], root / "report.html", keys=keys).bytes
                elif name == "report: read only":
                    load_run(run_dir, keys)
                else:
                    read_all(run_dir)
                timings[name].append(time.perf_counter() - start)
        html = (root / "report.html").read_text()
        steps_, values = load_run(run_dir, ["train/loss"]).series["train/loss"]
    best = {name: min(values) for name, values in timings.items()}
    floor = best["read every key (runs show)"]
    print(f"run: {steps * len(KEYS):,} scalars ({len(KEYS)} keys x {steps:,} steps), run.db {db_bytes / 1e6:.1f} MB "
          f"({db_bytes / (steps * len(KEYS)):.1f} bytes/scalar), written in {written:.1f} s")
    print(f"{'':32s} {'best s':>8s} {'x read':>8s}")
    for name, seconds in best.items():
        print(f"{name:32s} {seconds:8.2f} {seconds / floor:8.2f}")
    paths = re.findall(r'<path class="raw[^"]*" [^>]*d="M([^"]*)"', html)
    drawn = sum(p.count("L") + 1 for p in paths) // 2  # each series is drawn in a linear and a log variant
    kept = minmax_downsample(steps_, values, 500)[1]
    print(f"report.html: {size / 1024:.0f} KB, {drawn:,} points drawn for {len(paths) // 2} series; train/loss "
          f"downsampled to {kept.size} points keeps its spike: max {kept.max():g} (striding to the same size: "
          f"max {np.nanmax(values[::values.size // kept.size]):.3g})")
    if args.json:
        result: dict[str, Any] = {"scalars": steps * len(KEYS), "db_bytes": db_bytes, "best_s": best,
                                  "html_bytes": size}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
