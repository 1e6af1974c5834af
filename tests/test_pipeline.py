"""The worker's pipeline under failure: bad records, a store that cannot be written, backends that raise.

Everything here runs against real components: the SQLite store on a real (2 MB tmpfs) full disk, TensorBoard
event files read back with TensorBoard's reader, and small `Backend` subclasses registered by name, the
collaborators whose failures the pipeline must isolate.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from _readers import scalars
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig, _backend_stage
from opusclip_track.backends import REGISTRY, Backend
from opusclip_track.backends.tensorboard import TensorBoardBackend
from opusclip_track.records import Histogram, Hyperparameters, Record, RunStatus, Scalars, Text


def make(runs_dir: Path, **overrides: object) -> AdvancedExperimentTracker:
    options: dict[str, object] = {"experiment_name": "p", "log_dir": str(runs_dir), "use_wandb": False,
                                  "flush_interval_s": 60.0, "system_monitor_interval_s": 0.0}
    options.update(overrides)
    return AdvancedExperimentTracker(TrackingConfig(**options))  # type: ignore[arg-type]


class RecordingBackend(Backend):
    """Keeps every record it is given, in memory, and how it was closed."""

    name = "recording"
    made: ClassVar[dict[str, RecordingBackend]] = {}  # the last one made, by backend name

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.records: list[Record] = []
        self.closed_with: str | None = None
        RecordingBackend.made[self.name] = self

    def start(self) -> None:
        pass

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        self.records += records

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        self.records.append(record)

    def log_text(self, record: Text) -> None:
        self.records.append(record)

    def close(self, status: RunStatus = "finished") -> None:
        self.closed_with = status

    def steps(self, key: str) -> list[int]:
        return [r.step for r in self.records if isinstance(r, Scalars) and key in r.values]


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[RecordingBackend]:
    monkeypatch.setitem(REGISTRY, "recording", f"{__name__}:RecordingBackend")
    RecordingBackend.made.clear()
    return RecordingBackend


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


# ---- one bad record never loses good ones ------------------------------------------------------------
def test_records_the_store_cannot_hold_lose_only_themselves(
        runs_dir: Path, recording: type[RecordingBackend], caplog: pytest.LogCaptureFixture) -> None:
    """Records that slipped past the call's checks (put directly here) go to the worker in one batch with
    50 good ones: the batch is bisected, the 3 bad ones are rejected and counted, everything else lands."""
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with make(runs_dir, backends=["recording"]) as tracker:
        for step in range(50):
            tracker.log_metrics({"loss": float(step)}, step=step)
            if step == 10:
                tracker._put(Scalars(2**63, time.time(), {"loss": -1.0}), 64)  # SQLite: int too large
            if step == 20:
                tracker._put(Text("b\udcff", "x", 20, time.time()), 64)  # not UTF-8
            if step == 30:
                tracker._put(Hyperparameters(circular, {}, time.time()), 64)  # not JSON
        tracker.log_text("notes", "fine", step=49)
        assert not tracker.flush(), "flush() says that not everything reached the store"
        health = tracker.health
    assert health["store_rejected"] == 3 and not health["ok"]
    store = RunStore(tracker.run_dir)
    assert [s for s, _, _ in store.history("loss")] == list(range(50))
    assert [e["name"] for e in store.events("text")] == ["notes"]
    assert [s for s, _ in scalars("tensorboard", tracker.run_dir)["loss"]] == list(range(50))
    backend = recording.made["recording"]
    assert backend.steps("loss") == list(range(50)), "the backends get the good records, not the rejected"
    assert len(warnings_with(caplog, "cannot hold")) == 1, "reported once"
    assert store.meta()["health"]["store_rejected"] == 3


# ---- a store that cannot be written -----------------------------------------------------------------------
class SmallDisk:
    """A 2 MB tmpfs holding the runs (needs mount, i.e. root). Where mounting is not allowed, the same
    "database or disk is full" error comes from SQLite's own page limit on the run's real connection."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)],
                                      capture_output=True).returncode == 0
        self.filler = root / "filler.bin"

    def fill(self, tracker: AdvancedExperimentTracker) -> None:
        if not self.mounted:
            (pages,) = tracker._writer.store._conn.execute("PRAGMA page_count").fetchone()
            tracker._writer.store._conn.execute(f"PRAGMA max_page_count = {pages}")
            return
        with open(self.filler, "ab", buffering=0) as fh, contextlib.suppress(OSError):  # until ENOSPC
            while True:
                fh.write(bytes(16384))

    def free(self, tracker: AdvancedExperimentTracker) -> None:
        if not self.mounted:
            tracker._writer.store._conn.execute("PRAGMA max_page_count = 1073741823")
            return
        self.filler.unlink()

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    disk.unmount()


