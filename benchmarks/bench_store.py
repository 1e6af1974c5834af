"""The run store at scale: bytes per scalar, write throughput, `runs show`/`report` reads, and SIGKILL, next to
TensorBoard's event file and the store's previous row-per-scalar format, on the same data in one process.

Data: `--scalars` values (default 10M) over 20 keys named like a video model's training run, one event per
step holding all 20 (500,000 steps at 10M), wall times 0.1 s apart with jitter. The values are shaped as they
reach a tracker: losses, gradient norm and video metrics come from float32 tensors (`.item()` of a float32 is
a float64 with 29 zero mantissa bits), the learning rate follows a cosine schedule in float64, throughput and
step time are float64 noise, system samples have psutil's 0.1 resolution or are integers.

Written three ways, the same rows:

* ours: `RunStore.write` in batches of `--batch-steps` steps (default 1,000 steps = 20,000 scalars: what the
  worker gets per 1 s flush interval from a loop logging 20 keys at 1,000 steps/s), then `close()`;
* previous format: the store as it was before the columnar format (one SQLite row per scalar, executemany
  per batch, the (key, step) index built at close), reproduced in SQL here;
* TensorBoard: `opusclip_track.backends.tensorboard.EventFile`, one `Event` per step with 20 simple values
  (float32, as TensorBoard stores scalars), what our TensorBoard backend writes.

Then read back: `runs show`/`runs compare` need `summary()` (the previous format: every key's history, as the
old `runs show` read it); `report` needs every key's curve, `history_arrays(key, max_points=2000)`; also the
full arrays, a `scalar_batches()` replay and `build_report` end to end on the run. TensorBoard's
`EventAccumulator` (`size_guidance` 0: every scalar) reads the event file; on more than `--tb-read-scalars`
(default 2M) it would take minutes, so it reads an event file of that many scalars of the same data instead
(printed). Last, `--kills` writers are SIGKILLed at random moments (with a small tail so that kills land
during compactions too) and every batch whose `write` had returned is checked to be in the store, once.

    python benchmarks/bench_store.py [--scalars 10000000] [--batch-steps 1000] [--kills 10] [--json out.json]

Machines are noisy: read the ratios; the sizes do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from opusclip_track.backends.tensorboard import EventFile
from opusclip_track.store import RunStore
from opusclip_track.store.legacy import SCHEMA as LEGACY_SCHEMA

KEYS = ("train/loss", "train/grad_norm", "train/lr", "val/loss", "video/psnr", "video/ssim", "video/lpips",
        "video/flicker", "video/temporal_diff", "perf/samples_per_s", "perf/step_time_s",
        "tracker/backpressure_wait_s", "sys/cpu_percent", "sys/memory_used_percent", "sys/process_rss_gb",
        "sys/gpu0_util", "sys/gpu0_memory_used_percent", "sys/gpu0_temperature_c", "sys/disk_read_mb_s",
        "sys/net_recv_mb_s")
Rows = list[tuple[str, int, float, float]]


def series(steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`(walls[steps], values[steps, 20])`, shaped as described in the module docstring."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=np.float64)
    walls = 1.7e9 + np.cumsum(0.1 + 0.002 * rng.random(steps))
    decay = 1.0 / np.sqrt(t + 10.0)

    def f32(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32).astype(np.float64)

    cols = {
        "train/loss": f32(decay + 0.02 * rng.standard_normal(steps)),
        "train/grad_norm": f32(np.abs(1.0 + 0.3 * rng.standard_normal(steps))),
        "train/lr": 1e-4 * 0.5 * (1.0 + np.cos(np.pi * t / steps)),
        "val/loss": f32(decay + 0.005 * rng.standard_normal(steps)),
        "video/psnr": f32(20.0 + 10.0 * (1.0 - decay) + 0.1 * rng.standard_normal(steps)),
        "video/ssim": f32(0.5 + 0.4 * (1.0 - decay) + 0.01 * rng.standard_normal(steps)),
        "video/lpips": f32(0.5 * decay + 0.01 * rng.standard_normal(steps)),
        "video/flicker": f32(0.05 * rng.random(steps)),
        "video/temporal_diff": f32(0.1 + 0.01 * rng.standard_normal(steps)),
        "perf/samples_per_s": 512.0 + 20.0 * rng.standard_normal(steps),
        "perf/step_time_s": 0.1 + 0.002 * rng.random(steps),
        "tracker/backpressure_wait_s": np.zeros(steps),
        "sys/cpu_percent": np.round(100.0 * rng.random(steps), 1),
        "sys/memory_used_percent": np.round(40.0 + 5.0 * rng.random(steps), 1),
        "sys/process_rss_gb": np.round(12.0 + rng.random(steps), 3),
        "sys/gpu0_util": np.round(90.0 + 10.0 * rng.random(steps)),
        "sys/gpu0_memory_used_percent": np.round(70.0 + 5.0 * rng.random(steps), 1),
        "sys/gpu0_temperature_c": np.round(70.0 + 5.0 * rng.random(steps)),
        "sys/disk_read_mb_s": np.round(50.0 * rng.random(steps), 1),
        "sys/net_recv_mb_s": np.round(10.0 * rng.random(steps), 1),
    }
    cols["train/loss"][steps // 3] = 50.0  # a spike the downsampled curve must keep
    cols["train/loss"][steps // 2] = math.nan
    return walls, np.stack([cols[k] for k in KEYS], axis=1)


def batches(walls: np.ndarray, values: np.ndarray, batch_steps: int) -> Iterator[Rows]:
    """The store rows of each batch, `(key, step, wall_time, value)`, as the pipeline hands them over."""
    for start in range(0, len(walls), batch_steps):
        stop = min(start + batch_steps, len(walls))
        wall_list, value_list = walls[start:stop].tolist(), values[start:stop].tolist()
        yield [(key, start + i, wall_list[i], row[j]) for i, row in enumerate(value_list) for j, key in enumerate(KEYS)]


def timed_writes(write: Any, walls: np.ndarray, values: np.ndarray, batch_steps: int) -> float:
    """Seconds spent in `write(rows)` only (building the rows, the caller's work, not counted)."""
    spent = 0.0
    for rows in batches(walls, values, batch_steps):
        start = time.perf_counter()
        write(rows)
        spent += time.perf_counter() - start
    return spent


def write_ours(run_dir: Path, walls: np.ndarray, values: np.ndarray, batch_steps: int) -> tuple[float, float]:
    """(seconds in write, seconds in close)."""
    store = RunStore(run_dir, create=True)
    store.set_meta({"run_name": run_dir.name, "experiment_name": "bench", "status": "finished",
                    "created_at": float(walls[0]), "finished_at": float(walls[-1]), "config": {"model": "bench"}})
    spent = timed_writes(store.write, walls, values, batch_steps)
    start = time.perf_counter()
    store.close()
    return spent, time.perf_counter() - start


def write_previous(run_dir: Path, walls: np.ndarray, values: np.ndarray, batch_steps: int) -> tuple[float, float]:
    run_dir.mkdir(parents=True)
    conn = sqlite3.connect(run_dir / "run.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(LEGACY_SCHEMA)  # the store before the columnar format, one row per scalar
    conn.execute("INSERT INTO meta VALUES ('run_name', ?)", (run_dir.name,))
    key_ids: dict[str, int] = {}

    def write(rows: Rows) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for key, _, _, _ in rows:
            if key not in key_ids:
                conn.execute("INSERT OR IGNORE INTO keys (name) VALUES (?)", (key,))
                key_ids[key] = conn.execute("SELECT id FROM keys WHERE name = ?", (key,)).fetchone()[0]
        conn.executemany("INSERT INTO scalars VALUES (?, ?, ?, ?)", [(key_ids[k], s, w, v) for k, s, w, v in rows])
        conn.execute("COMMIT")

    spent = timed_writes(write, walls, values, batch_steps)
    start = time.perf_counter()
    conn.execute("CREATE INDEX scalars_by_key ON scalars (key_id, step)")
    conn.close()
    return spent, time.perf_counter() - start


def write_tensorboard(directory: Path, walls: np.ndarray, values: np.ndarray) -> tuple[Path, float]:
    from tensorboard.compat.proto.event_pb2 import Event

    directory.mkdir(parents=True)
    start = time.perf_counter()
    events = EventFile(directory)
    value_rows = values.tolist()
    for step, (wall, row) in enumerate(zip(walls.tolist(), value_rows, strict=True)):
        event = Event(wall_time=wall, step=step)
        add = event.summary.value.add
        for key, value in zip(KEYS, row, strict=True):
            add(tag=key, simple_value=value)
        events.write(event)
    events.close()
    return Path(events.path), time.perf_counter() - start


def best(fn: Any, reps: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def show_ours(run_dir: Path) -> int:
    """What `runs show` reads: the meta and every key's summary."""
    with RunStore(run_dir) as store:
        store.meta()
        return len(store.summary())


def show_previous(run_dir: Path) -> int:
    """What `runs show` read before: every key's last value and number of points, from its history."""
    conn = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)
    names = [n for (n,) in conn.execute("SELECT name FROM keys ORDER BY name")]
    for name in names:
        rows = conn.execute("SELECT s.step, s.wall_time, s.value FROM scalars s JOIN keys k ON k.id = s.key_id "
                            "WHERE k.name = ? ORDER BY s.rowid", (name,)).fetchall()
        _ = (rows[-1], len(rows))
    conn.close()
    return len(names)


def curves(run_dir: Path, max_points: int | None) -> int:
    """What `report` reads for its curves: every key's history, downsampled to `max_points`."""
    with RunStore(run_dir) as store:
        return sum(store.history_arrays(key, max_points=max_points)[0].size for key in store.keys())


def replay(run_dir: Path) -> int:
    with RunStore(run_dir) as store:
        return sum(len(values) for _, _, values in store.scalar_batches())


def report(run_dir: Path, out: Path) -> int:
    from opusclip_track.report import build_report

    build_report([str(run_dir)], out, log_dir=run_dir.parent)
    return out.stat().st_size


def event_accumulator(path: Path) -> int:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])


