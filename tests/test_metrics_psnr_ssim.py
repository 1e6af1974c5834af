"""PSNR and SSIM against scikit-image, per-timestep curves, streaming, value ranges and input errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from opusclip_track.metrics import (
    PSNR,
    SSIM,
    prepare_videos,
    psnr,
    psnr_per_frame,
    ssim,
    ssim_per_frame,
)

TOL = 1e-4  # the stated agreement with scikit-image, in SSIM units and in dB


def smooth_video(batch: int = 2, steps: int = 5, height: int = 48, width: int = 40, seed: int = 0) -> torch.Tensor:
    """Moving sinusoidal patterns with a flat patch: float32 (B, T, 3, H, W) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    phases = torch.rand(batch, 3, generator=gen) * 6.28
    clips = []
    for b in range(batch):
        frames = []
        for t in range(steps):
            channels = [0.5 + 0.3 * torch.sin(7 * xx + 0.4 * t + phases[b, c]) * torch.cos(5 * yy - 0.2 * t)
                        + 0.1 * torch.sin(23 * xx * yy + c) for c in range(3)]
            frame = torch.stack(channels)
            frame[:, 4:16, 6:18] = 0.62 + 0.1 * b  # flat region: SSIM's variance terms near zero
            frames.append(frame)
        clips.append(torch.stack(frames))
    return torch.stack(clips).clamp(0, 1).float()


def degrade(video: torch.Tensor, kind: str, seed: int = 1) -> torch.Tensor:
    """A structured distortion of a (B, T, 3, H, W) video in [0, 1]."""
    if kind == "blurred":
        return TF.gaussian_blur(video.flatten(0, 1), kernel_size=5, sigma=1.2).view_as(video)
    if kind == "noisy":
        gen = torch.Generator().manual_seed(seed)
        return (video + 0.06 * torch.randn(video.shape, generator=gen)).clamp(0, 1)
    if kind == "shifted":
        return torch.roll(video, shifts=(1, 3), dims=(-2, -1))
    raise ValueError(kind)


def sk_ssim_frames(gen: np.ndarray, ref: np.ndarray, data_range: float) -> np.ndarray:
    """scikit-image SSIM (Gaussian, population covariance) of every (C, H, W) frame: (B, T)."""
    out = np.empty(gen.shape[:2])
    for b, t in np.ndindex(*gen.shape[:2]):
        out[b, t] = structural_similarity(gen[b, t], ref[b, t], gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=data_range, channel_axis=0)
    return out


def sk_psnr_frames(gen: np.ndarray, ref: np.ndarray, data_range: float) -> np.ndarray:
    out = np.empty(gen.shape[:2])
    for b, t in np.ndindex(*gen.shape[:2]):
        out[b, t] = peak_signal_noise_ratio(ref[b, t], gen[b, t], data_range=data_range)
    return out


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return smooth_video()


@pytest.mark.parametrize("kind", ["blurred", "noisy", "shifted"])
def test_float_0_1_matches_scikit_image(reference: torch.Tensor, kind: str) -> None:
    generated = degrade(reference, kind)
    sk_ssim = sk_ssim_frames(generated.double().numpy(), reference.double().numpy(), data_range=1.0)
    sk_psnr = sk_psnr_frames(generated.double().numpy(), reference.double().numpy(), data_range=1.0)
    assert float(ssim(generated, reference)) == pytest.approx(sk_ssim.mean(), abs=TOL)
    assert float(psnr(generated, reference)) == pytest.approx(sk_psnr.mean(), abs=TOL)
    np.testing.assert_allclose(ssim_per_frame(generated, reference).numpy(), sk_ssim.mean(0), atol=TOL)
    np.testing.assert_allclose(psnr_per_frame(generated, reference).numpy(), sk_psnr.mean(0), atol=TOL)


