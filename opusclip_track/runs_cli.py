"""`opusclip-track runs ...` and `opusclip-track sync`: read runs back from their local stores.

    opusclip-track runs list [--log-dir runs]
    opusclip-track runs show RUN                       # config, status, last value of every scalar
    opusclip-track runs compare RUN RUN ... [--keys video/psnr,train/loss]
    opusclip-track sync RUN --to wandb|tensorboard     # replay the store into a backend that missed records
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .backends import get_backend_class
from .config import REDACTED, TrackingConfig
from .records import Hparams, Record, Scalars, Text
from .store import RunStore, list_runs


def _run_dir(name: str, log_dir: Path) -> Path:
    for candidate in (Path(name), log_dir / name):
        if (candidate / "run.db").exists():
            return candidate
    raise FileNotFoundError(f"RUN: expected a run directory or a run name under {log_dir}, received {name!r} "
                            f"(runs here: {', '.join(p.name for p in list_runs(log_dir)) or 'none'})")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for run_dir in list_runs(args.log_dir):
        with RunStore(run_dir) as store:
            meta = store.meta()
            rows.append([run_dir.name, str(meta.get("experiment_name")), str(meta.get("group") or ""),
                         str(meta.get("status")), time.strftime("%Y-%m-%d %H:%M", time.localtime(
                             float(meta.get("created_at", 0)))), str(store.num_scalars())])
    if not rows:
        print(f"no runs under {args.log_dir}")
        return 0
    print(_table(["run", "experiment", "group", "status", "created", "scalars"], rows))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with RunStore(_run_dir(args.run, args.log_dir)) as store:
        meta = store.meta()
        print(f"run {meta.get('run_name')}  experiment {meta.get('experiment_name')}  status {meta.get('status')}")
        rows = []
        for key in store.keys():
            last = store.last(key)
            assert last is not None
            rows.append([key, str(last[0]), _fmt(last[1]), str(len(store.history(key)))])
        print(_table(["key", "last step", "last value", "points"], rows) if rows else "no scalars")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    stores = {name: RunStore(_run_dir(name, args.log_dir)) for name in args.runs}
    keys = args.keys.split(",") if args.keys else sorted({k for s in stores.values() for k in s.keys()})
    rows = []
    for key in keys:
        cells = []
        for store in stores.values():
            last = store.last(key)
            cells.append("" if last is None else _fmt(last[1]))
        rows.append([key, *cells])
    print(_table(["key (last value)", *stores], rows))
    for store in stores.values():
        store.close()
    return 0


def replay_records(store: RunStore) -> Iterator[Record]:
    """The store's scalars (grouped by step and time, as they were logged), text and hparams, in order."""
    rows = store._conn.execute(
        "SELECT s.step, s.wall_time, k.name, s.value FROM scalars s JOIN keys k ON k.id = s.key_id "
        "ORDER BY s.rowid")
    current: Scalars | None = None
    for step, wall_time, key, value in rows:
        if current is None or (current.step, current.wall_time) != (step, wall_time):
            if current is not None:
                yield current
            current = Scalars(step, wall_time, {})
        current.values[key] = float("nan") if value is None else value
    if current is not None:
        yield current
    for event in store.events("text"):
        yield Text(event["name"], event["data"]["text"], event["step"], event["wall_time"])
    for event in store.events("hparams"):
        yield Hparams(event["data"]["params"], event["data"]["metrics"], event["wall_time"])


def sync(run_dir: str | Path, backend: str, *, batch: int = 1000) -> int:
    """Replay a run's store into `backend` (e.g. W&B after it was unreachable). Returns the records sent.

    W&B: a run with the same id under `<run>/wandb/` (offline without an API key: upload it with
    `wandb sync`). TensorBoard: a fresh event file under `<run>/replay/`.
    """
    run_dir = Path(run_dir)
    with RunStore(run_dir) as store:
        stored = store.config()
        fields = {f.name for f in dataclasses.fields(TrackingConfig)}
        options = {k: v for k, v in stored.items() if k in fields and v != REDACTED}
        options.update(resume=True, log_dir=str(run_dir.parent), run_name=run_dir.name)
        config = TrackingConfig.from_dict(options)
        target = run_dir / "replay" if backend == "tensorboard" else run_dir
        sink = get_backend_class(backend)(config, target, stored)
        sink.start()
        sent, pending = 0, []
        for record in replay_records(store):
            pending.append(record)
            if len(pending) >= batch:
                sent += _send(sink, pending)
                pending = []
        sent += _send(sink, pending)
        sink.close()
    return sent


def _send(sink: Any, records: list[Record]) -> int:
    failures = sink.write(records)
    if failures:
        record, exc = failures[0]
        raise RuntimeError(f"sync: {len(failures)} records failed, first a {type(record).__name__}: {exc}")
    return len(records)


def _cmd_sync(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args.run, args.log_dir)
    sent = sync(run_dir, args.to)
    print(f"replayed {sent} records of {run_dir.name} into {args.to}")
    return 0


def add_runs_parser(subparsers: Any) -> None:
    """Register `runs list|show|compare` and `sync`."""
    runs = subparsers.add_parser("runs", help="list, show and compare runs from their local stores")
    runs.add_argument("--log-dir", type=Path, default=Path("runs"), help="where the runs are (default: runs)")
    verbs = runs.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every run, newest first").set_defaults(func=_cmd_list)
    show = verbs.add_parser("show", help="status and the last value of every scalar of one run")
    show.add_argument("run", help="run name or directory")
    show.set_defaults(func=_cmd_show)
    compare = verbs.add_parser("compare", help="last values of several runs side by side")
    compare.add_argument("runs", nargs="+", help="run names or directories")
    compare.add_argument("--keys", help="comma-separated scalar keys (default: all)")
    compare.set_defaults(func=_cmd_compare)

    sync_parser = subparsers.add_parser("sync", help="replay a run's local store into a backend")
    sync_parser.add_argument("run", help="run name or directory")
    sync_parser.add_argument("--to", choices=["wandb", "tensorboard"], required=True)
    sync_parser.add_argument("--log-dir", type=Path, default=Path("runs"))
    sync_parser.set_defaults(func=_cmd_sync)