# ---- SIGKILL ----------------------------------------------------------------------------------------------
def killed_writer(run_dir: Path, walls: np.ndarray, values: np.ndarray, seed: int, *, tail_scalars: int = 40_000,
                  batch_steps: int = 250) -> dict[str, Any]:
    """Fork a writer that writes batches of `batch_steps` steps until it is SIGKILLed at a random moment; return
    how many batches it had committed (each `write` that returned is reported through a pipe before the next
    one starts) and whether the store holds every one of them, once, in order."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer
        os.close(read_end)
        store = RunStore(run_dir, create=True)
        store.tail_scalars = tail_scalars
        for i, rows in enumerate(batches(walls, values, batch_steps)):
            store.write(rows)
            os.write(write_end, f"{i}\n".encode())
        os._exit(0)  # only when every batch was written before the kill
    os.close(write_end)
    time.sleep(random.Random(seed).uniform(0.3, 3.0))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        committed = len(pipe.read().split())
    with RunStore(run_dir) as store:
        steps = store.history_arrays("train/loss")[0]
        counts = {s.count for s in store.summary().values()}
        batches_stored = store.num_scalars() / (batch_steps * len(KEYS))
        ok = (np.array_equal(steps, np.arange(steps.size)) and steps.size >= committed * batch_steps
              and counts == {steps.size} and sum(len(v) for _, _, v in store.scalar_batches()) == store.num_scalars())
    return {"committed_batches": committed, "stored_batches": batches_stored, "ok": bool(ok)}


def end_to_end(root: Path, walls: np.ndarray, values: np.ndarray) -> float:
    """Scalars/s through the tracker (`log_metrics` of the 20 keys per step, then `close()`), the store its only
    destination: the pipeline's `RunStore.write` at the batch sizes it makes."""
    from opusclip_track import AdvancedExperimentTracker, TrackingConfig

    calls = [dict(zip(KEYS, row, strict=True)) for row in values.tolist()]
    start = time.perf_counter()
    tracker = AdvancedExperimentTracker(TrackingConfig(experiment_name="bench", log_dir=str(root), use_wandb=False,
                                                       use_tensorboard=False, system_monitor_interval_s=0.0))
    for step, call in enumerate(calls):
        tracker.log_metrics(call, step=step)
    tracker.close()
    return len(calls) * len(KEYS) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scalars", type=int, default=10_000_000)
    parser.add_argument("--batch-steps", type=int, default=1000)
    parser.add_argument("--tb-read-scalars", type=int, default=2_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--e2e-scalars", type=int, default=2_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    steps = args.scalars // len(KEYS)
    n = steps * len(KEYS)
    walls, values = series(steps)
    out: dict[str, Any] = {"scalars": n, "keys": len(KEYS), "steps": steps, "batch_scalars": args.batch_steps * 20}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours, previous = root / "runs" / "ours", root / "previous" / "run"
        w_ours, c_ours = write_ours(ours, walls, values, args.batch_steps)
        w_prev, c_prev = write_previous(previous, walls, values, args.batch_steps)
        tb_path, w_tb = write_tensorboard(root / "tb", walls, values)
        size = {"ours": _bytes(ours), "previous": _bytes(previous), "tensorboard": tb_path.stat().st_size}
        out["bytes_per_scalar"] = {k: v / n for k, v in size.items()}
        out["write_scalars_per_s"] = {"ours": n / (w_ours + c_ours), "previous": n / (w_prev + c_prev),
                                      "ours_write_only": n / w_ours, "tensorboard": n / w_tb}
        out["close_s"] = {"ours": c_ours, "previous": c_prev}

        t_show, _ = best(lambda: show_ours(ours), args.reps)
        t_show_prev, _ = best(lambda: show_previous(previous), 1)
        t_curves, points = best(lambda: curves(ours, 2000), args.reps)
        t_full, _ = best(lambda: curves(ours, None), 1)
        t_replay, replayed = best(lambda: replay(ours), 1)
        t_report, _ = best(lambda: report(ours, root / "report.html"), 1)
        assert replayed == n, (replayed, n)
        out["read_s"] = {"summary": t_show, "previous_show": t_show_prev, "curves_2000": t_curves,
                         "curves_full": t_full, "replay": t_replay, "build_report": t_report}
        out["curve_points"] = points

        tb_n = min(n, args.tb_read_scalars)
        tb_read = tb_path
        if tb_n < n:
            tb_read, _ = write_tensorboard(root / "tb-read", walls[:tb_n // 20], values[:tb_n // 20])
        t_ea, ea_n = best(lambda: event_accumulator(tb_read), 1)
        out["event_accumulator"] = {"scalars": ea_n, "s": t_ea}

        e2e_steps = min(steps, args.e2e_scalars // len(KEYS))
        out["end_to_end"] = {"scalars": e2e_steps * len(KEYS),
                             "per_s": end_to_end(root / "e2e", walls[:e2e_steps], values[:e2e_steps])}
        kill_walls, kill_values = series(250 * 2000, seed=1)  # more than a writer gets through before its kill
        out["sigkill"] = [killed_writer(root / "killed" / f"k{i}", kill_walls, kill_values, i)
                          for i in range(args.kills)]
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def _bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in run_dir.iterdir() if p.name.startswith("run.db"))


def _print(out: dict[str, Any]) -> None:
    n = out["scalars"]
    b, w, r = out["bytes_per_scalar"], out["write_scalars_per_s"], out["read_s"]
    ea = out["event_accumulator"]
    print(f"data: {n:,} scalars ({out['keys']} keys x {out['steps']:,} steps), written in batches of "
          f"{out['batch_scalars']:,} scalars")
    print(f"bytes/scalar: ours {b['ours']:.2f}, TensorBoard event file {b['tensorboard']:.2f} "
          f"({b['ours'] / b['tensorboard']:.2f}x), previous format {b['previous']:.2f} "
          f"({b['ours'] / b['previous']:.2f}x)")
    print(f"write, scalars/s through RunStore.write + close: ours {w['ours']:,.0f} "
          f"(close {out['close_s']['ours']:.2f} s), "
          f"previous format {w['previous']:,.0f} ({w['ours'] / w['previous']:.2f}x); TensorBoard EventFile "
          f"{w['tensorboard']:,.0f}")
    e2e = out["end_to_end"]
    print(f"end to end through the tracker (log_metrics + close, store only): {e2e['per_s']:,.0f} scalars/s "
          f"on {e2e['scalars']:,} scalars")
    print(f"runs show (meta + summary of every key): ours {r['summary'] * 1e3:.1f} ms, previous format "
          f"{r['previous_show']:.2f} s ({r['previous_show'] / r['summary']:.0f}x)")
    print(f"report curves (history_arrays(key, max_points=2000) x {out['keys']}): {r['curves_2000']:.2f} s, "
          f"{out['curve_points']:,} points; every point as arrays {r['curves_full']:.2f} s; "
          f"build_report end to end {r['build_report']:.2f} s")
    print(f"replay (scalar_batches, every scalar): {r['replay']:.2f} s")
    per_scalar = ea["s"] / ea["scalars"]
    print(f"TensorBoard EventAccumulator: {ea['s']:.2f} s for {ea['scalars']:,} scalars "
          f"({per_scalar * 1e6:.2f} us/scalar); at that rate it would read our {n:,} scalars in "
          f"{per_scalar * n:.0f} s: {per_scalar * n / r['curves_2000']:.0f}x our report curves, "
          f"{per_scalar * n / r['summary']:.0f}x our summary")
    kills = out["sigkill"]
    print(f"SIGKILL: {len(kills)} writers killed at random moments (tail of 40,000 scalars, so kills land during "
          f"compactions too): every returned write present and in order in {sum(k['ok'] for k in kills)}/{len(kills)}; "
          "batches returned/stored: " + ", ".join(f"{k['committed_batches']}/{k['stored_batches']:g}" for k in kills))


if __name__ == "__main__":
    main()