@pytest.mark.parametrize("kind", ["blurred", "noisy", "shifted"])
def test_float_minus1_1_matches_scikit_image(reference: torch.Tensor, kind: str) -> None:
    generated = degrade(reference, kind)
    gen_pm, ref_pm = generated * 2 - 1, reference * 2 - 1
    # SSIM is defined on frames mapped to [0, 1]; PSNR is checked on the raw [-1, 1] data (peak 2).
    sk_ssim = sk_ssim_frames(generated.double().numpy(), reference.double().numpy(), data_range=1.0)
    sk_psnr = sk_psnr_frames(gen_pm.double().numpy(), ref_pm.double().numpy(), data_range=2.0)
    assert float(ssim(gen_pm, ref_pm, value_range=(-1.0, 1.0))) == pytest.approx(sk_ssim.mean(), abs=TOL)
    assert float(psnr(gen_pm, ref_pm, value_range=(-1.0, 1.0))) == pytest.approx(sk_psnr.mean(), abs=TOL)


@pytest.mark.parametrize("kind", ["blurred", "noisy", "shifted"])
def test_uint8_matches_scikit_image(reference: torch.Tensor, kind: str) -> None:
    gen8 = (degrade(reference, kind) * 255).round().to(torch.uint8)
    ref8 = (reference * 255).round().to(torch.uint8)
    sk_ssim = sk_ssim_frames(gen8.numpy(), ref8.numpy(), data_range=255)
    sk_psnr = sk_psnr_frames(gen8.numpy(), ref8.numpy(), data_range=255)
    np.testing.assert_allclose(ssim_per_frame(gen8, ref8).numpy(), sk_ssim.mean(0), atol=TOL)
    np.testing.assert_allclose(psnr_per_frame(gen8, ref8).numpy(), sk_psnr.mean(0), atol=TOL)


def test_single_clip_4d_equals_batch_of_one(reference: torch.Tensor) -> None:
    generated = degrade(reference, "noisy")
    assert float(ssim(generated[0], reference[0])) == pytest.approx(float(ssim(generated[:1], reference[:1])))
    assert psnr_per_frame(generated[0], reference[0]).shape == (reference.shape[1],)


def test_curve_shows_quality_falling_over_the_horizon(reference: torch.Tensor) -> None:
    # Noise that grows with t, as errors accumulate in autoregressive generation.
    gen = torch.Generator().manual_seed(3)
    growth = torch.linspace(0.01, 0.2, reference.shape[1]).view(1, -1, 1, 1, 1)
    generated = (reference + growth * torch.randn(reference.shape, generator=gen)).clamp(0, 1)
    ssim_curve, psnr_curve = ssim_per_frame(generated, reference), psnr_per_frame(generated, reference)
    assert ssim_curve.shape == psnr_curve.shape == (reference.shape[1],)
    assert torch.all(ssim_curve.diff() < 0) and torch.all(psnr_curve.diff() < 0)
    sk = sk_ssim_frames(generated.double().numpy(), reference.double().numpy(), data_range=1.0)
    np.testing.assert_allclose(ssim_curve.numpy(), sk.mean(0), atol=TOL)


