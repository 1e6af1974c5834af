"""The local run store: one SQLite database per run, the write-ahead source of truth.

Layout (`runs/<run_name>/run.db`, WAL mode):

* `meta(key, value)`: run name, experiment, creation time, status, config and environment as JSON.
* `keys(id, name)` and `scalars(key_id, step, wall_time, value)`: every scalar ever logged. SQLite turns a
  NaN into NULL, so NULL reads back as NaN; +/-inf are stored as they are. The (key, step) index is built
  when the run closes, not maintained on every insert: it would cost a third of the write time.
* `superseded_scalars`: rows a resumed run replaced (logged after the checkpoint it resumed from).
* `events(id, kind, name, step, wall_time, data, path)`: everything that is not a scalar (text,
  histogram summaries, hyperparameters, media and artifact references), `data` as JSON.

The worker writes one transaction per batch; `synchronous=NORMAL` in WAL mode means a committed batch
survives the process being killed (only a power loss can take the last transactions).

One process writes a run at a time: the writer holds an exclusive `flock` on `run.lock` for the run's
lifetime (the kernel releases it when the process dies, SIGKILL included), so a second process opening the
same run gets `RunLockedError` naming the holder's pid instead of a second writer interleaving with the
first. The writer also keeps a small reserve file (`.reserve`, 256 KiB) that it gives up when the disk is
full at close, so the run's final status and health still reach its meta.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._downsample import downsample_indices

DB_NAME = "run.db"
LOCK_NAME = "run.lock"
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024  # room for the final meta write on a full disk (a few 4 KiB pages in the WAL)


class RunLockedError(RuntimeError):
    """Another process (or another tracker in this one) is writing this run."""


@dataclass(frozen=True)
class KeySummary:
    """One scalar key of a run at a glance (what `runs show` and `runs compare` print).

    Attributes:
        count: values logged (superseded ones, from before a resume, not counted).
        first_step: step of the first value logged.
        last_step: step of the last value logged.
        last_value: the last value logged (NaN stays NaN).
        min: smallest finite value; NaN when there is none.
        max: largest finite value; NaN when there is none.
        mean: mean of the finite values; NaN when there is none.
        last_wall_time: wall time (Unix seconds) of the last value logged.
    """

    count: int
    first_step: int
    last_step: int
    last_value: float
    min: float
    max: float
    mean: float
    last_wall_time: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS scalars (key_id INTEGER NOT NULL, step INTEGER NOT NULL,
                                    wall_time REAL NOT NULL, value REAL);
CREATE TABLE IF NOT EXISTS superseded_scalars (key_id INTEGER NOT NULL, step INTEGER NOT NULL,
                                               wall_time REAL NOT NULL, value REAL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
                                   step INTEGER, wall_time REAL NOT NULL, data TEXT, path TEXT);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, name);
"""
_INDEX = "CREATE INDEX IF NOT EXISTS scalars_by_key ON scalars (key_id, step)"


