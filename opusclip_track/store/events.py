"""The `events` table: every record that is not a scalar (text, alerts, histogram summaries, hyperparameters, media
and artifact references), one row each, `data` as JSON, logging order = `id`.

`superseded_at` is NULL, or, for an event of a trajectory a resumed run abandoned, the step it restarted at
(`RunStore.rewind`): kept, never deleted, and read only when asked for. Stores written before that column have none
and read as they are (`has_superseded_column`); a writer adds it when it opens one.

Every function here runs inside a transaction its caller holds (`RunStore` writes, or reads in one snapshot).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
                                   step INTEGER, wall_time REAL NOT NULL, data TEXT, path TEXT,
                                   superseded_at INTEGER);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, name);
"""

Row = tuple[str, str, int | None, float, Any, str | None]
"""`(kind, name, step, wall_time, data, path)`, `data` not yet serialised."""


def has_superseded_column(conn: sqlite3.Connection) -> bool:
    return "superseded_at" in [row[1] for row in conn.execute("PRAGMA table_info(events)")]


def add_superseded_column(conn: sqlite3.Connection) -> None:
    """Give a store written before `superseded_at` the column (its events all current)."""
    if not has_superseded_column(conn):
        conn.execute("ALTER TABLE events ADD COLUMN superseded_at INTEGER")


def insert(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    conn.executemany("INSERT INTO events (kind, name, step, wall_time, data, path) VALUES (?, ?, ?, ?, ?, ?)",
                     [(k, n, s, w, json.dumps(d, default=str), p) for k, n, s, w, d, p in rows])


def supersede(conn: sqlite3.Connection, step: int) -> None:
    """Mark every current event at a step >= `step` superseded by a restart at `step` (events without a step, such
    as hyperparameters and artifacts, belong to the whole run and stay)."""
    conn.execute("UPDATE events SET superseded_at = ? WHERE step >= ? AND superseded_at IS NULL", (step, step))


def select(conn: sqlite3.Connection, kind: str | None, name: str | None, *, include_superseded: bool,
           with_column: bool) -> list[tuple[Any, ...]]:
    """`(kind, name, step, wall_time, data text, path, superseded_at)` rows, oldest first; `with_column`: the store
    has `superseded_at` (else every event is current)."""
    query = f"SELECT kind, name, step, wall_time, data, path, {'superseded_at' if with_column else 'NULL'} FROM events"
    clauses, args = [], []
    for column, value in (("kind", kind), ("name", name)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if with_column and not include_superseded:
        clauses.append("superseded_at IS NULL")
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    return conn.execute(query + " ORDER BY id", args).fetchall()


def max_step(conn: sqlite3.Connection, *, with_column: bool) -> int | None:
    """The largest step of a current event, or None."""
    (step,) = conn.execute("SELECT MAX(step) FROM events" + (" WHERE superseded_at IS NULL" if with_column else "")
                           ).fetchone()
    return None if step is None else int(step)
