"""The TensorBoard backend as a person sees it: runs written by the tracker, asked through a real `tensorboard`.

One logdir holds runs of different kinds (a quick-start-like run, a sweep-like trial that logs its
hyperparameters twice, a failed run with other hyperparameter keys, a run still open); one real server
(started once for the module, on 127.0.0.1) answers every question through the routes its frontend uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
import torch

from _readers import tensorboard_accumulator
from _tensorboard_server import TensorBoardServer
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.backends.tensorboard import TensorBoardBackend
from opusclip_track.records import Histogram, Hyperparameters

ALL_STATUSES = ["STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS", "STATUS_UNKNOWN"]
QUICK_HPARAMS = {"lr": 0.002, "batch_size": 8, "amp": False, "model": {"depth": 4, "kind": "conv"}}


def _tracker(logdir: Path, run_name: str) -> AdvancedExperimentTracker:
    return AdvancedExperimentTracker(TrackingConfig(
        experiment_name="tb", run_name=run_name, log_dir=str(logdir), checkpoint_dir=str(logdir / "ckpt"),
        use_wandb=False, system_monitor_interval_s=0))


def _write_quick(logdir: Path) -> None:
    """Like scripts/quick_start.py: hparams once at the start, then scalars, clips, text, histograms, graph."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with _tracker(logdir, "quick") as tracker:
        tracker.log_hyperparameters(QUICK_HPARAMS)
        tracker.log_model_architecture(model, graph_input=torch.zeros(1, 4))
        for step in range(30):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1), "sys/cpu_percent": 10.0 + step}, step=step)
            if step % 10 == 9:
                tracker.log_metrics({"val/loss": 0.5 / (step + 1), "video/psnr": 12.0 + step,
                                     "video/ssim": 0.01 * step}, step=step)
        tracker.log_video(torch.rand(6, 3, 16, 16), "samples/generated", step=29)
        tracker.log_text("notes/summary", "converged", step=29)
        tracker.log_histogram("weights/fc", torch.randn(500), step=29)


def _write_trial(logdir: Path) -> None:
    """Like a sweep trial: the recipe logs its hparams at the start, the sweep its params + objective at the end."""
    with _tracker(logdir, "trial") as tracker:
        tracker.log_hyperparameters({"lr": 0.01, "batch_size": 4, "model": {"depth": 2, "kind": "conv"}})
        for step in range(5):
            tracker.log_metrics({"train/loss": 2.0 - step * 0.1, "val/loss": 1.5 - step * 0.1}, step=step)
        tracker.log_hyperparameters({"lr": 0.01, "width": 32}, metrics={"objective": 0.25})


def _write_failed(logdir: Path) -> None:
    """Other hyperparameter keys, and a training loop that raised."""
    with pytest.raises(RuntimeError, match="diverged"), _tracker(logdir, "failed") as tracker:
        tracker.log_hyperparameters({"optimizer": "adam", "use_ema": True})
        tracker.log_metrics({"val/loss": 9.0}, step=0)
        raise RuntimeError("diverged")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    logdir = tmp_path_factory.mktemp("tb") / "runs"
    _write_quick(logdir)
    _write_trial(logdir)
    _write_failed(logdir)
    # A run still open (as a killed one is left): its hyperparameters are on disk, it has no end.
    running = _tracker(logdir, "running")
    running.log_hyperparameters({"lr": 0.5})
    running.log_metrics({"train/loss": 3.0}, step=0)
    assert running.flush()
    yield logdir
    running.close()


@pytest.fixture(scope="module")
def server(logdir: Path) -> Iterator[TensorBoardServer]:
    with TensorBoardServer(logdir) as tb:
        tb.wait_for_runs(["quick", "trial", "failed", "running"])
        yield tb


def _session_groups(server: TensorBoardServer, experiment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """POST /session_groups as the HParams dashboard does: every column of the experiment, every status."""
    col_params = [{"hparam": h["name"], "includeInResult": True} for h in experiment["hparamInfos"]]
    col_params += [{"metric": m["name"], "includeInResult": True} for m in experiment["metricInfos"]]
    body = {"experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": col_params,
            "aggregationType": "AGGREGATION_AVG", "startIndex": 0, "sliceSize": 1000}
    groups = server.post("/data/plugin/hparams/session_groups", body)["sessionGroups"]
    return {g["name"]: g for g in groups}


def test_hparams_tab_shows_each_run_once_with_all_its_hyperparameters_and_final_metrics(
        server: TensorBoardServer, logdir: Path) -> None:
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = {h["name"] for h in experiment["hparamInfos"]}
    # the union over every run, and over both calls of the trial
    assert columns == {"lr", "batch_size", "amp", "model/depth", "model/kind", "width", "optimizer", "use_ema"}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"val/loss", "video/psnr", "video/ssim", "train/loss", "objective"} <= metrics

    groups = _session_groups(server, experiment)
    assert sorted(groups) == ["failed", "quick", "running", "trial"]  # each run once, alone in its group
    assert all(len(g["sessions"]) == 1 for g in groups.values())
    assert groups["quick"]["hparams"] == {"lr": 0.002, "batch_size": 8, "amp": False, "model/depth": 4,
                                          "model/kind": "conv"}
    assert groups["trial"]["hparams"] == {"lr": 0.01, "batch_size": 4, "model/depth": 2, "model/kind": "conv",
                                          "width": 32}
    assert groups["failed"]["hparams"] == {"optimizer": "adam", "use_ema": True}
    assert groups["running"]["hparams"] == {"lr": 0.5}  # hyperparameters show before the run ends

    # every metric column holds the run's last logged value, the one in its store
    for run, group in groups.items():
        shown = {m["name"]["tag"]: m["value"] for m in group["sessions"][0]["metricValues"]}
        with RunStore(logdir / run) as store:
            expected = {key: store.last(key)[1] for key in store.keys()}
        assert shown.keys() == expected.keys(), run
        for key, value in expected.items():
            assert math.isclose(shown[key], value, rel_tol=1e-6), (run, key)
    assert {"objective", "val/loss"} <= {m["name"]["tag"] for m in groups["trial"]["metricValues"]}

    statuses = {run: g["sessions"][0].get("status") for run, g in groups.items()}
    assert statuses["quick"] == statuses["trial"] == "STATUS_SUCCESS"
    assert statuses["failed"] == "STATUS_FAILURE"
    assert statuses["running"] in (None, "STATUS_UNKNOWN", "STATUS_RUNNING")  # no end yet


