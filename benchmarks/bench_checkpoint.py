"""How long `CheckpointManager.save` blocks the training loop, against a plain `torch.save` of the same state.

The state is a model of four 2048x2048 Linear layers (16.8 M float32 params) plus its Adam state, about
200 MB in all. Each repetition times, in a rotating order so machine noise hits every variant alike:

* `torch.save`: what Lightning-style peers do (write in place, no fsync, no hash);
* `torch.save + fsync`: the same made durable, the fair baseline for a crash-safe write;
* ours, async: the caller-blocking part only (CPU snapshot of the state; the write runs in a thread);
* ours, sync: temp file + fsync + rename + directory fsync + sha256 + manifest + pruning;
* floor: a bare copy of every tensor to CPU memory, the least any snapshot-then-write design can block.

Reported: the median per variant and the ratios against `torch.save`. Machines are noisy: read the ratios.

    python benchmarks/bench_checkpoint.py [--reps 5] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from opusclip_track.checkpoint import CheckpointManager


def _build_state(device: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(4)]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(8, 2048, device=device)).sum().backward()
    optimizer.step()  # allocates exp_avg and exp_avg_sq: the optimizer state is twice the model
    return model, optimizer


def _tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = list(model.state_dict().values())
    return tensors + [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


def _state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(model, optimizer))


def _variants(root: Path, model: torch.nn.Module,
              optimizer: torch.optim.Optimizer) -> dict[str, Callable[[int], float]]:
    """Each variant saves once at `step` and returns the seconds the caller was blocked."""
    async_manager = CheckpointManager(root / "async", keep_last=1, async_save=True)
    sync_manager = CheckpointManager(root / "sync", keep_last=1)

    def plain(step: int, fsync: bool = False) -> float:
        path = root / ("plain_fsync.pt" if fsync else "plain.pt")
        start = time.perf_counter()
        with open(path, "wb") as file:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, file)
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        return time.perf_counter() - start

    def ours_async(step: int) -> float:
        async_manager.wait()  # the previous write is not part of this save's blocking time
        start = time.perf_counter()
        async_manager.save(model, optimizer, epoch=0, step=step)
        blocked = time.perf_counter() - start
        async_manager.wait()
        return blocked

    def clone(step: int) -> float:
        start = time.perf_counter()
        copies = [t.to("cpu", copy=True) for t in _tensors(model, optimizer)]
        blocked = time.perf_counter() - start
        del copies
        return blocked

    def ours_sync(step: int) -> float:
        start = time.perf_counter()
        sync_manager.save(model, optimizer, epoch=0, step=step)
        return time.perf_counter() - start

    return {"torch.save": plain, "torch.save + fsync": lambda step: plain(step, fsync=True),
            "ours async (blocking part)": ours_async, "ours sync (fsync + sha256)": ours_sync,
            "floor: bare copy of the tensors": clone}


def run(reps: int, device: str, directory: str | None) -> dict[str, Any]:
    model, optimizer = _build_state(device)
    root = Path(tempfile.mkdtemp(prefix="bench_ckpt_", dir=directory))
    try:
        variants = _variants(root, model, optimizer)
        names = list(variants)
        times: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(reps + 1):  # rep 0 warms the page cache and allocators; not recorded
            order = names[rep % len(names):] + names[: rep % len(names)]
            for name in order:
                seconds = variants[name](rep)
                if rep:
                    times[name].append(seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["torch.save"]
    return {"device": device, "state_mb": _state_bytes(model, optimizer) / 1e6, "reps": reps,
            "median_s": medians, "ratio_vs_torch_save": {n: m / baseline for n, m in medians.items()},
            "all_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dir", default=None, help="where to write (default: the system temp dir)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    result = run(args.reps, args.device, args.dir)
    print(f"state: {result['state_mb']:.0f} MB on {result['device']}, median of {result['reps']} reps")
    for name, seconds in result["median_s"].items():
        ratio = result["ratio_vs_torch_save"][name]
        print(f"  {name:<32} {seconds * 1e3:9.1f} ms   {ratio:6.3f}x torch.save")
    median = result["median_s"]
    blocking = median["ours async (blocking part)"]
    print(f"async save blocks the caller {blocking / median['torch.save']:.2f}x as long as torch.save, "
          f"{blocking / median['torch.save + fsync']:.2f}x torch.save + fsync, "
          f"{blocking / median['ours sync (fsync + sha256)']:.2f}x our sync save")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