class RunStore:
    """Read and write one run's SQLite store.

    Writing is for the tracker's worker thread (one connection, one thread). Reading is for anyone: open a
    run directory (or the `run.db` path) and query it, also while the run is still being written.

    Example:
        >>> store = RunStore("runs/my-run")                # doctest: +SKIP
        >>> store.keys()                                    # doctest: +SKIP
        ['train/loss', 'val/psnr']
        >>> [(s, v) for s, _, v in store.history("train/loss")][:2]  # doctest: +SKIP
        [(0, 0.93), (1, 0.88)]
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        path = Path(path)
        self.path = path if path.suffix == ".db" else path / DB_NAME
        self._writable = create
        self._lock: IO[str] | None = None
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _acquire_lock(self.path.parent)
            try:
                _make_reserve(self.path.parent / RESERVE_NAME)
                self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._inode = os.stat(self.path).st_ino
            except BaseException:
                self._lock.close()  # a store that could not be opened does not keep the run locked
                raise
        else:
            if not self.path.exists():
                raise FileNotFoundError(f"run store: expected {self.path} to exist (is it a run directory "
                                        "written by AdvancedExperimentTracker?)")
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._key_ids: dict[str, int] = {}

    # ---- writing (the worker) --------------------------------------------------------------------
    def set_meta(self, values: dict[str, Any]) -> None:
        """Insert or replace metadata entries; non-strings are stored as JSON."""
        with self._transaction():
            self._set_meta(values)

    def _set_meta(self, values: dict[str, Any]) -> None:
        rows = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in values.items()]
        self._conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)

    def set_meta_last(self, values: dict[str, Any]) -> None:
        """`set_meta` for the last write of a run: on a full disk, give up the reserve file and try again."""
        try:
            self.set_meta(values)
        except sqlite3.OperationalError:
            reserve = self.path.parent / RESERVE_NAME
            if not reserve.exists():
                raise
            reserve.unlink()
            self.set_meta(values)

    def write(self, scalars: Sequence[tuple[str, int, float, float]] = (),
              events: Sequence[tuple[str, str, int | None, float, Any, str | None]] = (), *,
              config_updates: Sequence[dict[str, Any]] = (), rewind: int | None = None) -> None:
        """Write one batch in one transaction: all of it lands, or none of it (then the error is raised).

        Args:
            scalars: `(key, step, wall_time, value)` rows.
            events: `(kind, name, step, wall_time, data, path)` rows; `data` is JSON-serialised.
            config_updates: entries merged into the stored run configuration, in order.
            rewind: a resumed run restarts at this step: scalars at steps >= it are moved to
                `superseded_scalars` first, so the history stays one increasing series and nothing is deleted.
        """
        with self._transaction():
            if rewind is not None:
                self._conn.execute("INSERT INTO superseded_scalars SELECT * FROM scalars WHERE step >= ?", (rewind,))
                self._conn.execute("DELETE FROM scalars WHERE step >= ?", (rewind,))
            if config_updates:
                config = self.config()
                for values in config_updates:
                    config.update(values)
                self._set_meta({"config": config})
            key_ids = self._key_ids
            for key, _, _, _ in scalars:
                if key not in key_ids:
                    self._key_id(key)
            self._conn.executemany("INSERT INTO scalars VALUES (?, ?, ?, ?)",
                                   [(key_ids[k], s, w, v) for k, s, w, v in scalars])
            if events:
                self._conn.executemany(
                    "INSERT INTO events (kind, name, step, wall_time, data, path) VALUES (?, ?, ?, ?, ?, ?)",
                    [(k, n, s, w, json.dumps(d, default=str), p) for k, n, s, w, d, p in events])

    def update_config(self, values: dict[str, Any]) -> None:
        """Merge entries into the stored run configuration."""
        self.write(config_updates=[values])

    def rewind(self, step: int) -> None:
        """A resumed run restarts at `step` (see `write`)."""
        self.write(rewind=step)

    def _key_id(self, key: str) -> int:
        self._conn.execute("INSERT OR IGNORE INTO keys (name) VALUES (?)", (key,))
        (kid,) = self._conn.execute("SELECT id FROM keys WHERE name = ?", (key,)).fetchone()
        self._key_ids[key] = kid
        return int(kid)

    def _transaction(self) -> _Transaction:
        self._check_in_place()
        return _Transaction(self._conn, self._key_ids)

    def _check_in_place(self) -> None:
        """Raise `FileNotFoundError` when the database file was removed or replaced since it was opened (the
        run directory deleted, say): SQLite in WAL mode would go on writing into the unlinked files without
        an error, and everything written from then on would vanish at close."""
        try:
            moved = os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            moved = True
        if moved:
            raise FileNotFoundError(f"the run store {self.path} was removed or replaced while the run was writing it")

    def close(self) -> None:
        """Close the connection; the writer also builds the scalar index, drops its reserve and its lock.

        Never raises for a store that can no longer be written (full disk, removed run directory): the
        index is an optimisation, and the data written so far is already committed.
        """
        if self._writable:
            try:
                self._conn.execute(_INDEX)
            except sqlite3.Error:
                pass  # readers scan without the index; nothing is lost
            with contextlib.suppress(OSError):
                (self.path.parent / RESERVE_NAME).unlink(missing_ok=True)
        self._conn.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def forget_after_fork(self) -> None:
        """In a forked child: drop this process's reference to the run's lock without unlocking it, so the
        lock is released when the parent (its owner) closes, not when the child exits."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock.fileno())
            self._lock = None

    # ---- reading ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """All metadata, JSON values decoded."""
        return {k: _loads(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    def config(self) -> dict[str, Any]:
        """The run's configuration (secrets already redacted when it was written)."""
        return dict(self.meta().get("config") or {})

    def keys(self) -> list[str]:
        """Names of every scalar logged, sorted."""
        return [name for (name,) in self._conn.execute(
            "SELECT name FROM keys WHERE id IN (SELECT DISTINCT key_id FROM scalars) ORDER BY name")]

    def history(self, key: str) -> list[tuple[int, float, float]]:
        """`(step, wall_time, value)` of one scalar, in logging order; NaN comes back as NaN."""
        rows = self._conn.execute(
            "SELECT s.step, s.wall_time, s.value FROM scalars s JOIN keys k ON k.id = s.key_id "
            "WHERE k.name = ? ORDER BY s.rowid", (key,))
        return [(step, wall, math.nan if value is None else value) for step, wall, value in rows]

    def last(self, key: str) -> tuple[int, float] | None:
        """`(step, value)` of the last logged value of `key`, or None."""
        hist = self.history(key)
        return (hist[-1][0], hist[-1][2]) if hist else None

    def history_arrays(self, key: str, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(steps int64, wall_times float64, values float64)` of one scalar, in logging order.

        Args:
            key: the scalar's name; a key never logged gives three empty arrays.
            max_points: at most this many points (>= 4), chosen to keep the curve's shape: the minimum and
                maximum of each equal-width step interval, and where values are NaN or infinite (see
                `opusclip_track._downsample.downsample_indices`); never plain striding, which hides spikes.
                None: every point.
        """
        rows = self._conn.execute(
            "SELECT s.step, s.wall_time, s.value FROM scalars s JOIN keys k ON k.id = s.key_id "
            "WHERE k.name = ? ORDER BY s.rowid", (key,)).fetchall()
        steps = np.array([r[0] for r in rows], dtype=np.int64)
        walls = np.array([r[1] for r in rows], dtype=np.float64)
        values = np.array([r[2] for r in rows], dtype=np.float64)  # NULL (a NaN SQLite stored) -> NaN
        if max_points is not None:
            keep = downsample_indices(steps, values, max_points)
            return steps[keep], walls[keep], values[keep]
        return steps, walls, values

    def summary(self) -> dict[str, KeySummary]:
        """Every key's `KeySummary`, by key name (sorted)."""
        finite = "s.value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"
        rows = self._conn.execute(
            f"SELECT k.name, COUNT(*), MIN(s.rowid), MAX(s.rowid), MIN(CASE WHEN {finite} THEN s.value END), "
            f"MAX(CASE WHEN {finite} THEN s.value END), AVG(CASE WHEN {finite} THEN s.value END) "
            "FROM scalars s JOIN keys k ON k.id = s.key_id GROUP BY k.name ORDER BY k.name").fetchall()
        out = {}
        for name, count, first, last, low, high, mean in rows:
            (first_step,) = self._conn.execute("SELECT step FROM scalars WHERE rowid = ?", (first,)).fetchone()
            last_step, last_wall, last_value = self._conn.execute(
                "SELECT step, wall_time, value FROM scalars WHERE rowid = ?", (last,)).fetchone()
            out[name] = KeySummary(count, first_step, last_step, _nan(last_value), _nan(low), _nan(high),
                                   _nan(mean), last_wall)
        return out

    def scalar_batches(self) -> Iterator[tuple[int, float, dict[str, float]]]:
        """Every scalar as `(step, wall_time, {key: value})` groups, in logging order: each group is a run of
        consecutive values logged with the same step and wall time (one `log_metrics` call). NaN stays NaN.
        What a replay into another backend needs (`opusclip-track sync`)."""
        rows = self._conn.execute("SELECT s.step, s.wall_time, k.name, s.value FROM scalars s "
                                  "JOIN keys k ON k.id = s.key_id ORDER BY s.rowid")
        group: dict[str, float] = {}
        current: tuple[int, float] | None = None
        for step, wall, key, value in rows:
            if (step, wall) != current or key in group:
                if group and current is not None:
                    yield current[0], current[1], group
                current, group = (step, wall), {}
            group[key] = math.nan if value is None else value
        if group and current is not None:
            yield current[0], current[1], group

    def num_scalars(self) -> int:
        (n,) = self._conn.execute("SELECT COUNT(*) FROM scalars").fetchone()
        return int(n)

    def events(self, kind: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Non-scalar records (text, histogram, hparams, video, image, artifact ...), oldest first."""
        query = "SELECT kind, name, step, wall_time, data, path FROM events"
        clauses, args = [], []
        for column, value in (("kind", kind), ("name", name)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        return [{"kind": k, "name": n, "step": s, "wall_time": w, "data": _loads(d), "path": p}
                for k, n, s, w, d, p in self._conn.execute(query + " ORDER BY id", args)]

    def max_step(self) -> int | None:
        """The largest step recorded in scalars or events (for resuming a run), or None when empty."""
        (a,) = self._conn.execute("SELECT MAX(step) FROM scalars").fetchone()
        (b,) = self._conn.execute("SELECT MAX(step) FROM events").fetchone()
        steps = [s for s in (a, b) if s is not None]
        return max(steps) if steps else None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """BEGIN ... COMMIT on an autocommit connection (rollback on error), retrying a locked database.

    A failed transaction leaves nothing behind: key ids cached during it are forgotten (their rows were
    rolled back), and a COMMIT that fails (a full disk) is rolled back too. SQLite may already have rolled
    back by itself (it does on SQLITE_FULL), so ROLLBACK is only sent while a transaction is open.
    """

    def __init__(self, conn: sqlite3.Connection, key_ids: dict[str, int]) -> None:
        self._conn = conn
        self._key_ids = key_ids
        self._known = 0

    def __enter__(self) -> None:
        self._known = len(self._key_ids)
        for attempt in range(50):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:  # a reader holding a lock; wait briefly
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.02)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        for key in list(self._key_ids)[self._known:]:  # dicts keep insertion order: the keys added here
            del self._key_ids[key]


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _acquire_lock(run_dir: Path) -> IO[str]:
    """Take the run's writer lock or raise `RunLockedError` naming the process that holds it."""
    handle = open(run_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the run's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        this = " (this process)" if holder == str(os.getpid()) else ""
        raise RunLockedError(
            f"run {run_dir.name!r} is already open for writing by process {holder}{this} (lock "
            f"{run_dir / LOCK_NAME}): one process writes a run at a time. Close that tracker first (resume "
            "the run afterwards with TrackingConfig(resume=...)), or pick another run_name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _make_reserve(path: Path) -> None:
    """Write the reserve file (real blocks, not a sparse file) unless it is already there (a resumed run)."""
    with contextlib.suppress(OSError):  # no room for it: the run still starts, without the reserve
        if not path.exists() or path.stat().st_size < RESERVE_BYTES:
            path.write_bytes(bytes(RESERVE_BYTES))


def list_runs(log_dir: str | Path = "runs") -> list[Path]:
    """Run directories under `log_dir` that hold a store, newest first, nested ones included
    (`runs/sweeps/<sweep>/<trial>/`). A run directory is not searched further (its `media/`, `wandb/`)."""
    found: list[Path] = []
    for parent, dirs, files in os.walk(log_dir):
        if DB_NAME in files:
            found.append(Path(parent))
            dirs.clear()
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found, key=_mtime, reverse=True)


def _mtime(run_dir: Path) -> float:
    try:
        return (run_dir / DB_NAME).stat().st_mtime
    except OSError:  # removed while listing
        return 0.0


def find_run(log_dir: str | Path, name: str | Path) -> Path:
    """The run directory `name` means: a path to a run directory (or its `run.db`), a run's name or its path
    relative to `log_dir` (`sweeps/lr/trial-003`), or an unambiguous prefix of either.

    Raises:
        FileNotFoundError: no run matches; the message lists the runs under `log_dir`.
        ValueError: a prefix that matches several runs; the message lists them.
    """
    log_dir = Path(log_dir)
    text = str(name)
    for candidate in (Path(name), log_dir / name):
        if candidate.name == DB_NAME and candidate.is_file():
            return candidate.parent
        if (candidate / DB_NAME).is_file():
            return candidate
    runs = list_runs(log_dir) if log_dir.is_dir() else []
    names = {run: run.relative_to(log_dir).as_posix() for run in runs}
    for matches in ([r for r in runs if text in (names[r], r.name)],
                    [r for r in runs if names[r].startswith(text) or r.name.startswith(text)]):
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f"RUN: {text!r} matches {len(matches)} runs under {log_dir}: "
                             f"{', '.join(sorted(names[r] for r in matches))}; give more of the name")
    raise FileNotFoundError(f"RUN: expected a run directory, a run name under {log_dir} or a prefix of one, "
                            f"received {text!r} (runs here: {', '.join(sorted(names.values())) or 'none'})")