def test_identical_frames_cap_psnr_at_100_db(reference: torch.Tensor) -> None:
    generated = degrade(reference, "noisy")
    generated[:, 0] = reference[:, 0]  # a conditioning frame copied from the reference
    curve = psnr_per_frame(generated, reference)
    assert float(curve[0]) == pytest.approx(100.0)
    assert torch.isfinite(psnr(generated, reference))
    assert float(ssim(reference, reference)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("metric_cls, functional, curve_fn", [(PSNR, psnr, psnr_per_frame),
                                                               (SSIM, ssim, ssim_per_frame)])
def test_streaming_equals_one_shot(reference: torch.Tensor, metric_cls: type, functional: object,
                                   curve_fn: object) -> None:
    generated = degrade(reference, "blurred")
    generated_pm, reference_pm = generated * 2 - 1, reference * 2 - 1
    metric = metric_cls(value_range=(-1.0, 1.0))
    metric.update(generated_pm[:1], reference_pm[:1])
    metric.update(generated_pm[1], reference_pm[1])  # a single (T, C, H, W) clip
    one_shot = {"generated": generated_pm, "reference": reference_pm, "value_range": (-1.0, 1.0)}
    assert float(metric.compute()) == pytest.approx(float(functional(**one_shot)), abs=1e-12)
    torch.testing.assert_close(metric.compute_curve(), curve_fn(**one_shot))
    metric.reset()
    with pytest.raises(RuntimeError, match="no videos seen"):
        metric.compute_curve()
    metric.update(generated_pm[:1], reference_pm[:1])  # after reset only the new batch counts
    first = functional(generated_pm[:1], reference_pm[:1], value_range=(-1.0, 1.0))
    assert float(metric.compute()) == pytest.approx(float(first), abs=1e-12)


def test_curve_needs_one_length(reference: torch.Tensor) -> None:
    metric = SSIM()
    metric.update(reference, reference)
    metric.update(reference[:, :3], reference[:, :3])
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-6)  # the mean over all frames still works
    with pytest.raises(ValueError, match=r"same number of frames T in every update, received T in \[3, 5\]"):
        metric.compute_curve()


def test_value_ranges_agree_on_the_same_frames() -> None:
    gen = torch.Generator().manual_seed(5)
    ref8 = (smooth_video(1, 3) * 255).round().to(torch.uint8)
    gen8 = (ref8.int() + torch.randint(-20, 21, ref8.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    views = {"uint8": (gen8, ref8, (0.0, 1.0)),
             "0,1": (gen8 / 255.0, ref8 / 255.0, (0.0, 1.0)),
             "-1,1": (gen8 / 127.5 - 1, ref8 / 127.5 - 1, (-1.0, 1.0)),
             "0,255 float": (gen8.float(), ref8.float(), (0.0, 255.0))}
    scores = {k: (float(ssim(g, r, value_range=v)), float(psnr(g, r, value_range=v))) for k, (g, r, v) in views.items()}
    for name, (s, p) in scores.items():
        assert s == pytest.approx(scores["uint8"][0], abs=1e-6), name
        assert p == pytest.approx(scores["uint8"][1], abs=1e-4), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_range_edges_in_both_float_dtypes(dtype: torch.dtype) -> None:
    video = smooth_video(1, 2).to(dtype)
    video[0, 0, 0, 0, :3] = torch.tensor([0.0, 1.0, -0.0], dtype=dtype)  # the bounds themselves, and -0.0
    assert prepare_videos(video, name="generated") is video  # in range: used as it is, no copy
    for bad, message in ((float("nan"), "received NaN"), (float("-inf"), r"received values in \[-inf"),
                         (1.01, r"received values in \[-?0, 1.01\]"), (-0.01, r"received values in \[-0.01, 1\]")):
        broken = video.clone()
        broken[0, 1, 2, 3, 4] = bad
        with pytest.raises(ValueError, match=message):
            prepare_videos(broken, name="generated")


def test_tiny_float_overshoot_is_accepted_and_clamped() -> None:
    video = smooth_video(1, 2)
    video[0, 0, 0, 0, 0] = 1.0005  # decoder / resampling slop, within 1e-3
    video[0, 0, 0, 0, 1] = -0.0005
    prepared = prepare_videos(video, name="generated")
    assert float(prepared.max()) == 1.0 and float(prepared.min()) == 0.0


BAD_INPUTS = [
    (torch.zeros(3, 64), {}, ValueError, r"generated: expected 4-D \(T, C, H, W\) or 5-D .*received shape \(3, 64\)"),
    (torch.zeros(1, 2, 3, 4, 5, 6), {}, ValueError, r"generated: expected 4-D.*received shape \(1, 2, 3, 4, 5, 6\)"),
    (torch.zeros(2, 32, 32, 3), {}, ValueError, r"generated: expected channels-first.*C=32; channels-last"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.int32), {}, TypeError, r"generated: expected dtype uint8 or a floating "
                                                                  r"dtype, received torch.int32"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.bool), {}, TypeError, r"received torch.bool"),
    (torch.full((2, 3, 16, 16), 255.0), {}, ValueError, r"generated: expected values in value_range \[0, 1\], "
                                                        r"received values in \[255, 255\]"),
    (torch.full((2, 3, 16, 16), -0.5), {}, ValueError, r"value_range \[0, 1\], received values in \[-0.5, -0.5\]"),
    (torch.full((2, 3, 16, 16), 1.5), {"value_range": (-1.0, 1.0)}, ValueError, r"value_range \[-1, 1\]"),
    (torch.full((2, 3, 16, 16), float("nan")), {}, ValueError, r"generated: expected finite values.*received NaN"),
    (torch.full((2, 3, 16, 16), float("inf")), {}, ValueError, r"received values in \[inf, inf\]"),
    (np.zeros((2, 3, 16, 16), dtype=np.uint8), {}, TypeError, r"generated: expected a torch.Tensor.*received ndarray"),
    (torch.zeros(0, 3, 16, 16), {}, ValueError, r"generated: expected non-empty dimensions"),
    (torch.zeros(2, 3, 16, 16), {"value_range": (1.0, 0.0)}, ValueError, r"value_range: expected finite low < high"),
    (torch.zeros(2, 3, 16, 16), {"value_range": "0,1"}, ValueError, r"value_range: expected a \(low, high\) pair"),
]


