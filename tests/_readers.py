"""Read a run back from each backend into one common shape, for the tests that cover every backend."""

from __future__ import annotations

import html
import io
import json
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from _wandb_reader import read_wandb_run
from opusclip_track import TrackingConfig


def tensorboard_accumulator(run_dir: str | Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0,
                                                       "tensors": 0})
    acc.Reload()
    return acc


def tensorboard_app_steps(run_dir: str | Path) -> dict[str, list[int]]:
    """Every tag's steps as the TensorBoard app loads them: its data provider's `plugin_event_accumulator`, which
    holds every summary (scalars, text, images, histograms) as a tensor and takes a run's first `SessionLog.START`
    for the session's start (the `EventAccumulator` above drops at every START, but only scalars, histograms and
    images, not text)."""
    from tensorboard.backend.event_processing import plugin_event_accumulator

    acc = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def tensorboard_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    acc = tensorboard_accumulator(run_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Each key's `(true step, value)` pairs: the step is the row's `STEP_KEY` (W&B's `_step` only counts rows)."""
    from opusclip_track.backends.wandb import STEP_KEY

    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in read_wandb_run(run_dir)["history"]:
        for key, value in row.items():
            if not key.startswith("_") and key != STEP_KEY and isinstance(value, (int, float)):
                out[key].append((int(row[STEP_KEY]), float(value)))
    return dict(out)


def scalars(backend: str, run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """`{key: [(step, value), ...]}` as the named backend stored it."""
    readers: dict[str, Any] = {"tensorboard": tensorboard_scalars, "wandb": wandb_scalars}
    return readers[backend](run_dir)


# ---- one common shape for the contract suite (tests/test_backends.py) ------------------------------------------
@dataclass
class Readback:
    """What a backend shows of one run, read by the backend's own reader, in one shape for every backend.

    Names are the record names as logged (the suite uses plain ones, which every backend keeps as they are).
    """

    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # key -> (step, value)
    texts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # name -> (step, text)
    histograms: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # name -> (step, values binned)
    clips: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # name -> (step, frames)
    images: dict[str, list[tuple[int, tuple[int, int]]]] = field(default_factory=dict)  # name -> (step, (h, w))
    tables: dict[str, list[tuple[int, list[str]]]] = field(default_factory=dict)  # name -> (step, columns)
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # "model/depth" -> value as shown
    artifacts: dict[str, list[str]] = field(default_factory=dict)  # artifact name -> its file names
    alerts: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)  # title -> (step, level, text)
    status: str | None = None  # "finished" or "failed" as the backend shows the run's end


def read_back(backend: str, config: TrackingConfig) -> Readback:
    """The run of `config` as `backend` shows it, read by that backend's own reader."""
    readers = {"tensorboard": _tensorboard_readback, "wandb": _wandb_readback, "mlflow": _mlflow_readback}
    if backend not in readers:
        raise KeyError(f"no reader for backend {backend!r}: every backend of the registry needs one here")
    return readers[backend](config)


def _step_of(file_name: str) -> int:
    """The step in a media or text file name written by the tracker (`clip_step00000003.mp4`)."""
    found = re.search(r"_step(\d{8})", file_name)
    assert found, file_name
    return int(found.group(1))


def _markdown_columns(text: str) -> list[str] | None:
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].startswith("| ") or not lines[1].startswith("|---"):
        return None
    return [cell.strip() for cell in lines[0].strip("|").split(" | ")]


def _gif_frames(data: bytes) -> int:
    return int(Image.open(io.BytesIO(data)).n_frames)


def _mp4_frames(path: Path) -> int:
    from opusclip_track.media import read_video

    return int(read_video(path)[0].shape[0])


def _plugin_content(acc: EventAccumulator, plugin: str) -> dict[str, bytes]:
    """Tag -> plugin data of one TensorBoard plugin; empty for a plugin the run never wrote (the accumulator's own
    `PluginTagToContent` raises KeyError then)."""
    try:
        return dict(acc.PluginTagToContent(plugin))
    except KeyError:
        return {}


_TENSORBOARD_ALERT = re.compile(r"\*\*(INFO|WARN|ERROR)\*\* at step (\d+): (.*)", re.S)


def _tensorboard_readback(config: TrackingConfig) -> Readback:
    from tensorboard.plugins.hparams import api_pb2, metadata

    acc = tensorboard_accumulator(config.run_dir)
    out = Readback(scalars=tensorboard_scalars(config.run_dir))
    for tag in _plugin_content(acc, "text"):
        for event in acc.Tensors(tag):
            text = event.tensor_proto.string_val[0].decode()
            columns = _markdown_columns(text)
            alert = _TENSORBOARD_ALERT.fullmatch(text) if tag.startswith("alerts/") else None
            if alert is not None:
                assert int(alert.group(2)) == event.step, text
                out.alerts.setdefault(tag.removeprefix("alerts/"), []).append(
                    (event.step, alert.group(1).lower(), alert.group(3)))
            elif columns is None:
                out.texts.setdefault(tag, []).append((event.step, text))
            else:
                out.tables.setdefault(tag, []).append((event.step, columns))
    for tag in acc.Tags()["histograms"]:
        out.histograms[tag] = [(e.step, int(e.histogram_value.num)) for e in acc.Histograms(tag)]
    for tag in acc.Tags()["images"]:
        for event in acc.Images(tag):
            data = event.encoded_image_string
            if data.startswith(b"GIF"):
                out.clips.setdefault(tag, []).append((event.step, _gif_frames(data)))
            else:
                out.images.setdefault(tag, []).append((event.step, (event.height, event.width)))
    contents = _plugin_content(acc, metadata.PLUGIN_NAME)
    if metadata.SESSION_START_INFO_TAG in contents:
        start = metadata.parse_session_start_info_plugin_data(contents[metadata.SESSION_START_INFO_TAG])
        out.hyperparameters = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    if metadata.SESSION_END_INFO_TAG in contents:
        end = metadata.parse_session_end_info_plugin_data(contents[metadata.SESSION_END_INFO_TAG])
        out.status = {api_pb2.STATUS_SUCCESS: "finished", api_pb2.STATUS_FAILURE: "failed"}.get(end.status)
    return out


def _wandb_readback(config: TrackingConfig) -> Readback:
    from opusclip_track.backends.base import flatten
    from opusclip_track.backends.wandb import STEP_KEY

    run = read_wandb_run(config.run_dir)
    files = {str(p).split("/files/", 1)[1]: p for p in run["files"]}
    out = Readback(scalars=wandb_scalars(config.run_dir))
    alert_steps: dict[str, list[int]] = {}  # title -> steps of its HTML rows (W&B's alert record has no step)
    for row in run["history"]:
        step = int(row[STEP_KEY])
        for key, value in row.items():
            kind = value.get("_type") if isinstance(value, dict) else None
            if kind == "html-file" and key.startswith("alerts/"):
                alert_steps.setdefault(key.removeprefix("alerts/"), []).append(step)
            elif kind == "html-file":
                shown = re.search(r"<pre>(.*)</pre>", files[value["path"]].read_text(), re.S)
                assert shown, value
                out.texts.setdefault(key, []).append((step, html.unescape(shown.group(1))))
            elif kind == "histogram":
                out.histograms.setdefault(key, []).append((step, int(sum(value["values"]))))
            elif kind == "video-file":
                out.clips.setdefault(key, []).append((step, _mp4_frames(files[value["path"]])))
            elif kind == "image-file":
                out.images.setdefault(key, []).append((step, (value["height"], value["width"])))
            elif kind == "table-file":
                columns = json.loads(files[value["path"]].read_text())["columns"]
                out.tables.setdefault(key, []).append((step, columns))
    out.hyperparameters = {k: v for k, v in flatten({k: v for k, v in run["config"].items() if k != "_wandb"}).items()}
    out.artifacts = {a.name: [c.path for c in a.manifest.contents] for a in run["artifacts"] if a.type != "run_table"}
    for alert in run["alerts"]:
        steps = alert_steps.get(alert.title) or [-1]
        out.alerts.setdefault(alert.title, []).append((steps.pop(0), alert.level.lower(), alert.text))
    out.status = "finished" if run["exit"].exit_code == 0 else "failed"
    return out


def _mlflow_readback(config: TrackingConfig) -> Readback:
    from mlflow import MlflowClient

    from opusclip_track.backends.mlflow import RUN_NAME_TAG, resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(config.mlflow_tracking_uri, config.run_dir))
    experiment = client.get_experiment_by_name(config.project_name)
    assert experiment is not None, f"no MLflow experiment {config.project_name!r}"
    (run,) = client.search_runs([experiment.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{config.run_name}'")
    run_id = run.info.run_id
    out = Readback(status={"FINISHED": "finished", "FAILED": "failed"}.get(run.info.status))
    for key in run.data.metrics:
        out.scalars[key] = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    out.hyperparameters = dict(run.data.params)
    with tempfile.TemporaryDirectory() as tmp:
        for folder in (f.path for f in client.list_artifacts(run_id) if f.is_dir):
            for info in client.list_artifacts(run_id, folder):
                path = Path(client.download_artifacts(run_id, info.path, tmp))
                name = path.name.rsplit("_step", 1)[0]
                if folder == "text":
                    out.texts.setdefault(name, []).append((_step_of(path.name), path.read_text()))
                elif folder == "alerts":  # the level is in the tag of the title's latest alert
                    latest = run.data.tags.get(f"opusclip.alert.{name}", "")
                    level = latest.split(" ", 1)[0].lower() if f" at step {_step_of(path.name)} (" in latest else "?"
                    out.alerts.setdefault(name, []).append((_step_of(path.name), level, path.read_text()))
                elif folder == "clips":
                    out.clips.setdefault(name, []).append((_step_of(path.name), _mp4_frames(path)))
                elif folder in ("images", "figures"):
                    width, height = Image.open(path).size
                    out.images.setdefault(name, []).append((_step_of(path.name), (height, width)))
                elif folder == "tables":
                    columns = json.loads(path.read_text())["columns"]
                    out.tables.setdefault(name, []).append((_step_of(path.name), columns))
                elif path.suffix == ".json":  # an artifact's metadata, beside its file
                    info_json = json.loads(path.read_text())
                    out.artifacts.setdefault(info_json["name"], []).append(path.name.removesuffix(".json"))
    return out
