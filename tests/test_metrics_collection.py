"""Temporal flicker and the `VideoMetrics` collection: one pass, flat keys, protocol, missing weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from opusclip_track.metrics import (
    PSNR,
    REGISTRY,
    SSIM,
    MissingWeightsError,
    TemporalFlicker,
    VideoMetrics,
    available_metrics,
    flicker,
    higher_is_better,
    lpips,
    psnr,
    psnr_per_frame,
    ssim,
    ssim_per_frame,
    temporal_diff,
)


def moving_video(batch: int = 2, steps: int = 6, size: int = 24, seed: int = 0) -> torch.Tensor:
    """A bright square sliding over a gradient: float32 (B, T, 3, H, W) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.linspace(0.2, 0.6, size).view(1, 1, size).expand(3, size, size)
    clips = torch.empty(batch, steps, 3, size, size)
    for b in range(batch):
        start = int(torch.randint(0, size // 2, (1,), generator=gen))
        for t in range(steps):
            frame = base.clone()
            x = (start + 2 * t) % (size - 6)
            frame[:, 8:14, x:x + 6] = 0.9
            clips[b, t] = frame
    return clips


# ---------------------------------------------------------------------------------------------------- flicker


def test_flicker_is_zero_for_identical_videos() -> None:
    video = moving_video()
    assert float(flicker(video, video)) == 0.0
    assert float(temporal_diff(video, video)) == 0.0


def test_flicker_grows_with_flicker_and_ignores_a_steady_shift() -> None:
    reference = moving_video()
    steady = (reference + 0.1).clamp(0, 1)  # the same error in every frame: no temporal artefact
    flickering = reference.clone()
    flickering[:, 1::2] = (flickering[:, 1::2] + 0.1).clamp(0, 1)  # brightness jumps every other frame
    strong = reference.clone()
    strong[:, 1::2] = (strong[:, 1::2] + 0.3).clamp(0, 1)
    assert float(flicker(steady, reference)) < 1e-6
    assert 0 < float(flicker(flickering, reference)) < float(flicker(strong, reference))
    assert float(temporal_diff(flickering, reference)) > 0  # changes more than the reference


def test_temporal_diff_is_negative_for_a_frozen_video() -> None:
    reference = moving_video()
    frozen = reference[:, :1].expand_as(reference)
    assert float(temporal_diff(frozen, reference)) < 0
    assert float(flicker(frozen, reference)) > 0


def test_flicker_matches_its_definition_in_numpy() -> None:
    gen = torch.Generator().manual_seed(2)
    reference = moving_video(steps=5)
    generated = (reference + 0.05 * torch.randn(reference.shape, generator=gen)).clamp(0, 1)
    g, r = generated.double().numpy(), reference.double().numpy()
    d_g, d_r = np.diff(g, axis=1), np.diff(r, axis=1)
    assert float(flicker(generated, reference)) == pytest.approx(np.abs(d_g - d_r).mean(), abs=1e-7)
    assert float(temporal_diff(generated, reference)) == pytest.approx(np.abs(d_g).mean() - np.abs(d_r).mean(),
                                                                       abs=1e-7)
    # uint8 and [-1, 1] inputs are measured on [0, 1] frames too
    assert float(flicker(generated * 2 - 1, reference * 2 - 1, value_range=(-1.0, 1.0))) == pytest.approx(
        np.abs(d_g - d_r).mean(), abs=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # torchmetrics' warning before our error
def test_streaming_flicker_equals_one_shot() -> None:
    reference = moving_video(batch=3)
    generated = reference.clone()
    generated[:, ::3] = (generated[:, ::3] * 0.8).clamp(0, 1)
    metric = TemporalFlicker()
    metric.update(generated[:2], reference[:2])
    metric.update(generated[2], reference[2])
    assert float(metric.compute()) == pytest.approx(float(flicker(generated, reference)), abs=1e-12)
    assert float(metric.compute_temporal_diff()) == pytest.approx(float(temporal_diff(generated, reference)),
                                                                  abs=1e-12)
    metric.reset()
    with pytest.raises(RuntimeError, match=r"TemporalFlicker.compute: no videos seen yet"):
        metric.compute()


def test_flicker_needs_two_frames() -> None:
    one_frame = torch.zeros(2, 1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"generated: expected at least 2 frames \(T >= 2\).*\(2, 1, 3, 16, 16\)"):
        flicker(one_frame, one_frame)


# ---------------------------------------------------------------------------------------------------- VideoMetrics


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    reference = moving_video(batch=3)
    gen = torch.Generator().manual_seed(4)
    generated = (reference + 0.04 * torch.randn(reference.shape, generator=gen)).clamp(0, 1)
    return generated, reference


def test_video_metrics_reports_flat_keys_equal_to_the_functionals(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    generated, reference = pair
    metrics = VideoMetrics(metrics=("psnr", "ssim", "flicker"), value_range=(-1.0, 1.0))
    metrics.update(generated[:2] * 2 - 1, reference[:2] * 2 - 1)  # in batches, in [-1, 1]
    metrics.update(generated[2] * 2 - 1, reference[2] * 2 - 1)
    scores = metrics.compute()
    assert sorted(scores) == ["video/flicker", "video/psnr", "video/ssim", "video/temporal_diff"]
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["video/psnr"] == pytest.approx(float(psnr(generated, reference)), abs=1e-5)
    assert scores["video/ssim"] == pytest.approx(float(ssim(generated, reference)), abs=1e-6)
    assert scores["video/flicker"] == pytest.approx(float(flicker(generated, reference)), abs=1e-6)
    assert scores["video/temporal_diff"] == pytest.approx(float(temporal_diff(generated, reference)), abs=1e-6)
    curves = metrics.compute_curves()
    torch.testing.assert_close(curves["video/ssim"], ssim_per_frame(generated, reference), atol=1e-6, rtol=0)
    torch.testing.assert_close(curves["video/psnr"], psnr_per_frame(generated, reference), atol=1e-4, rtol=0)


def test_video_metrics_per_clip_scores_and_frame_scores(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    generated, reference = pair  # 3 clips, fed as 2 + 1
    metrics = VideoMetrics(metrics=("psnr", "ssim", "flicker"))
    metrics.update(generated[:2], reference[:2])
    metrics.update(generated[2:], reference[2:])
    per_clip = metrics.compute_per_clip()
    assert sorted(per_clip) == ["video/flicker", "video/psnr", "video/ssim", "video/temporal_diff"]
    for i in range(3):
        gen, ref = generated[i], reference[i]
        assert float(per_clip["video/psnr"][i]) == pytest.approx(float(psnr(gen, ref)), abs=1e-9)
        assert float(per_clip["video/ssim"][i]) == pytest.approx(float(ssim(gen, ref)), abs=1e-9)
        assert float(per_clip["video/flicker"][i]) == pytest.approx(float(flicker(gen, ref)), abs=1e-12)
        assert float(per_clip["video/temporal_diff"][i]) == pytest.approx(float(temporal_diff(gen, ref)), abs=1e-12)
    frames = metrics.compute_frame_scores()
    assert sorted(frames) == ["video/psnr", "video/ssim"] and frames["video/psnr"].shape == (3, 6)
    torch.testing.assert_close(frames["video/ssim"].mean(dim=0), metrics.compute_curves()["video/ssim"])


def test_video_metrics_compute_after_more_updates_is_fresh(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    generated, reference = pair
    metrics = VideoMetrics(metrics=("psnr",))
    metrics.update(generated[:1], reference[:1])
    first = metrics.compute()["video/psnr"]
    metrics.update(generated[1:], reference[1:])
    assert metrics.compute()["video/psnr"] != first
    assert metrics.compute()["video/psnr"] == pytest.approx(float(psnr(generated, reference)))


@pytest.mark.parametrize("make", [PSNR, SSIM, TemporalFlicker])
def test_prepared_update_is_public_and_keeps_torchmetrics_bookkeeping(
        make: type, pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    generated, reference = pair  # float32 in [0, 1]: already what prepare_pair returns
    checked, prepared = make(), make()
    checked.update(generated[:1], reference[:1])
    prepared.update(generated[:1], reference[:1], prepared=True)
    first = prepared.compute()
    checked.update(generated[1:], reference[1:])
    prepared.update(generated[1:], reference[1:], prepared=True)
    assert prepared.update_count == 2
    assert float(prepared.compute()) != float(first)  # the cached result was dropped by the second update
    assert float(prepared.compute()) == float(checked.compute())


def test_video_metrics_reset_and_protocol(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    generated, reference = pair
    metrics = VideoMetrics(metrics=("ssim", "psnr", "ssim"), device="cpu")
    assert metrics.names == ("ssim", "psnr")
    before = metrics.protocol()
    assert before["frames"] is None and before["resolution"] is None
    metrics.update(generated, reference)
    protocol = json.loads(json.dumps(metrics.protocol()))  # storable in a run config as JSON
    assert protocol["metrics"] == ["ssim", "psnr"]
    assert protocol["value_range"] == [0.0, 1.0]
    assert (protocol["frames"], protocol["channels"], protocol["resolution"]) == (6, 3, [24, 24])
    assert protocol["num_videos"] == 3
    assert protocol["settings"]["ssim"]["sigma"] == 1.5 and protocol["settings"]["ssim"]["win_size"] == 11
    assert protocol["settings"]["ssim"]["k1"] == 0.01 and protocol["settings"]["ssim"]["k2"] == 0.03
    metrics.reset()
    assert metrics.protocol()["num_videos"] == 0
    with pytest.raises(RuntimeError, match="no videos seen yet"):
        metrics.compute()
    metrics.update(generated[:1, :3], reference[:1, :3])  # a new clip shape is fine after reset
    assert metrics.compute()["video/ssim"] == pytest.approx(float(ssim(generated[:1, :3], reference[:1, :3])))


def test_video_metrics_rejects_a_clip_shape_change(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    generated, reference = pair
    metrics = VideoMetrics(metrics=("psnr",))
    metrics.update(generated, reference)
    with pytest.raises(ValueError, match=r"generated: expected clips of \(T, C, H, W\) = \(6, 3, 24, 24\).*"
                                         r"received \(4, 3, 24, 24\)"):
        metrics.update(generated[:, :4], reference[:, :4])


def test_video_metrics_input_errors_are_named(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    generated, reference = pair
    metrics = VideoMetrics(metrics=("psnr", "flicker"))
    with pytest.raises(ValueError, match=r"reference: expected the same shape as generated"):
        metrics.update(generated, reference[:2])
    with pytest.raises(ValueError, match=r"generated: expected values in value_range \[0, 1\]"):
        metrics.update(generated * 255, reference)


@pytest.mark.parametrize("names, message", [
    (("psnr", "bleu"), r"metrics: expected one or more of \['psnr', 'ssim', 'lpips', 'fid', 'is', 'fvd', "
                       r"'flicker'\], received \['psnr', 'bleu'\]"),
    ((), r"metrics: expected one or more of"),
    ("psnr", r"metrics: expected a sequence of metric names.*received the string 'psnr'"),
])
def test_video_metrics_rejects_unknown_names(names: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoMetrics(metrics=names)  # type: ignore[arg-type]


def test_higher_is_better() -> None:
    assert higher_is_better("video/psnr") and higher_is_better("ssim") and higher_is_better("video/is")
    assert higher_is_better("video/lpips") is False and higher_is_better("video/fid") is False
    assert higher_is_better("video/fvd") is False and higher_is_better("video/flicker") is False
    assert higher_is_better("video/temporal_diff") is None


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache and URLs that cannot be reached, whatever the machine's network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("OPUSCLIP_WEIGHTS_DIR", raising=False)
    for key, spec in list(REGISTRY.items()):
        monkeypatch.setitem(REGISTRY, key, dataclasses.replace(spec, url=(tmp_path / "offline" / key).as_uri()))
    return tmp_path / "weights"


def test_available_metrics_says_which_weights_are_missing(no_weights: Path) -> None:
    status = available_metrics(weights_dir=no_weights)
    assert list(status) == ["psnr", "ssim", "lpips", "fid", "is", "fvd", "flicker"]
    assert status["psnr"] is None and status["ssim"] is None and status["flicker"] is None
    assert "alexnet-owt-7be5be79.pth" in status["lpips"]  # type: ignore[operator]
    assert "weights-inception-2015-12-05-6726825d.pth" in status["fid"]  # type: ignore[operator]
    assert "weights-inception-2015-12-05-6726825d.pth" in status["is"]  # type: ignore[operator]
    assert "i3d_torchscript.pt" in status["fvd"]  # type: ignore[operator]
    assert str(no_weights) in status["fvd"]  # type: ignore[operator]
    no_weights.mkdir()
    (no_weights / "i3d_torchscript.pt").write_bytes(b"placed by the user")
    assert available_metrics(weights_dir=no_weights)["fvd"] is None  # found on disk (loading is checked later)


def test_video_metrics_does_not_swallow_missing_weights(no_weights: Path) -> None:
    with pytest.raises(MissingWeightsError, match=r"alexnet-owt-7be5be79.pth"):
        VideoMetrics(metrics=("psnr", "lpips"), weights_dir=no_weights)


def test_video_metrics_runs_a_learned_metric_in_the_same_pass(no_weights: Path) -> None:
    # A real torchvision AlexNet backbone, randomly initialised (pretrained weights cannot be downloaded
    # here), saved under the file name the resolver looks for: LPIPS loads it like the pretrained one.
    no_weights.mkdir()
    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, no_weights / "alexnet-owt-7be5be79.pth")
    reference = moving_video(batch=2, steps=3, size=64)
    generated = (reference + 0.1 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    metrics = VideoMetrics(metrics=("psnr", "lpips"), weights_dir=no_weights, device="cpu")
    metrics.update(generated[:1], reference[:1])
    metrics.update(generated[1:], reference[1:])
    scores = metrics.compute()
    expected = lpips(generated, reference, weights_dir=no_weights, device="cpu")
    assert scores["video/lpips"] == pytest.approx(float(expected), abs=1e-6)
    assert scores["video/psnr"] == pytest.approx(float(psnr(generated, reference)), abs=1e-5)
    assert metrics.compute_curves()["video/lpips"].shape == (3,)
    assert metrics.protocol()["settings"]["lpips"]["net"] == "alex"