def test_a_full_disk_holds_records_retries_them_and_reports_what_it_lost(
        small_disk: SmallDisk, recording: type[RecordingBackend], caplog: pytest.LogCaptureFixture) -> None:
    text = "x" * 2000  # a few pages per batch, so the full disk is hit whatever free pages the store has
    tracker = make(small_disk.root / "runs", backends=["recording"], use_tensorboard=False)
    for step in range(100):
        tracker.log_metrics({"loss": float(step)}, step=step)
    assert tracker.flush()

    small_disk.fill(tracker)
    for step in range(100, 300):
        tracker.log_metrics({"loss": float(step)}, step=step)
        tracker.log_text("notes", text, step=step)
    assert not tracker.flush(), "records that did not reach the store make flush() False"
    health = tracker.health
    assert health["store_pending"] == 400 and health["store_write_failures"] >= 1 and not health["ok"]
    assert "full" in str(health["store_last_error"])
    backend = recording.made["recording"]
    assert backend.steps("loss") == list(range(300)), "the backends get the records meanwhile"

    small_disk.free(tracker)  # space again: the held records land with the next batch
    tracker.log_metrics({"loss": 300.0}, step=300)
    assert tracker.flush()
    assert tracker.health["store_pending"] == 0 and tracker.health["store_lost"] == 0
    assert [s for s, _, _ in RunStore(tracker.run_dir).history("loss")] == list(range(301))
    assert len(RunStore(tracker.run_dir).events("text")) == 200

    small_disk.fill(tracker)  # full until the end, with a small memory bound for what is held
    tracker._writer.store_stage.writer.max_pending_rows = 20
    for step in range(301, 401):
        tracker.log_metrics({"loss": float(step)}, step=step)
        tracker.log_text("notes", text, step=step)
    tracker.close()  # does not raise
    assert tracker.health["store_lost"] == 200 and tracker.health["store_pending"] == 0
    assert backend.steps("loss") == list(range(401)) and backend.closed_with == "finished"
    assert len(warnings_with(caplog, "cannot be written")) == 2, "once per episode, not once per batch"
    assert warnings_with(caplog, "store_lost=200"), "one summary line at close"
    if small_disk.mounted:  # the store gives up its reserve file so the final meta fits on the full disk
        meta = RunStore(tracker.run_dir).meta()
        assert meta["status"] == "finished" and meta["health"]["store_lost"] == 200
    assert [s for s, _, _ in RunStore(tracker.run_dir).history("loss")] == list(range(301))


def test_a_read_only_store_holds_records_until_it_is_writable(
        runs_dir: Path, recording: type[RecordingBackend]) -> None:
    """Read-only as SQLite sees it ("attempt to write a readonly database"). A read-only remount of the
    filesystem is refused while the store's files are open, and permissions do not bind root or files that
    are already open, so SQLite's own switch on the run's real connection stands in for it."""
    tracker = make(runs_dir, backends=["recording"], use_tensorboard=False)
    tracker.log_metrics({"loss": 0.0}, step=0)
    assert tracker.flush()
    tracker._writer.store._conn.execute("PRAGMA query_only = 1")
    for step in range(1, 11):
        tracker.log_metrics({"loss": float(step)}, step=step)
    assert not tracker.flush()
    assert tracker.health["store_pending"] == 10 and "readonly" in str(tracker.health["store_last_error"])
    tracker._writer.store._conn.execute("PRAGMA query_only = 0")
    tracker.log_metrics({"loss": 11.0}, step=11)
    tracker.close()
    assert tracker.health["store_lost"] == 0 and tracker.health["ok"]
    assert [s for s, _, _ in RunStore(tracker.run_dir).history("loss")] == list(range(12))
    assert recording.made["recording"].steps("loss") == list(range(12))


