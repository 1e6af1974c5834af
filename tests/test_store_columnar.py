"""The store's columnar format against real SQLite: a write-ahead tail compacted into per-key chunks, a summary
row per key, resumes that supersede values, stores of the previous row-per-scalar format, a full disk during
compaction, readers during compaction, and writers killed with SIGKILL (a real child process)."""

from __future__ import annotations

import math
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from opusclip_track.backends.tensorboard import EventFile
from opusclip_track.store import STORE_FORMAT, KeySummary, RunStore, legacy

Row = tuple[str, int, float, float]
ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0123))[0]  # a NaN with a payload


def bits(values: list[float]) -> list[int]:
    return [struct.unpack("<q", struct.pack("<d", v))[0] for v in values]


def expected_summary(rows: list[Row]) -> dict[str, KeySummary]:
    """What `summary()` must say, computed the slow way from the rows in logging order."""
    out = {}
    for key in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == key]
        finite = [r[3] for r in mine if math.isfinite(r[3])]
        out[key] = KeySummary(len(mine), mine[0][1], mine[-1][1], mine[-1][3], min(finite, default=math.nan),
                              max(finite, default=math.nan), sum(finite) / len(finite) if finite else math.nan,
                              mine[-1][2])
    return out


def assert_reads(store: RunStore, rows: list[Row]) -> None:
    """Every reader method agrees with `rows` (logging order), bit for bit."""
    for key in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == key]
        steps, walls, values = store.history_arrays(key)
        assert steps.tolist() == [r[1] for r in mine] and walls.tolist() == [r[2] for r in mine]
        assert values.view(np.int64).tolist() == bits([r[3] for r in mine]), key
    replayed = [(key, step, wall, value) for step, wall, group in store.scalar_batches()
                for key, value in group.items()]
    assert [(k, s, w) for k, s, w, _ in replayed] == [r[:3] for r in rows], "logging order across keys"
    assert bits([r[3] for r in replayed]) == bits([r[3] for r in rows])
    got, want = store.summary(), expected_summary(rows)
    assert list(got) == list(want) and store.keys() == list(want)
    for key, summary in want.items():
        assert _same(got[key], summary), (key, got[key], summary)
    assert store.num_scalars() == len(rows)
    assert store.max_step() == max((r[1] for r in rows), default=None)


def _same(a: KeySummary, b: KeySummary) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) or (isinstance(x, float) and math.isclose(x, y))
               for x, y in zip(vars(a).values(), vars(b).values(), strict=True))


def test_the_tail_and_its_chunks_read_as_one_series_bit_for_bit_while_and_after_writing(tmp_path: Path) -> None:
    rows: list[Row] = []
    store = RunStore(tmp_path / "run", create=True)
    store.tail_scalars = 40  # compact every few batches
    reader = RunStore(tmp_path / "run")
    specials = [math.nan, -0.0, math.inf, -math.inf, ODD_NAN, 5e-324, 1.7976931348623157e308]
    for batch in range(30):
        new: list[Row] = []
        for step in range(batch * 5, batch * 5 + 5):
            wall = 1.7e9 + step * 0.1
            new += [("train/loss", step, wall, 1.0 / (step + 1)), ("lr", step, wall, specials[step % 7])]
            if step % 3 == 0:
                new.append(("val/psnr", step, wall + 0.01, float(step)))
        if batch == 7:  # two calls at the same step and time, extreme steps
            new += [("lr", 2**63 - 1, 1.0, 1.0), ("lr", 2**63 - 1, 1.0, 2.0), ("lr", -(2**63), 1.0, 3.0)]
        store.write(new)
        rows += new
        if batch % 4 == 0:
            assert_reads(reader, rows)  # another reader, while the writer's tail and chunks change
    store.close()
    conn = sqlite3.connect(tmp_path / "run" / "run.db")
    assert conn.execute("SELECT COUNT(*) FROM scalar_tail").fetchone() == (0,)
    assert conn.execute("SELECT COUNT(DISTINCT gen) FROM scalar_chunks").fetchone()[0] > 5
    assert_reads(RunStore(tmp_path / "run"), rows)
    batches = list(RunStore(tmp_path / "run").scalar_batches())
    assert [(s, g) for s, _, g in batches if s == 2**63 - 1] == [(2**63 - 1, {"lr": 1.0}), (2**63 - 1, {"lr": 2.0})]


