"""Reading scalars from a store written before the columnar format (no `store_format` in its meta): one row per
scalar in `scalars(key_id, step, wall_time, value)`, NULL for NaN, logging order = rowid. Such a store is
read as it is (every query below scans it); a writer that opens it (a resumed run) converts it first.

Scalars a resumed run replaced are kept in rows of the same shape in every format (`superseded_scalars`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np

from .columns import Stats

_FINITE = "value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE scalars (key_id INTEGER NOT NULL, step INTEGER NOT NULL, wall_time REAL NOT NULL, value REAL);
CREATE TABLE superseded_scalars (key_id INTEGER NOT NULL, step INTEGER NOT NULL, wall_time REAL NOT NULL,
                                 value REAL);
CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, step INTEGER,
                     wall_time REAL NOT NULL, data TEXT, path TEXT);
CREATE INDEX events_by_kind ON events (kind, name);
"""
"""The tables as the releases before the columnar format created them (they indexed `scalars (key_id, step)` at
close): what this module reads, and what the tests and `benchmarks/bench_store.py` write to make such a store."""


def keys(conn: sqlite3.Connection) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT name FROM keys WHERE id IN (SELECT DISTINCT key_id FROM scalars) ORDER BY name")]


def history(conn: sqlite3.Connection, key_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = conn.execute("SELECT step, wall_time, value FROM scalars WHERE key_id = ? ORDER BY rowid", (key_id,))
    return _columns(rows.fetchall())


def superseded_history(conn: sqlite3.Connection, key_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = conn.execute("SELECT step, wall_time, value FROM superseded_scalars WHERE key_id = ? ORDER BY rowid",
                        (key_id,))
    return _columns(rows.fetchall())


def _columns(rows: list[tuple[int, float, float | None]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
    steps, walls, values = zip(*rows, strict=True)
    return (np.array(steps, dtype=np.int64), np.array(walls, dtype=np.float64),
            np.array(values, dtype=np.float64))  # None (a NaN SQLite stored as NULL) -> NaN


def stats(conn: sqlite3.Connection) -> dict[int, Stats]:
    """Every key's `Stats`, by key id, computed in SQL (one pass over the table)."""
    out = {}
    for key_id, count, first, last, low, high, total, finite, max_step in conn.execute(
            f"SELECT key_id, COUNT(*), MIN(rowid), MAX(rowid), MIN(CASE WHEN {_FINITE} THEN value END), "
            f"MAX(CASE WHEN {_FINITE} THEN value END), TOTAL(CASE WHEN {_FINITE} THEN value END), "
            f"COUNT(CASE WHEN {_FINITE} THEN 1 END), MAX(step) FROM scalars GROUP BY key_id"):
        (first_step,) = conn.execute("SELECT step FROM scalars WHERE rowid = ?", (first,)).fetchone()
        last_step, last_wall, last_value = conn.execute(
            "SELECT step, wall_time, value FROM scalars WHERE rowid = ?", (last,)).fetchone()
        out[key_id] = Stats.of_row((count, first_step, last_step, last_value, last_wall, low, high, total, finite,
                                    max_step))
    return out


def rows_by_rowid(conn: sqlite3.Connection, piece: int) -> Iterator[tuple[np.ndarray, ...]]:
    """`(seq, key_ids, steps, walls, values)` arrays of `piece` rows at a time, in logging order (seq = rowid)."""
    last = 0
    while True:
        rows = conn.execute("SELECT rowid, key_id, step, wall_time, value FROM scalars WHERE rowid > ? "
                            "ORDER BY rowid LIMIT ?", (last, piece)).fetchall()
        if not rows:
            return
        seq, key_ids, steps, walls, values = zip(*rows, strict=True)
        last = seq[-1]
        yield (np.array(seq, dtype=np.int64), np.array(key_ids, dtype=np.int64), np.array(steps, dtype=np.int64),
               np.array(walls, dtype=np.float64), np.array(values, dtype=np.float64))