def test_a_removed_run_directory_is_reported_not_silent(
        runs_dir: Path, recording: type[RecordingBackend], caplog: pytest.LogCaptureFixture) -> None:
    tracker = make(runs_dir, backends=["recording"], use_tensorboard=False)
    for step in range(10):
        tracker.log_metrics({"loss": float(step)}, step=step)
    assert tracker.flush()
    shutil.rmtree(tracker.run_dir)  # SQLite alone would go on writing into the unlinked files
    for step in range(10, 20):
        tracker.log_metrics({"loss": float(step)}, step=step)
    assert not tracker.flush()
    assert tracker.health["store_pending"] == 10 and "removed" in str(tracker.health["store_last_error"])
    tracker.close()
    assert tracker.health["store_lost"] == 10
    assert recording.made["recording"].steps("loss") == list(range(20))
    assert warnings_with(caplog, "could not be written to the local store")
    assert warnings_with(caplog, "store_lost=10")


# ---- counters that surface -----------------------------------------------------------------------------
class FailsScalars(RecordingBackend):
    """Never takes a scalar; takes everything else."""

    name = "fails_scalars"

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        raise ConnectionError("scalars rejected")


class FailsHparams(RecordingBackend):
    name = "fails_hparams"

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        raise ValueError("hparams rejected")


class NeverStarts(RecordingBackend):
    name = "never_starts"

    def start(self) -> None:
        raise ConnectionError("no route to host")