def test_every_tab_shows_what_the_tracker_wrote(server: TensorBoardServer) -> None:
    listing = server.get("/data/plugins_listing")
    for plugin in ("timeseries", "scalars", "images", "text", "histograms", "distributions", "hparams", "graphs"):
        assert listing[plugin]["enabled"], plugin
    quick = {"run": "quick"}
    assert {"train/loss", "val/loss", "video/psnr", "video/ssim", "sys/cpu_percent"} <= set(
        server.get("/data/plugin/scalars/tags")["quick"])
    points = server.get("/data/plugin/scalars/scalars?" + urlencode({**quick, "tag": "val/loss"}))
    assert [(step, round(value, 6)) for _, step, value in points] == [(9, 0.05), (19, 0.025), (29, 0.016667)]

    assert "samples/generated" in server.get("/data/plugin/images/tags")["quick"]
    (image,) = server.get("/data/plugin/images/images?" + urlencode({**quick, "tag": "samples/generated"}))
    assert image["step"] == 29
    assert server.raw("/data/plugin/images/individualImage?" + image["query"]).startswith(b"GIF89a")

    assert {"config", "notes/summary"} <= set(server.get("/data/plugin/text/tags")["quick"])
    (text,) = server.get("/data/plugin/text/text?" + urlencode({**quick, "tag": "notes/summary"}))
    assert text["step"] == 29 and "converged" in text["text"]

    assert "weights/fc" in server.get("/data/plugin/histograms/tags")["quick"]
    route = "/data/plugin/histograms/histograms?" + urlencode({**quick, "tag": "weights/fc"})
    ((_, step, buckets),) = server.get(route)
    assert step == 29 and sum(count for _, _, count in buckets) == 500

    assert server.get("/data/plugin/graphs/info")["quick"]["run_graph"]
    assert b'op: "aten::linear"' in server.raw("/data/plugin/graphs/graph?" + urlencode(quick))

    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    assert experiment["hparamInfos"] and experiment["metricInfos"]


# ---- the backend alone --------------------------------------------------------------------------------
def _backend(run_dir: Path) -> TensorBoardBackend:
    config = TrackingConfig(experiment_name="tb", run_name="b", log_dir=str(run_dir.parent), use_wandb=False)
    backend = TensorBoardBackend(config, run_dir, {"experiment_name": "tb"})
    backend.start()
    return backend


def test_an_all_nan_histogram_is_written_empty_not_invented(runs_dir: Path) -> None:
    backend = _backend(runs_dir / "b")
    # what the worker hands over for values none of which is finite (see records.Histogram)
    empty = Histogram("grad/w", None, 3, time.time(), edges=np.zeros(0), counts=np.zeros(0),
                      stats={"min": math.nan, "max": math.nan, "num": 0.0, "sum": 0.0, "sum_squares": 0.0,
                             "nonfinite": 12.0})
    assert backend.write([empty]) == []
    backend.close()
    (event,) = tensorboard_accumulator(runs_dir / "b").Histograms("grad/w")
    assert event.step == 3 and event.histogram_value.num == 0
    assert list(event.histogram_value.bucket) == [] and list(event.histogram_value.bucket_limit) == []


def test_close_status_and_resume_keep_the_session(runs_dir: Path) -> None:
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    def session(tag: str) -> Any:
        content = tensorboard_accumulator(runs_dir / "b").PluginTagToContent("hparams")[tag]
        return plugin_data_pb2.HParamsPluginData.FromString(content)

    backend = _backend(runs_dir / "b")
    backend.write([Hyperparameters({"lr": 0.1}, {}, time.time())])
    backend.close("failed")
    assert session("_hparams_/session_end_info").session_end_info.status == api_pb2.STATUS_FAILURE
    # a resumed process adds a hyperparameter: the session holds both, and its new end
    backend = _backend(runs_dir / "b")
    backend.write([Hyperparameters({"epochs": 3}, {}, time.time())])
    backend.close()
    hparams = session("_hparams_/session_start_info").session_start_info.hparams
    assert {k: v.number_value for k, v in hparams.items()} == {"lr": 0.1, "epochs": 3}
    assert session("_hparams_/session_end_info").session_end_info.status == api_pb2.STATUS_SUCCESS
