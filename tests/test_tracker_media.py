"""Clips, images, figures and tables through the tracker into TensorBoard, W&B (offline) and runs/<run>/media."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _readers import tensorboard_accumulator
from _wandb_reader import read_wandb_run
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.backends.wandb import STEP_KEY
from opusclip_track.media import read_video


def moving_pattern(t: int = 12, h: int = 64, w: int = 80, c: int = 3) -> torch.Tensor:
    """A smooth gradient with a bright square moving right: (T, C, H, W) float in [0, 1]."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = []
    for i in range(t):
        frame = torch.stack([xs, ys, 0.5 * (xs + ys)])[:c].clone()
        x0 = 4 + 4 * i
        frame[:, 20:36, x0:x0 + 16] = 0.9
        frames.append(frame)
    return torch.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def gif_frames(data: bytes) -> list[np.ndarray]:
    image = Image.open(io.BytesIO(data))
    frames = []
    for i in range(image.n_frames):
        image.seek(i)
        frames.append(np.asarray(image.convert("RGB")))
    return frames


def test_a_clip_plays_in_tensorboard_and_is_kept_as_mp4_and_in_wandb(runs_dir: Path) -> None:
    clip = moving_pattern()
    expected = (clip.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), wandb_mode="offline")
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_video(clip, "samples/generated", step=7, fps=8, caption="epoch 1")
    # TensorBoard: an animated GIF image summary with T frames close to the input
    (event,) = tensorboard_accumulator(tracker.run_dir).Images("samples/generated")
    assert event.step == 7 and (event.width, event.height) == (80, 64)
    frames = gif_frames(event.encoded_image_string)
    assert len(frames) == 12 and frames[0].shape == (64, 80, 3)
    assert min(psnr(f, e) for f, e in zip(frames, expected, strict=True)) > 25  # 256-colour palette
    # the MP4 kept under media/ decodes to T frames above 35 dB
    (entry,) = RunStore(tracker.run_dir).events("video")
    mp4 = Path(entry["path"])
    assert mp4.parent == tracker.run_dir / "media" and mp4.suffix == ".mp4"
    decoded, fps = read_video(mp4)
    assert decoded.shape == (12, 3, 64, 80) and fps == pytest.approx(8)
    got = decoded.permute(0, 2, 3, 1).numpy()
    assert min(psnr(g, e) for g, e in zip(got, expected, strict=True)) > 35
    # W&B: the video file is in the offline run and a history row references it
    run = read_wandb_run(tracker.run_dir)
    (row,) = [r for r in run["history"] if "samples/generated" in r]
    assert row[STEP_KEY] == 7 and row["samples/generated"]["_type"] == "video-file"
    assert any(p.suffix == ".mp4" for p in run["files"])
    assert "moviepy" not in sys.modules


def test_batches_with_reference_odd_sizes_gray_and_minus_one_to_one(runs_dir: Path) -> None:
    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), use_wandb=False)
    batch = moving_pattern(t=6, h=33, w=47).unsqueeze(0).repeat(2, 1, 1, 1, 1)  # (2, 6, 3, 33, 47)
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_video(batch * 2 - 1, "grid", step=1, reference=batch * 2 - 1, value_range=(-1.0, 1.0))
        tracker.log_video(moving_pattern(t=5, c=1), "gray", step=1)
        tracker.log_video((moving_pattern(t=4) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), "hwc",
                          step=1, layout="THWC")
    acc = tensorboard_accumulator(tracker.run_dir)
    grid = acc.Images("grid")[0]
    assert (grid.height, grid.width) == (2 * 33 + 2, 2 * 47 + 2)  # 2 rows (generated, reference), 2 px padding
    assert len(gif_frames(grid.encoded_image_string)) == 6
    gray = gif_frames(acc.Images("gray")[0].encoded_image_string)[0]
    assert np.abs(gray[..., 0].astype(int) - gray[..., 2].astype(int)).max() <= 2
    videos = {e["name"]: e for e in RunStore(tracker.run_dir).events("video")}
    decoded, _ = read_video(videos["grid"]["path"])
    assert decoded.shape[0] == 6 and decoded.shape[2] >= 68 and decoded.shape[3] >= 96  # padded to even
    assert read_video(videos["hwc"]["path"])[0].shape == (4, 3, 64, 80)