def test_health_counts_exactly_what_each_stage_missed(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for cls in (FailsScalars, FailsHparams, NeverStarts):
        monkeypatch.setitem(REGISTRY, cls.name, f"{__name__}:{cls.__name__}")
    monkeypatch.setattr(_backend_stage, "MAX_RETRY_RECORDS", 4)  # so that the bound on held records is reached too
    tracker = make(runs_dir, backends=["fails_scalars", "fails_hparams", "never_starts"])
    tracker.log_hyperparameters({"lr": 0.1})
    for step in range(7):  # one flush per step: each failing record is tried once per batch, 5 tries at most
        tracker.log_metrics({"loss": float(step)}, step=step)
        assert tracker.flush()
    tracker._put(Histogram("broken", object(), 0, 0.0), 10)  # cannot be converted on the worker
    assert not tracker.flush()
    tracker.close()
    health = tracker.health
    assert health["bad_records"] == 1 and health["worker_errors"] == 0 and not health["ok"]
    # fails_scalars missed exactly the 7 scalar records: 3 given up after 5 tries, 4 still waiting at close;
    # never_starts missed all 8 records (hparams + 7 scalars), held while its start was backing off
    assert health["backend_gave_up"] == {"tensorboard": 0, "fails_scalars": 7, "fails_hparams": 1,
                                         "never_starts": 8}
    assert health["backends_missing_hparams"] == ["fails_hparams", "never_starts"]
    assert health["backend_pending"] == {"tensorboard": 0, "fails_scalars": 0, "fails_hparams": 0,
                                         "never_starts": 0}
    meta = RunStore(tracker.run_dir).meta()
    assert meta["health"] == health and meta["backend_gave_up"] == health["backend_gave_up"]
    (summary,) = warnings_with(caplog, "ended finished with problems")
    assert "bad_records=1" in summary and "backends_missing_hparams" in summary


# ---- backends that raise anything ------------------------------------------------------------------------
class FlushRaises(RecordingBackend):
    name = "flush_raises"

    def flush(self) -> None:
        raise OSError("flush failed")


class CloseRaises(RecordingBackend):
    name = "close_raises"

    def close(self, status: RunStatus = "finished") -> None:
        raise RuntimeError("close failed")


class ExitsOnce(RecordingBackend):
    """Raises SystemExit on its first scalars (a library calling sys.exit), then works."""

    name = "exits_once"

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        if not self.records:
            self.records.append(Text("exited", "", 0, 0.0))
            raise SystemExit(3)
        super().log_scalars(records)


class InterruptedOnClose(RecordingBackend):
    name = "interrupted"

    def close(self, status: RunStatus = "finished") -> None:
        raise KeyboardInterrupt


def test_backends_raising_in_flush_close_or_with_base_exceptions_stop_nothing(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["flush_raises", "close_raises", "exits_once", "interrupted"]
    for cls in (FlushRaises, CloseRaises, ExitsOnce, InterruptedOnClose):
        monkeypatch.setitem(REGISTRY, cls.name, f"{__name__}:{cls.__name__}")
    RecordingBackend.made.clear()
    tracker = make(runs_dir, backends=names)
    for step in range(20):
        tracker.log_metrics({"loss": float(step)}, step=step)
        assert tracker.flush()
    tracker.close()  # does not raise, whatever the backends do
    assert RunStore(tracker.run_dir).meta()["status"] == "finished"
    assert [s for s, _ in scalars("tensorboard", tracker.run_dir)["loss"]] == list(range(20)), \
        "the backends' thread survived SystemExit"
    errors = tracker.health["backend_errors"]
    assert errors["flush_raises"] >= 20 and errors["close_raises"] == 1 and errors["interrupted"] == 1
    assert errors["exits_once"] == 1 and tracker.health["backend_gave_up"]["exits_once"] == 0
    backends = RecordingBackend.made
    assert backends["exits_once"].steps("loss") == list(range(20)), "retried after the SystemExit"
    assert backends["flush_raises"].steps("loss") == list(range(20)), "a failed flush does not duplicate records"


# ---- a backend that stalls delays only itself ---------------------------------------------------------------
class Stalled(RecordingBackend):
    """Blocks in its first write until the test releases it: a tracking server that hangs for its whole
    30 s HTTP timeout."""

    name = "stalled"
    release = threading.Event()

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        if not Stalled.release.wait(timeout=120):  # never hangs the test run for good
            raise TimeoutError("the test never released the stalled backend")
        super().log_scalars(records)


class TensorBoardTelling(TensorBoardBackend):
    """The real TensorBoard backend, which tells the test when its event file holds step 19."""

    name = "tensorboard_telling"
    wrote_last_step = threading.Event()

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        super().log_scalars(records)
        self.last_step = max([r.step for r in records] + [getattr(self, "last_step", -1)])

    def flush(self) -> None:
        super().flush()
        if getattr(self, "last_step", -1) == 19:
            TensorBoardTelling.wrote_last_step.set()


def test_a_stalled_backend_delays_neither_the_store_nor_the_other_backends(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, Stalled.name, f"{__name__}:Stalled")
    monkeypatch.setitem(REGISTRY, TensorBoardTelling.name, f"{__name__}:TensorBoardTelling")
    Stalled.release.clear()
    TensorBoardTelling.wrote_last_step.clear()
    # The stalled backend comes first: with one thread for all backends, TensorBoard would wait behind it.
    tracker = make(runs_dir, use_tensorboard=False, backends=[Stalled.name, TensorBoardTelling.name],
                   flush_interval_s=0.05)
    try:
        for step in range(20):
            tracker.log_metrics({"loss": float(step)}, step=step)
        # A guard against a hang, not a timing: TensorBoard gets step 19 within a few flush intervals.
        assert TensorBoardTelling.wrote_last_step.wait(timeout=60), "TensorBoard waited for the stalled backend"
        assert [s for s, _ in scalars("tensorboard", tracker.run_dir)["loss"]] == list(range(20))
        assert [s for s, _, _ in RunStore(tracker.run_dir).history("loss")] == list(range(20))
        assert RecordingBackend.made[Stalled.name].records == [], "still stalled meanwhile"
    finally:
        Stalled.release.set()
    assert tracker.flush(), "flush() waits for every backend, the stalled one too"
    assert RecordingBackend.made[Stalled.name].steps("loss") == list(range(20))
    tracker.close()
    assert tracker.health["ok"] and RecordingBackend.made[Stalled.name].closed_with == "finished"


# ---- the run's status reaches the backends --------------------------------------------------------------
class LegacyBackend(RecordingBackend):
    """A backend written before `close` took the run's status."""

    name = "legacy"

    def close(self) -> None:  # type: ignore[override]
        self.closed_with = "closed without a status"


def test_every_backend_is_closed_with_the_runs_status(runs_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                     recording: type[RecordingBackend]) -> None:
    monkeypatch.setitem(REGISTRY, "legacy", f"{__name__}:LegacyBackend")
    with pytest.raises(ZeroDivisionError), make(runs_dir, backends=["recording", "legacy"]) as tracker:
        tracker.log_metrics({"loss": float(np.float32(1.0))}, step=0)
        _ = 1 / 0
    by_name = recording.made
    assert by_name["recording"].closed_with == "failed"
    assert by_name["legacy"].closed_with == "closed without a status"
    meta = RunStore(tracker.run_dir).meta()
    assert meta["status"] == "failed" and meta["error"] == "ZeroDivisionError: division by zero"
    assert meta["health"]["backend_errors"] == {"tensorboard": 0, "recording": 0, "legacy": 0}
