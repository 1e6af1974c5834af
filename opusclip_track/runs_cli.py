"""`opusclip-track runs ...` and `opusclip-track sync`: read runs back from their local stores.

    opusclip-track runs list [--log-dir runs]
    opusclip-track runs show RUN                       # config, status, last value of every scalar
    opusclip-track runs compare RUN RUN ... [--keys video/psnr,train/loss]
    opusclip-track sync RUN --to wandb|tensorboard|...  # replay the store into a backend (any in the registry)

A run whose store cannot be read (a zero-byte or corrupt `run.db`) is listed as unreadable with the reason;
`show`, `compare` and `sync` on it exit with code 1 and a one-line message.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._text import format_table
from .backends import REGISTRY, get_backend_class
from .config import REDACTED, TrackingConfig
from .records import Hparams, Record, Scalars, Text
from .store import DB_NAME, RunStore, list_runs


def _run_dir(name: str, log_dir: Path) -> Path:
    for candidate in (Path(name), log_dir / name):
        if (candidate / "run.db").exists():
            return candidate
    raise FileNotFoundError(f"RUN: expected a run directory or a run name under {log_dir}, received {name!r} "
                            f"(runs here: {', '.join(p.name for p in list_runs(log_dir)) or 'none'})")


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class UnreadableRunError(ValueError):
    """A run directory whose `run.db` is not a readable run store (empty, corrupt, not SQLite)."""


@contextlib.contextmanager
def _open_store(run_dir: Path) -> Iterator[RunStore]:
    """The run's store for reading; a store SQLite cannot read raises `UnreadableRunError` with the reason."""
    try:
        with RunStore(run_dir) as store:
            yield store
    except sqlite3.DatabaseError as error:  # "file is not a database", "no such table: meta", ...
        raise UnreadableRunError(f"{run_dir / DB_NAME}: not a readable run store ({error})") from error


def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for run_dir in list_runs(args.log_dir):
        try:
            with _open_store(run_dir) as store:
                meta = store.meta()
                rows.append([run_dir.name, str(meta.get("experiment_name")), str(meta.get("group") or ""),
                             str(meta.get("status")), time.strftime("%Y-%m-%d %H:%M", time.localtime(
                                 float(meta.get("created_at", 0)))), str(store.num_scalars())])
        except (ValueError, OSError) as error:  # one bad run (corrupt store, damaged meta) must not hide the others
            reason = str(error.__cause__ or error).splitlines()[0]
            rows.append([run_dir.name, "", "", f"UNREADABLE: {reason}", "", ""])
    if not rows:
        print(f"no runs under {args.log_dir}")
        return 0
    print(format_table(["run", "experiment", "group", "status", "created", "scalars"], rows))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with _open_store(_run_dir(args.run, args.log_dir)) as store:
        meta = store.meta()
        rows = []
        for key in store.keys():
            last = store.last(key)
            assert last is not None
            rows.append([key, str(last[0]), _fmt(last[1]), str(len(store.history(key)))])
    print(f"run {meta.get('run_name')}  experiment {meta.get('experiment_name')}  status {meta.get('status')}")
    print(format_table(["key", "last step", "last value", "points"], rows) if rows else "no scalars")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        stores = {name: stack.enter_context(_open_store(_run_dir(name, args.log_dir))) for name in args.runs}
        keys = args.keys.split(",") if args.keys else sorted({k for s in stores.values() for k in s.keys()})
        rows = []
        for key in keys:
            cells = []
            for store in stores.values():
                last = store.last(key)
                cells.append("" if last is None else _fmt(last[1]))
            rows.append([key, *cells])
    print(format_table(["key (last value)", *stores], rows))
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
    if backend not in REGISTRY:
        raise ValueError(f"backend: expected one of {sorted(REGISTRY)}, received {backend!r}")
    with _open_store(run_dir) as store:
        stored = store.config()
        fields = {f.name for f in dataclasses.fields(TrackingConfig)}
        # A setting that lost a secret (an MLflow URI with its password) is not usable as stored: its default
        # applies ($MLFLOW_TRACKING_URI, ...). The notes are only shown, so they stay.
        options = {k: v for k, v in stored.items()
                   if k in fields and (k == "notes" or REDACTED not in str(v))}
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
    sync_parser.add_argument("--to", choices=sorted(REGISTRY), required=True,
                             help="a backend of opusclip_track.backends.REGISTRY")
    sync_parser.add_argument("--log-dir", type=Path, default=Path("runs"))
    sync_parser.set_defaults(func=_cmd_sync)
