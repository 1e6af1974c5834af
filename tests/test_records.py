"""Records back from a real run store: `from_store_event` rebuilds what the backends received during the run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.backends import REGISTRY, Backend
from opusclip_track.records import (
    Artifact,
    ConfigUpdate,
    Graph,
    Histogram,
    Hyperparameters,
    Media,
    Record,
    RunStatus,
    Scalars,
    Text,
    from_store_event,
)


class KeepsEverything(Backend):
    """Keeps every record the worker hands it, as the real backends receive them."""

    name = "keeps_everything"
    received: ClassVar[list[Record]] = []

    def start(self) -> None:
        pass

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        pass

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        self.received.append(record)

    def log_text(self, record: Text) -> None:
        self.received.append(record)

    def log_histogram(self, record: Histogram) -> None:
        self.received.append(record)

    def log_media(self, record: Media) -> None:
        self.received.append(record)

    def log_graph(self, record: Graph) -> None:
        self.received.append(record)

    def log_artifact(self, record: Artifact) -> None:
        self.received.append(record)

    def update_config(self, values: dict[str, Any]) -> None:
        self.received.append(ConfigUpdate(values))

    def close(self, status: RunStatus = "finished") -> None:
        pass


def _same(live: Record, rebuilt: Record) -> None:
    """Field by field (arrays by value); what the worker frees or keeps in memory only is named apart."""
    assert type(live) is type(rebuilt)
    for name in live.__slots__:  # type: ignore[union-attr]
        a, b = getattr(live, name), getattr(rebuilt, name)
        if name == "wall_time" and isinstance(live, ConfigUpdate):
            continue  # the recording backend above sees only the values
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=name)
        elif name == "encoded" and isinstance(live, Media) and live.kind == "video":
            assert b == {}, "a clip's GIF is not rebuilt from the store"
        elif name == "stats":
            assert a.keys() == b.keys() and all(math.isclose(a[k], b[k]) or (math.isnan(a[k]) and math.isnan(b[k]))
                                                for k in a), name
        else:
            assert a == b, f"{type(live).__name__}.{name}: {a!r} != {b!r}"


def test_every_record_kind_comes_back_from_the_store_as_the_backends_received_it(
        runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, KeepsEverything.name, f"{__name__}:KeepsEverything")
    KeepsEverything.received.clear()
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00" * 64)
    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [1, 0])
    config = TrackingConfig(experiment_name="records", log_dir=str(runs_dir), use_wandb=False,
                            use_tensorboard=False, backends=[KeepsEverything.name], system_monitor_interval_s=0)
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_hyperparameters({"lr": 3e-4, "model": {"depth": 4}}, metrics={"hp/psnr": 31.5})
        tracker.log_text("notes", "**bold**", step=1)
        tracker.log_histogram("weights", torch.randn(1000), step=2, bins=16)
        tracker.log_histogram("all_nan", np.full(4, np.nan), step=2)
        tracker.log_video(torch.rand(5, 3, 16, 24), "samples/clip", step=3, fps=4, caption="first")
        tracker.log_image(torch.rand(3, 8, 12), "samples/frame", step=3, caption="a frame")
        tracker.log_figure(figure, "plots/curve", step=4)
        tracker.log_table("results", ["model", "psnr", "ok"], [["conv", 14.5, True], ["vit", 15.25, None]], step=5)
        tracker.update_config({"protocol": {"frames": 16, "value_range": [0, 1]}})
        tracker.log_model_architecture(torch.nn.Linear(2, 2), graph_input=torch.zeros(1, 2))
        tracker.log_artifact(weights, "model-records", aliases=["best"], metadata={"step": 5, "token": "s3cret"})
    events = RunStore(tracker.run_dir).events()
    rebuilt = [from_store_event(event) for event in events]
    assert [type(r).__name__ for r in rebuilt if r is not None] == [type(r).__name__ for r in KeepsEverything.received
                                                                     if not isinstance(r, Graph)]
    assert [e["kind"] for e, r in zip(events, rebuilt, strict=True) if r is None] == ["graph"], \
        "only the graph cannot be replayed (its GraphDef is not stored)"
    for live, again in zip([r for r in KeepsEverything.received if not isinstance(r, Graph)],
                           [r for r in rebuilt if r is not None], strict=True):
        _same(live, again)
    artifact = next(r for r in rebuilt if isinstance(r, Artifact))
    assert artifact.path == weights and artifact.metadata == {"step": 5, "token": "***REDACTED***"}
    image = next(r for r in rebuilt if isinstance(r, Media) and r.kind == "image")
    assert image.encoded["png"].startswith(b"\x89PNG") and image.payload is None


def test_a_media_file_that_is_gone_is_named_in_the_rebuilt_record(runs_dir: Path) -> None:
    config = TrackingConfig(experiment_name="records", log_dir=str(runs_dir), use_wandb=False,
                            system_monitor_interval_s=0)
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_image(torch.rand(3, 8, 8), "frame", step=0)
    (event,) = RunStore(tracker.run_dir).events("image")
    Path(event["path"]).unlink()
    record = from_store_event(event)
    assert isinstance(record, Media) and record.encoded == {}
    assert record.error is not None and "not readable" in record.error and "FileNotFoundError" in record.error


def test_unknown_kinds_are_not_replayed() -> None:
    event = {"kind": "from_a_later_version", "name": "x", "step": 0, "wall_time": 0.0, "data": {}, "path": None}
    assert from_store_event(event) is None