@pytest.mark.parametrize("functional", [psnr, ssim, psnr_per_frame, ssim_per_frame])
@pytest.mark.parametrize("bad, kwargs, error, message", BAD_INPUTS)
def test_bad_generated_input_is_named(functional: object, bad: object, kwargs: dict, error: type,
                                      message: str) -> None:
    good = torch.zeros(2, 3, 16, 16)
    with pytest.raises(error, match=message):
        functional(bad, good, **kwargs)


def test_bad_reference_is_named_too() -> None:
    with pytest.raises(ValueError, match=r"reference: expected values in value_range \[0, 1\]"):
        ssim(torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), 2.0))


@pytest.mark.parametrize("reference_shape", [(2, 3, 16, 18), (3, 3, 16, 16), (2, 1, 16, 16), (2, 2, 3, 16, 16)])
def test_generated_reference_shape_mismatch(reference_shape: tuple[int, ...]) -> None:
    expected = (r"reference: expected the same shape as generated \(1, 2, 3, 16, 16\).*"
                r"received \(\d+, \d+, \d+, \d+, \d+\)")
    for functional in (psnr, ssim):
        with pytest.raises(ValueError, match=expected):
            functional(torch.zeros(2, 3, 16, 16), torch.zeros(reference_shape))


def test_ssim_needs_frames_as_large_as_its_window() -> None:
    with pytest.raises(ValueError, match=r"at least 11x11 pixels.*received 8x32"):
        ssim(torch.zeros(2, 3, 8, 32), torch.zeros(2, 3, 8, 32))
    assert float(psnr(torch.zeros(2, 3, 8, 32), torch.full((2, 3, 8, 32), 0.1))) == pytest.approx(20.0)


def test_the_readme_metrics_example_runs() -> None:
    """The first Python block of the README's metrics section, executed as written ([-1, 1] data throughout)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Video-quality metrics"):readme.index("## Learned video metrics")]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md (metrics example)", "exec"), namespace)  # noqa: S102
    scores = namespace["vm"].compute()  # type: ignore[attr-defined]
    assert scores["video/ssim"] == pytest.approx(float(namespace["score"]), abs=1e-9)  # type: ignore[arg-type]
    assert namespace["curve"].shape == (16,)  # type: ignore[attr-defined]