def test_a_resume_supersedes_later_values_in_chunks_and_tail_and_keeps_them(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", create=True)
    store.tail_scalars = 30
    rows = [(key, step, float(step), float(step * 10 + i)) for step in range(100)
            for i, key in enumerate(("a", "b")) if key == "a" or step >= 70]  # "b" only after step 70
    for start in range(0, len(rows), 7):
        store.write(rows[start:start + 7])
    store.close()

    store = RunStore(tmp_path / "run", create=True)  # the resumed process, back at its checkpoint of step 59
    store.tail_scalars = 30
    store.rewind(60)
    kept = [r for r in rows if r[1] < 60]
    assert_reads(store, kept)
    assert store.keys() == ["a"], "a key logged only after the checkpoint is gone from the history"
    again = [("a", step, 1000.0 + step, -float(step)) for step in range(60, 80)]
    store.write(again[:5])
    store.write(again[5:])
    store.close()
    reader = RunStore(tmp_path / "run")
    assert_reads(reader, kept + again)
    for key in ("a", "b"):  # what the resume replaced is kept, not deleted
        steps, walls, values = reader.superseded_history(key)
        replaced = [r for r in rows if r[0] == key and r[1] >= 60]
        assert sorted(zip(steps.tolist(), walls.tolist(), values.tolist(), strict=True)) == [r[1:] for r in replaced]
    assert [a.size for a in reader.superseded_history("never-logged")] == [0, 0, 0]


def test_a_resume_supersedes_the_events_of_the_abandoned_steps_and_keeps_them(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", create=True)
    store.write([("loss", 5, 1.0, 0.5)], [("hparams", "hparams", None, 1.0, {"params": {"lr": 0.1}}, None),
                                          ("text", "note", 3, 1.0, {"text": "kept"}, None),
                                          ("video", "clip", 6, 1.0, {"fps": 4}, "clip_6.mp4"),
                                          ("alert", "NaN loss", 8, 1.0, {"title": "NaN loss"}, None)])
    store.rewind(4)  # resumed from the checkpoint of step 3
    store.write(events=[("video", "clip", 6, 2.0, {"fps": 4}, "clip_6_again.mp4")])
    store.rewind(7)  # and once more, from step 6: what the first resume superseded keeps its step
    store.close()
    reader = RunStore(tmp_path / "run")
    assert [(e["kind"], e["path"]) for e in reader.events()] == [("hparams", None), ("text", None),
                                                                   ("video", "clip_6_again.mp4")]
    assert reader.events("alert") == [] and reader.max_step() == 6
    everything = reader.events(include_superseded=True)
    assert [(e["kind"], e["step"], e["superseded_at"]) for e in everything] == [
        ("hparams", None, None), ("text", 3, None), ("video", 6, 4), ("alert", 8, 4), ("video", 6, None)]
    assert [e["data"] for e in reader.events("alert", include_superseded=True)] == [{"title": "NaN loss"}]


def old_format_store(run_dir: Path, rows: list[Row]) -> None:
    """A store as the previous release wrote it (one row per scalar, NaN as NULL, the index built at close)."""
    run_dir.mkdir(parents=True)
    conn = sqlite3.connect(run_dir / "run.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(legacy.SCHEMA)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("run_name", run_dir.name), ("status", "finished"),
                                                       ("config", '{"lr": 0.1}')])
    ids = {key: i for i, key in enumerate(sorted({r[0] for r in rows}), start=1)}
    conn.executemany("INSERT INTO keys VALUES (?, ?)", [(i, key) for key, i in ids.items()])
    conn.executemany("INSERT INTO scalars VALUES (?, ?, ?, ?)", [(ids[k], s, w, v) for k, s, w, v in rows])
    conn.execute("INSERT INTO superseded_scalars VALUES (1, 99, 0.0, 1.0)")
    conn.execute("INSERT INTO events (kind, name, step, wall_time, data) VALUES ('text', 'note', 3, 1.0, '{\"t\": 1}')")
    conn.execute("CREATE INDEX scalars_by_key ON scalars (key_id, step)")
    conn.close()


def test_a_store_of_the_previous_format_reads_the_same_and_is_converted_when_resumed(tmp_path: Path) -> None:
    rows = [(key, step, 100.0 + step, v) for step in range(50)
            for key, v in (("loss", 1.0 / (step + 1)), ("psnr", math.nan if step == 7 else float(step)))]
    rows.append(("loss", 49, 149.0, math.inf))  # a second value at the last step
    old_format_store(tmp_path / "old", rows)
    reader = RunStore(tmp_path / "old")
    assert_reads(reader, rows)
    assert reader.history("psnr")[7][2] != reader.history("psnr")[7][2], "NULL reads back as NaN"
    assert reader.last("loss") == (49, math.inf) and reader.events("text")[0]["data"] == {"t": 1}
    assert reader.events(include_superseded=True)[0]["superseded_at"] is None and reader.max_step() == 49

    store = RunStore(tmp_path / "old", create=True)  # a resumed run converts the store
    store.tail_scalars = 20
    more = [("loss", step, 200.0 + step, 0.5) for step in range(50, 60)]
    store.write(more)
    store.rewind(3)  # its events can now be superseded
    store.close()
    assert_reads(RunStore(tmp_path / "old"), [r for r in rows + more if r[1] < 3])
    assert RunStore(tmp_path / "old").events() == []
    assert [e["superseded_at"] for e in RunStore(tmp_path / "old").events(include_superseded=True)] == [3]
    assert reader.meta()["store_format"] == STORE_FORMAT and reader.config() == {"lr": 0.1}
    conn = sqlite3.connect(tmp_path / "old" / "run.db")
    assert conn.execute("SELECT COUNT(*) FROM scalars").fetchone() == (0,)
    replaced = [r[1] for r in rows + more if r[0] == "loss" and r[1] >= 3]
    assert RunStore(tmp_path / "old").superseded_history("loss")[0].tolist() == [99, *replaced]  # 99: the old one


def test_a_compaction_that_hits_a_full_disk_leaves_the_tail_readable_and_is_retried(tmp_path: Path) -> None:
    """The disk fills between the last batch and close: the batches are committed, so close() neither raises
    nor loses them; they stay in the tail, and the next writer of the run compacts them."""
    noise = np.random.default_rng(0).standard_normal(3000).tolist()  # a chunk of new pages, whatever the slack
    rows = [("x", step, float(step), noise[step]) for step in range(3000)]
    store = RunStore(tmp_path / "run", create=True)
    store.write(rows)
    store.set_meta({"status": "finished"})
    (pages,) = store._conn.execute("PRAGMA page_count").fetchone()
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    store.close()
    conn = sqlite3.connect(tmp_path / "run" / "run.db")
    assert conn.execute("SELECT COUNT(*), SUM(n) FROM scalar_tail").fetchone() == (1, 3000), "not compacted"
    reader = RunStore(tmp_path / "run")
    assert_reads(reader, rows)
    assert reader.meta()["status"] == "finished"
    RunStore(tmp_path / "run", create=True).close()  # room again: the next writer compacts at close
    assert conn.execute("SELECT COUNT(*) FROM scalar_tail").fetchone() == (0,)
    assert_reads(RunStore(tmp_path / "run"), rows)


def test_readers_never_see_a_scalar_twice_or_miss_one_while_the_writer_compacts(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", create=True)
    store.tail_scalars = 300  # a compaction every third batch
    done = threading.Event()

    def writer() -> None:
        try:
            for batch in range(150):
                store.write([(key, step, float(step), 1.0) for step in range(batch * 50, batch * 50 + 50)
                             for key in ("a", "b")])
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reader = RunStore(tmp_path / "run")
    seen = []
    while True:
        finished = done.is_set()
        steps = reader.history_arrays("a")[0]
        assert np.array_equal(steps, np.arange(steps.size)), "each step once, in order"
        assert reader.summary().get("a", KeySummary(0, 0, 0, 0, 0, 0, 0, 0)).count >= steps.size
        seen.append(steps.size)
        if finished:
            break
    thread.join()
    store.close()
    assert seen == sorted(seen) and seen[-1] == 7500 and len(set(seen)) > 3


WRITER = """
import sys
from opusclip_track.store import RunStore

store = RunStore(sys.argv[1], create=True)
store.tail_scalars = 2000  # a compaction every 10 batches, so a kill can land in one
for batch in range(10_000):
    store.write([(key, step, 1.7e9 + step, step / 7) for step in range(batch * 100, batch * 100 + 100)
                 for key in ("loss", "lr")])
    print(batch, flush=True)
"""


@pytest.mark.parametrize("kill_after", [9, 10, 37, 60])
def test_a_sigkilled_writer_loses_no_committed_batch_even_during_a_compaction(tmp_path: Path, kill_after: int) -> None:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    committed = -1
    while committed < kill_after:
        line = proc.stdout.readline()
        assert line, "the writer ended before it was killed"
        committed = int(line)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    reader = RunStore(tmp_path / "run")
    steps = reader.history_arrays("loss")[0]
    assert steps.size >= (committed + 1) * 100, "every batch whose write returned is in the store"
    assert np.array_equal(steps, np.arange(steps.size)), "once each, in order"
    assert reader.summary()["lr"].count == steps.size and reader.num_scalars() == 2 * steps.size
    store = RunStore(tmp_path / "run", create=True)  # the run resumes and goes on from there
    store.write([("loss", int(steps.size), 0.0, 1.0)])
    store.close()
    assert RunStore(tmp_path / "run").history_arrays("loss")[0].tolist() == list(range(steps.size + 1))


def test_a_run_takes_less_disk_than_tensorboards_event_file_for_the_same_scalars(tmp_path: Path) -> None:
    """Sizes, not speed: 20 keys, one event per step, values as a training loop logs them (float32 tensors'
    `.item()`, a float64 schedule, 0.1-resolution system samples), wall times 0.1 s apart."""
    rng = np.random.default_rng(0)
    steps = 5000
    walls = 1.7e9 + np.cumsum(0.1 + 0.002 * rng.random(steps))
    columns = [(rng.standard_normal(steps) / (i + 1)).astype(np.float32).astype(np.float64) for i in range(12)]
    columns.append(1e-4 * np.cos(np.arange(steps) / steps))
    columns += [np.round(100 * rng.random(steps), 1) for _ in range(7)]
    keys = [f"{group}/metric_{i}" for i, group in enumerate(["train"] * 6 + ["video"] * 6 + ["lr"] + ["sys"] * 7)]
    values = np.stack(columns, axis=1).tolist()
    with RunStore(tmp_path / "run", create=True) as store:
        for start in range(0, steps, 500):
            store.write([(key, step, float(walls[step]), values[step][j]) for step in range(start, start + 500)
                         for j, key in enumerate(keys)])
    from tensorboard.compat.proto.event_pb2 import Event

    (tmp_path / "tb").mkdir()
    events = EventFile(tmp_path / "tb")
    for step in range(steps):
        event = Event(wall_time=float(walls[step]), step=step)
        for j, key in enumerate(keys):
            event.summary.value.add(tag=key, simple_value=values[step][j])
        events.write(event)
    events.close()
    ours = sum(p.stat().st_size for p in (tmp_path / "run").glob("run.db*"))
    assert ours < Path(events.path).stat().st_size, "float64 values in fewer bytes than TensorBoard's float32"
    assert RunStore(tmp_path / "run").num_scalars() == steps * 20


def test_values_at_float64s_limits_of_both_signs_are_stored_and_their_mean_is_nan(tmp_path: Path) -> None:
    """Their running sum overflows to +inf in one batch and -inf in the next (inf - inf is NaN): the batch must
    still land, and the summary say the mean is undefined rather than reject the values."""
    big = 1.7976931348623157e308
    with RunStore(tmp_path / "run", create=True) as store:
        store.write([("x", 0, 0.0, big), ("x", 1, 1.0, big)])
        store.write([("x", 2, 2.0, -big), ("x", 3, 3.0, -big)])
    summary = RunStore(tmp_path / "run").summary()["x"]
    assert (summary.count, summary.min, summary.max) == (4, -big, big) and math.isnan(summary.mean)
    assert RunStore(tmp_path / "run").history_arrays("x")[2].tolist() == [big, big, -big, -big]
