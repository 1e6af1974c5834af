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
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DB_NAME = "run.db"

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
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        else:
            if not self.path.exists():
                raise FileNotFoundError(f"run store: expected {self.path} to exist (is it a run directory "
                                        "written by AdvancedExperimentTracker?)")
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._key_ids: dict[str, int] = {}

    # ---- writing (the worker) --------------------------------------------------------------------
    def set_meta(self, values: dict[str, Any]) -> None:
        """Insert or replace metadata entries; non-strings are stored as JSON."""
        rows = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in values.items()]
        with self._transaction():
            self._conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)

    def write(self, scalars: Sequence[tuple[str, int, float, float]],
              events: Sequence[tuple[str, str, int | None, float, Any, str | None]] = ()) -> None:
        """Write one batch in one transaction.

        Args:
            scalars: `(key, step, wall_time, value)` rows.
            events: `(kind, name, step, wall_time, data, path)` rows; `data` is JSON-serialised.
        """
        key_ids = self._key_ids
        with self._transaction():
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
        config = self.config()
        config.update(values)
        self.set_meta({"config": config})

    def rewind(self, step: int) -> None:
        """A resumed run restarts at `step`: move scalars at steps >= `step` to `superseded_scalars`, so the
        history stays one increasing series and nothing logged is deleted."""
        with self._transaction():
            self._conn.execute("INSERT INTO superseded_scalars SELECT * FROM scalars WHERE step >= ?", (step,))
            self._conn.execute("DELETE FROM scalars WHERE step >= ?", (step,))

    def _key_id(self, key: str) -> int:
        self._conn.execute("INSERT OR IGNORE INTO keys (name) VALUES (?)", (key,))
        (kid,) = self._conn.execute("SELECT id FROM keys WHERE name = ?", (key,)).fetchone()
        self._key_ids[key] = kid
        return int(kid)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def close(self) -> None:
        if self._writable:
            self._conn.execute(_INDEX)
        self._conn.close()

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
    """BEGIN ... COMMIT on an autocommit connection (rollback on error), retrying a locked database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        for attempt in range(50):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:  # a reader holding a lock; wait briefly
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.02)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def list_runs(log_dir: str | Path = "runs") -> list[Path]:
    """Run directories under `log_dir` that hold a store, newest first."""
    dbs = sorted(Path(log_dir).glob(f"*/{DB_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [db.parent for db in dbs]