def test_images_figures_and_tables(runs_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), wandb_mode="offline")
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    ax.plot([0, 1, 2], [3, 1, 2])
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_image(torch.rand(3, 20, 30), "frame", step=2)
        tracker.log_images(torch.rand(5, 3, 16, 16), "frames", step=2, nrow=3)
        tracker.log_figure(fig, "curve", step=2)
        tracker.log_table("per_video", ["clip", "psnr"], [["a.mp4", 31.5], ["b.mp4", 28.25]], step=2)
    acc = tensorboard_accumulator(tracker.run_dir)
    assert (acc.Images("frame")[0].width, acc.Images("frame")[0].height) == (30, 20)
    grid = Image.open(io.BytesIO(acc.Images("frames")[0].encoded_image_string))
    assert grid.size == (3 * 16 + 2 * 2, 2 * 16 + 2)
    assert (acc.Images("curve")[0].width, acc.Images("curve")[0].height) == (150, 100)
    table = acc.Tensors("per_video")[0].tensor_proto.string_val[0].decode()
    assert "| a.mp4 | 31.5 |" in table
    run = read_wandb_run(tracker.run_dir)
    logged = {k: v for r in run["history"] for k, v in r.items()}
    assert logged["per_video"]["_type"] == "table-file" and logged["frame"]["_type"] == "image-file"
    kinds = sorted(e["kind"] for e in RunStore(tracker.run_dir).events())
    assert kinds == ["figure", "image", "image", "table"]
    assert not plt.fignum_exists(fig.number), "the figure is closed once rendered"


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda t: t.log_video(torch.rand(3, 64, 64), "v"), ValueError, ["video", "(3, 64, 64)"]),
    (lambda t: t.log_video(torch.rand(4, 2, 8, 8), "v"), ValueError, ["video", "C"]),
    (lambda t: t.log_video(torch.ones(4, 3, 8, 8, dtype=torch.int32), "v"), TypeError, ["video", "int32"]),
    (lambda t: t.log_video(torch.rand(4, 3, 8, 8), "v", fps=0), ValueError, ["fps"]),
    (lambda t: t.log_video(torch.rand(4, 3, 8, 8), "v", reference=torch.rand(5, 3, 8, 8)), ValueError,
     ["reference", "(5, 3, 8, 8)"]),
    (lambda t: t.log_video([[1]], "v"), TypeError, ["video", "list"]),
    (lambda t: t.log_image(torch.rand(2, 4, 8, 8), "i"), ValueError, ["image"]),
    (lambda t: t.log_figure("not a figure", "f"), TypeError, ["figure", "str"]),
    (lambda t: t.log_table("t", ["a", "b"], [[1]]), ValueError, ["rows[0]", "2 values", "1"]),
])
def test_bad_media_raise_at_the_call(runs_dir: Path, call: object, error: type, words: list[str]) -> None:
    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), use_wandb=False)
    with AdvancedExperimentTracker(cfg) as tracker:
        with pytest.raises(error) as info:
            call(tracker)  # type: ignore[operator]
        for word in words:
            assert word in str(info.value)


def test_out_of_range_values_are_reported_and_the_worker_goes_on(
        runs_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), use_wandb=False)
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_video(torch.rand(4, 3, 8, 8) * 5, "too_bright", step=0)
        tracker.log_video(torch.rand(4, 3, 8, 8), "fine", step=0)
    assert [e["name"] for e in RunStore(tracker.run_dir).events("video")] == ["fine"]
    assert any("value_range" in r.getMessage() for r in caplog.records)


def test_a_burst_of_clips_waits_for_room_and_loses_none(runs_dir: Path) -> None:
    clip = moving_pattern(t=8, h=32, w=32)
    bound = 3 * clip.numel() * clip.element_size()  # room for about three clips
    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), use_wandb=False, max_queue_bytes=bound)
    with AdvancedExperimentTracker(cfg) as tracker:
        for i in range(12):
            tracker.log_video(clip, f"clip{i}", step=i)
    store = RunStore(tracker.run_dir)
    assert len(store.events("video")) == 12
    assert store.meta()["backpressure_wait_s"] > 0


def test_media_whose_file_cannot_be_written_keeps_its_store_row_with_the_error(
        runs_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), use_wandb=False)
    with AdvancedExperimentTracker(cfg) as tracker:
        (tracker.run_dir / "media").write_text("a file where the media folder should be")  # not writable as a dir
        tracker.log_video(moving_pattern(t=4), "clip", step=1)
        tracker.log_image(torch.rand(3, 8, 8), "frame", step=1)
        tracker.log_table("scores", ["clip", "psnr"], [["a", 30.0]], step=1)
        tracker.log_metrics({"after": 1.0}, step=2)
    store = RunStore(tracker.run_dir)
    rows = {e["name"]: e for e in store.events()}
    for name in ("clip", "frame", "scores"):
        assert rows[name]["path"] is None and "not written" in rows[name]["data"]["error"], name
    assert rows["clip"]["data"]["frames"] == 4 and store.history("after")
    assert len(tensorboard_accumulator(tracker.run_dir).Images("clip")) == 1, "the GIF still reaches TensorBoard"
    assert tracker.health["media_write_errors"] == 3
    assert len([r for r in caplog.records if "could not be written under" in r.getMessage()]) == 1


def test_table_cells_that_are_tensors_or_numpy_scalars_are_stored_as_numbers(runs_dir: Path) -> None:
    cfg = TrackingConfig(experiment_name="media", log_dir=str(runs_dir), use_wandb=False)
    cell = torch.tensor(2.5)
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_table("t", ["tensor", "f32", "i64", "vector", "text"],
                          [[cell, np.float32(1.5), np.int64(3), torch.tensor([1.0, 2.0]), "a"]], step=0)
        cell.add_(1)  # changed after the call: the table keeps the value it was given
    (entry,) = RunStore(tracker.run_dir).events("table")
    saved = json.loads(Path(entry["path"]).read_text())
    assert saved["rows"] == [[2.5, 1.5, 3, [1.0, 2.0], "a"]]
    markdown = tensorboard_accumulator(tracker.run_dir).Tensors("t")[0].tensor_proto.string_val[0].decode()
    # The Text tab renders Markdown, so the list's brackets are escaped to show as they are.
    assert "| 2.5 | 1.5 | 3 | \\[1.0, 2.0\\] | a |" in markdown and "tensor(" not in markdown
