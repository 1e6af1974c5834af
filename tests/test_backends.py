"""One contract for every backend of the registry, each read back by its own real reader (`_readers.read_back`):
TensorBoard's `EventAccumulator`, the W&B offline run's `.wandb` file, MLflow's `MlflowClient` on its local store.

The shape of Lightning's `ALL_LOGGER_CLASSES` suite, without its mocks: one run per backend writes every kind of
record through the tracker, one more ends failed and a third logs scalars only; each test then checks one kind on
every backend. A hook a
backend does not implement (its `Backend` default is a no-op) must show nothing, so the suite also says what each
backend leaves out. A backend added to `REGISTRY` runs this whole suite; it only needs a reader in `_readers.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from _env import isolate
from _readers import Readback, read_back
from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.backends import REGISTRY, Backend, get_backend_class
from opusclip_track.records import Alert, Hyperparameters, Rewind, RunStatus, Scalars, Text

HYPERPARAMETERS = {"lr": 0.001, "batch_size": 8, "model": {"depth": 4, "kind": "unet"}}
LOSS = [(step, 1.0 / (step + 1)) for step in range(0, 30, 3)]
CLIP_FRAMES, IMAGE_SIZE = 6, (16, 24)
ALERT = ("low_disk", "92% of /data used", "warn", 5)  # title, text, level, step


@dataclass
class Runs:
    backend: str
    finished: Readback
    failed: Readback
    plain: Readback  # scalars only: no hyperparameters, no text
    artifact_file: str


def _config(backend: str, root: Path, run_name: str) -> TrackingConfig:
    return TrackingConfig(experiment_name="contract", project_name="opusclip-contract", run_name=run_name,
                          log_dir=str(root / "runs"), checkpoint_dir=str(root / "ckpt"), use_tensorboard=False,
                          use_wandb=False, backends=[backend], wandb_mode="offline", system_monitor_interval_s=0,
                          # one MLflow store for both runs (creating one costs seconds); unused by the others
                          mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def _write_finished(config: TrackingConfig, artifact: Path) -> None:
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_hyperparameters(HYPERPARAMETERS)
        for step, loss in LOSS:
            tracker.log_metrics({"train/loss": loss}, step=step)
        tracker.log_text("notes", "**bold** <prompt> & more", step=1)
        tracker.log_histogram("weights", np.linspace(-1.0, 1.0, 500), step=2, bins=10)
        tracker.log_video(torch.rand(CLIP_FRAMES, 3, 16, 24), "clip", step=3, fps=4)
        tracker.log_image(torch.rand(3, *IMAGE_SIZE), "frame", step=3)
        tracker.log_table("results", ["model", "psnr"], [["unet", 14.5], ["dit", 15.25]], step=4)
        tracker.log_artifact(artifact, "weights", aliases=["best"], metadata={"step": 27})
        title, text, level, step = ALERT
        tracker.alert(title, text, level=level, step=step)  # type: ignore[arg-type]


def _write_failed(config: TrackingConfig) -> None:
    with pytest.raises(RuntimeError, match="diverged"), AdvancedExperimentTracker(config) as tracker:
        tracker.log_hyperparameters({"lr": 0.5})  # TensorBoard shows a run's end with its hyperparameters
        tracker.log_metrics({"train/loss": 9.5}, step=0)
        raise RuntimeError("loss diverged")


def _write_plain(config: TrackingConfig) -> None:
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_metrics({"train/loss": 0.5}, step=0)


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    backend: str = request.param
    root = tmp_path_factory.mktemp(backend)
    with pytest.MonkeyPatch.context() as env:  # as conftest's per-test isolation, for the whole module
        isolate(env, root)
        artifact = root / "unet-best.safetensors"
        artifact.write_bytes(b"\x01" * 256)
        finished, failed, plain = (_config(backend, root, name) for name in ("finished", "failed", "plain"))
        _write_finished(finished, artifact)
        _write_failed(failed)
        _write_plain(plain)
        yield Runs(backend, read_back(backend, finished), read_back(backend, failed), read_back(backend, plain),
                   artifact.name)


def implements(backend: str, hook: str) -> bool:
    """Whether the backend overrides a `Backend` hook (the base class's are no-ops)."""
    return getattr(get_backend_class(backend), hook) is not getattr(Backend, hook)


def _shown(value: Any) -> Any:
    """A hyperparameter as every backend can show it: numbers as floats (MLflow keeps text, TensorBoard floats)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


# ---- the contract ---------------------------------------------------------------------------------------------
def test_scalars_at_their_steps(runs: Runs) -> None:
    shown = runs.finished.scalars["train/loss"]
    assert [step for step, _ in shown] == [step for step, _ in LOSS]
    np.testing.assert_allclose([v for _, v in shown], [v for _, v in LOSS], rtol=1e-6)
    assert runs.failed.scalars["train/loss"] == [(0, 9.5)], "what a failed run logged is shown"


def test_text(runs: Runs) -> None:
    expected = {"notes": [(1, "**bold** <prompt> & more")]} if implements(runs.backend, "log_text") else {}
    assert {name: v for name, v in runs.finished.texts.items() if name == "notes"} == expected


def test_histogram(runs: Runs) -> None:
    expected = {"weights": [(2, 500)]} if implements(runs.backend, "log_histogram") else {}
    assert runs.finished.histograms == expected


def test_clip(runs: Runs) -> None:
    assert runs.finished.clips == {"clip": [(3, CLIP_FRAMES)]}


def test_image(runs: Runs) -> None:
    assert runs.finished.images == {"frame": [(3, IMAGE_SIZE)]}


def test_table(runs: Runs) -> None:
    assert runs.finished.tables.get("results") == [(4, ["model", "psnr"])]


def test_hyperparameters(runs: Runs) -> None:
    shown = {key: _shown(value) for key, value in runs.finished.hyperparameters.items()}
    expected = {"lr": 0.001, "batch_size": 8.0, "model/depth": 4.0, "model/kind": "unet"}
    assert {key: shown.get(key) for key in expected} == expected


def test_a_run_without_hyperparameters_shows_none(runs: Runs) -> None:
    assert runs.plain.scalars == {"train/loss": [(0, 0.5)]}
    # (W&B's config and MLflow's params also hold the run's configuration: none of those names is in it)
    assert not {"lr", "batch_size", "model/depth", "model/kind"} & set(runs.plain.hyperparameters)
    assert runs.plain.alerts == {}


def test_alert(runs: Runs) -> None:
    """Every backend shows alerts through `log_alert`; its default shows them as text (`Alert.as_text`)."""
    title, text, level, step = ALERT
    shown = implements(runs.backend, "log_alert") or implements(runs.backend, "log_text")
    assert runs.finished.alerts == ({title: [(step, level, text)]} if shown else {})
    assert not any(name.startswith("alerts/") for name in runs.finished.texts), "an alert is not a text entry"


def test_artifact(runs: Runs) -> None:
    expected = {"weights": [runs.artifact_file]} if implements(runs.backend, "log_artifact") else {}
    assert runs.finished.artifacts == expected


def test_status_finished_and_failed(runs: Runs) -> None:
    assert (runs.finished.status, runs.failed.status) == ("finished", "failed")


# ---- the alert hook ------------------------------------------------------------------------------------------------
class ShowsText(Backend):
    """A backend with a text hook and no alert hook of its own."""

    name = "shows_text"
    received: ClassVar[list[tuple[str, object]]] = []  # (hook, record)

    def start(self) -> None:
        pass

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        pass

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        pass

    def log_text(self, record: Text) -> None:
        self.received.append(("log_text", record))

    def close(self, status: RunStatus = "finished") -> None:
        pass


class ShowsAlerts(ShowsText):
    """A backend with an alert hook: alerts reach it there, never through `log_text`."""

    name = "shows_alerts"

    def log_alert(self, record: Alert) -> None:
        self.received.append(("log_alert", record))


@pytest.mark.parametrize("backend", [ShowsText, ShowsAlerts])
def test_alerts_reach_log_alert_whose_default_shows_them_as_text(backend: type[ShowsText], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, backend.name, f"{__name__}:{backend.__name__}")
    backend.received.clear()
    title, text, level, step = ALERT
    config = TrackingConfig(experiment_name="contract", log_dir=str(tmp_path), use_tensorboard=False,
                            use_wandb=False, backends=[backend.name], system_monitor_interval_s=0)
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_text("notes", "plain text", step=1)
        tracker.alert(title, text, level=level, step=step)  # type: ignore[arg-type]
    (text_hook, notes), (alert_hook, alert) = backend.received
    assert text_hook == "log_text" and isinstance(notes, Text) and (notes.name, notes.text) == ("notes", "plain text")
    if backend is ShowsAlerts:
        assert alert_hook == "log_alert" and isinstance(alert, Alert)
        assert (alert.title, alert.text, alert.level, alert.step) == ALERT
    else:
        assert alert_hook == "log_text" and type(alert) is Text
        assert (alert.name, alert.text, alert.step) == (f"alerts/{title}", f"WARN at step {step}: {text}", step)


class KeepsOrder(ShowsText):
    """Keeps the order of its scalar and rewind hooks."""

    name = "keeps_order"

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        self.received.append(("log_scalars", [r.step for r in records]))

    def rewind(self, step: int) -> None:
        self.received.append(("rewind", step))


def test_a_rewind_in_a_batch_comes_between_what_was_logged_before_and_after_it(tmp_path: Path) -> None:
    """Scalars go to a backend as one group, but never across a rewind: TensorBoard would hide what came after it."""
    KeepsOrder.received.clear()
    backend = KeepsOrder(TrackingConfig(experiment_name="contract"), tmp_path, {})
    batch = [Scalars(5, 1.0, {"a": 1.0}), Scalars(6, 1.0, {"a": 1.0}), Rewind(4), Scalars(4, 2.0, {"a": 2.0}),
             Text("notes", "after", 4, 2.0), Rewind(5), Scalars(5, 3.0, {"a": 3.0})]
    assert backend.write(batch) == []
    assert [hook for hook, _ in KeepsOrder.received] == ["log_scalars", "rewind", "log_scalars", "log_text", "rewind",
                                                         "log_scalars"]
    assert [args for hook, args in KeepsOrder.received if hook != "log_text"] == [[5, 6], 4, [4], 5, [5]]
