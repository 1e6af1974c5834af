"""LPIPS, FID, IS and FVD end to end with randomly initialised networks of the real architectures.

The pretrained files cannot be downloaded here, so each test writes a random-init network of the real
architecture under the real file name with the real key names (torchvision AlexNet; torch-fidelity's
Inception-v3 and a scripted I3D with the FVD detector's call signature, both from `metrics._stand_ins`, BatchNorm
calibrated on one batch), and the metrics load it through the weights resolver like the real file. What these
tests cannot check is the published numbers of the pretrained networks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from opusclip_track.metrics import weights
from opusclip_track.metrics._stand_ins import write_random_i3d, write_random_inception
from opusclip_track.metrics.fid import FID, InceptionScore, _inception_score, fid, inception_score
from opusclip_track.metrics.fvd import FVD, fvd
from opusclip_track.metrics.lpips import LPIPS, lpips, lpips_per_frame
from opusclip_track.metrics.weights import MissingWeightsError

CPU = "cpu"


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No downloads, an empty private hub cache, no weights directory from the environment."""
    monkeypatch.setenv(weights.ENV_OFFLINE, "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR, raising=False)


@pytest.fixture(scope="module")
def weights_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def alexnet_dir(weights_root: Path) -> Path:
    torch.manual_seed(1)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights_root / "alexnet-owt-7be5be79.pth")
    return weights_root


@pytest.fixture(scope="module")
def inception_dir(weights_root: Path) -> Path:
    torch.manual_seed(2)
    write_random_inception(weights_root, _videos(1, 2, seed=9).flatten(0, 1).mul(255).round().to(torch.uint8))
    return weights_root


@pytest.fixture(scope="module")
def i3d_dir(weights_root: Path) -> Path:
    torch.manual_seed(3)
    write_random_i3d(weights_root, _videos(2, 16, size=64, seed=8).permute(0, 2, 1, 3, 4) * 2 - 1)
    return weights_root


def _videos(batch: int, frames: int, *, size: int = 64, seed: int = 0) -> Tensor:
    """Smooth random videos in [0, 1], `(B, T, 3, H, W)`: upsampled noise, like blurry natural content."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch * frames, 3, size // 8, size // 8, generator=gen)
    fine = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return fine.view(batch, frames, 3, size, size)


def _noisy(videos: Tensor, sigma: float, seed: int = 5) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (videos + sigma * torch.randn(videos.shape, generator=gen)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------- LPIPS


def test_lpips_is_zero_for_identical_videos_and_grows_with_noise(alexnet_dir: Path) -> None:
    videos = _videos(2, 3)
    kwargs = {"weights_dir": alexnet_dir, "device": CPU}
    assert float(lpips(videos, videos, **kwargs)) == 0.0
    small, large = (float(lpips(_noisy(videos, s), videos, **kwargs)) for s in (0.03, 0.3))
    assert 0.0 < small < large


def test_lpips_equals_the_lpips_package_with_the_same_backbone(alexnet_dir: Path) -> None:
    import lpips as lpips_package

    # Reference: the package's own network, its AlexNet slices copied module by module from a torchvision
    # AlexNet that loaded the file; checks our key renaming and the [0, 1] -> [-1, 1] mapping.
    torchvision_alexnet = torchvision.models.alexnet(weights=None)
    torchvision_alexnet.load_state_dict(torch.load(alexnet_dir / "alexnet-owt-7be5be79.pth", weights_only=True))
    with pytest.warns(UserWarning):  # torchvision's deprecation of the `pretrained=` lpips passes
        reference = lpips_package.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    for slice_module in reference.net.children():
        for index, layer in slice_module.named_children():
            layer.load_state_dict(torchvision_alexnet.features[int(index)].state_dict())
    gen, ref = _noisy(_videos(1, 3, seed=1), 0.1), _videos(1, 3, seed=1)
    with torch.no_grad():
        expected = reference(gen[0] * 2 - 1, ref[0] * 2 - 1).flatten().double()
    ours = lpips_per_frame(gen, ref, weights_dir=alexnet_dir, device=CPU)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_lpips_streaming_equals_one_shot_and_value_range_is_honoured(alexnet_dir: Path) -> None:
    ref = _videos(3, 2, seed=2)
    gen = _noisy(ref, 0.1)
    expected = lpips(gen, ref, weights_dir=alexnet_dir, device=CPU)
    metric = LPIPS(weights_dir=alexnet_dir, device=CPU, value_range=(-1.0, 1.0))
    assert metric.higher_is_better is False
    metric.update(gen[:1] * 2 - 1, ref[:1] * 2 - 1)
    metric.update(gen[1:] * 2 - 1, ref[1:] * 2 - 1)
    torch.testing.assert_close(metric.compute(), expected, rtol=1e-6, atol=1e-9)
    assert metric.compute_curve().shape == (2,)
    assert metric.protocol()["weights"] == "alexnet"


def test_lpips_without_backbone_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth") as info:
        LPIPS(net="vgg", weights_dir=tmp_path, device=CPU)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in str(info.value)
    with pytest.raises(ValueError, match="net: expected one of \\['alex', 'vgg'\\], received 'squeeze'"):
        lpips(_videos(1, 1), _videos(1, 1), net="squeeze", weights_dir=tmp_path)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- FID/IS


def test_fid_zero_for_identical_sets_positive_for_different_and_streaming_equals_one_shot(
        inception_dir: Path) -> None:
    ref, gen = _videos(2, 1, seed=3), _videos(2, 1, seed=4)  # two frames per set: the Inception is slow on CPU
    kwargs = {"weights_dir": inception_dir, "device": CPU}
    different = float(fid(gen, ref, **kwargs))
    assert different > 0.0
    metric = FID(reset_real_features=False, **kwargs)
    assert metric.higher_is_better is False and metric.protocol()["feature"] == 2048
    metric.update(reference=ref[:1])
    metric.update(reference=ref[1])  # a single (T, C, H, W) clip
    metric.update(generated=gen)
    assert float(metric.compute()) == pytest.approx(different, rel=1e-6)
    metric.reset()  # the reference statistics stay
    metric.update(generated=(ref * 255).round().to(torch.uint8))  # uint8 frames equal to the float ones
    assert abs(float(metric.compute())) < 1e-6 * different
    with pytest.raises(ValueError, match="feature: expected one of 64, 192, 768, 2048, received 1000"):
        FID(feature=1000, **kwargs)  # type: ignore[arg-type]


def test_inception_score_math_matches_torch_fidelity() -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.randn(60, 1008, generator=torch.Generator().manual_seed(0)) * 3
    mean, std = _inception_score(logits, 10)
    expected = isc_features_to_metric(logits, splits=10)
    assert float(mean) == pytest.approx(expected["inception_score_mean"], rel=1e-10)
    assert float(std) == pytest.approx(expected["inception_score_std"], rel=1e-8)


def test_inception_score_end_to_end_and_streaming(inception_dir: Path) -> None:
    videos = _videos(2, 1, seed=7)
    kwargs = {"weights_dir": inception_dir, "device": CPU}
    mean, std = inception_score(videos, splits=2, **kwargs)
    assert float(mean) >= 1.0 and float(std) >= 0.0
    metric = InceptionScore(splits=2, **kwargs)
    assert metric.higher_is_better is True
    metric.update(videos[0])
    metric.update(videos[1:])
    streamed = metric.compute()
    assert float(streamed[0]) == pytest.approx(float(mean), rel=1e-6)
    with pytest.raises(ValueError, match="expected at least splits=10 frames .* received 2"):
        inception_score(videos, **kwargs)


# ------------------------------------------------------------------------------------------------------- FVD


def test_fvd_is_zero_for_identical_sets_at_standard_resolution(i3d_dir: Path) -> None:
    videos = _videos(2, 16, size=32, seed=10)  # resized to 224x224 inside, 16 frames, batch 2
    metric = FVD(weights_dir=i3d_dir, device=CPU)
    assert metric.higher_is_better is False and metric.protocol()["resolution"] == 224
    metric.update(generated=videos, reference=videos)
    mean_square_norm = float(metric.ref_outer.trace() / metric.ref_count)  # the scale of the features
    assert mean_square_norm > 0.0
    assert abs(float(metric.compute())) < 1e-6 * mean_square_norm


def test_fvd_streaming_equals_one_shot(i3d_dir: Path) -> None:
    ref, gen = _videos(2, 16, size=32, seed=11), _videos(2, 16, size=32, seed=12)
    kwargs = {"weights_dir": i3d_dir, "device": CPU, "resolution": 64}
    expected = float(fvd(gen, ref, **kwargs))
    assert expected > 0.0
    metric = FVD(**kwargs)
    for clip in ref:
        metric.update(reference=clip)
    metric.update(generated=gen)
    # Clip by clip vs two at a time, the float32 convolutions round differently (~1e-6 in the features).
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-4)


def test_fvd_clip_rules(i3d_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"generated: expected videos of at least 16 frames .*T=15"):
        fvd(_videos(2, 15), _videos(2, 16), weights_dir=i3d_dir, device=CPU)
    split = FVD(clips="split", weights_dir=i3d_dir, device=CPU, resolution=32)
    split.update(generated=_videos(1, 40, size=32))  # two 16-frame windows; the last 8 frames are dropped
    assert int(split.gen_count) == 2
    with pytest.raises(ValueError, match="clips: expected 'first' or 'split', received 'all'"):
        FVD(clips="all", weights_dir=i3d_dir)  # type: ignore[arg-type]


def test_fvd_without_detector_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="i3d_torchscript.pt") as info:
        fvd(_videos(2, 16), _videos(2, 16), weights_dir=tmp_path, device=CPU)
    assert "dropbox.com/s/ge9e5ujwgetktms" in str(info.value) and str(tmp_path) in str(info.value)


# ---------------------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("key, content", [
    ("alexnet", b"<html><body>404 Not Found</body></html>"),  # an error page saved under the weights' name
    ("inception", b"\x00not really weights" * 50),
    ("alexnet", b""),
])
def test_a_corrupt_pth_file_gives_one_clear_error(key: str, content: bytes, tmp_path: Path) -> None:
    spec = weights.REGISTRY[key]
    (tmp_path / spec.filename).write_bytes(content)
    load = {"alexnet": lambda: LPIPS(weights_dir=tmp_path, device=CPU),
            "inception": lambda: FID(weights_dir=tmp_path, device=CPU)}[key]
    with pytest.raises(weights.WeightsLoadError) as info:
        load()
    message = str(info.value)
    assert message.startswith(f"{tmp_path / spec.filename}: the {key} weights file")
    assert f"opusclip-track weights verify {key}" in message and f"opusclip-track weights download {key}" in message
    assert "weights_only" not in message and "Weights only" not in message  # never torch's advice to run pickles
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained torch traceback


def test_a_truncated_torchscript_detector_gives_one_clear_error(i3d_dir: Path, tmp_path: Path) -> None:
    good = (i3d_dir / "i3d_torchscript.pt").read_bytes()
    (tmp_path / "i3d_torchscript.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(weights.WeightsLoadError, match="failed reading zip archive") as info:
        fvd(_videos(2, 16), _videos(2, 16), weights_dir=tmp_path, device=CPU)
    assert "opusclip-track weights verify i3d" in str(info.value)


def test_eval_reports_a_corrupt_weights_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from opusclip_track.cli import main
    from opusclip_track.media import encode_mp4

    clip = (_videos(1, 2, size=32)[0].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    for folder in ("gen", "ref"):
        encode_mp4(clip, tmp_path / folder / "a.mp4", fps=8)
    bad = tmp_path / "weights"
    bad.mkdir()
    (bad / "alexnet-owt-7be5be79.pth").write_bytes(b"truncated")
    code = main(["eval", "--generated", str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"),
                 "--metrics", "lpips", "--weights-dir", str(bad), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("opusclip-track eval: error: ") and err.count("\n") == 1
    assert "opusclip-track weights verify alexnet" in err and "Traceback" not in err and "weights_only" not in err


def test_fid_equals_torchmetrics_only_on_uint8_frames_without_antialias(inception_dir: Path) -> None:
    """What fid.py's docstring claims: torchmetrics' FID gives our number with uint8 input and antialias=False;
    its default antialiased resize, and its truncating `(x * 255).byte()` for float input, give others."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    # Three frames per set, larger than Inception's 299x299 and detailed, so the resize filters differ.
    ref, gen = _noisy(_videos(3, 1, size=448, seed=3), 0.1), _noisy(_videos(3, 1, size=448, seed=4), 0.1)
    ours = float(fid(gen, ref, feature=64, weights_dir=inception_dir, device=CPU))
    path = str(inception_dir / "weights-inception-2015-12-05-6726825d.pth")

    def theirs(*, antialias: bool, normalize: bool) -> float:
        metric = FrechetInceptionDistance(feature=64, normalize=normalize, antialias=antialias,
                                          feature_extractor_weights_path=path)
        for videos, real in ((ref, True), (gen, False)):
            images = videos.flatten(0, 1)
            metric.update(images if normalize else (images * 255).round().to(torch.uint8), real=real)
        return float(metric.compute())

    assert theirs(antialias=False, normalize=False) == pytest.approx(ours, rel=1e-5)  # measured 6e-8 apart
    assert abs(theirs(antialias=True, normalize=False) / ours - 1) > 3e-2  # measured 12% lower
    assert abs(theirs(antialias=False, normalize=True) / ours - 1) > 3e-3  # measured 1.1% higher


# ------------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_on_cuda_the_states_start_beside_the_network_and_the_numbers_match_the_cpu(
        inception_dir: Path, i3d_dir: Path) -> None:
    # FID(device=None) runs the network on CUDA; its float64 statistics must live there too, or every update
    # copies the features to the host and sums 2048x2048 outer products on the CPU (3x slower than
    # torch-fidelity on an H200 before the fix).
    ref, gen = _videos(2, 16, size=32, seed=21), _videos(2, 16, size=32, seed=22)
    for make in (lambda d: FID(weights_dir=inception_dir, device=d),
                 lambda d: FVD(weights_dir=i3d_dir, device=d, resolution=64)):
        on_gpu, on_cpu = make(None), make(CPU)
        assert {state.device.type for state in (on_gpu.ref_sum, on_gpu.gen_outer, on_gpu.gen_count)} == {"cuda"}
        for metric in (on_gpu, on_cpu):
            metric.update(reference=ref, generated=gen)
        # cuDNN convolutions may use TF32 on the GPU: features agree to ~1e-3, the distances to a few percent.
        assert float(on_gpu.compute()) == pytest.approx(float(on_cpu.compute()), rel=5e-2)
    score = InceptionScore(weights_dir=inception_dir)
    score.update(gen)
    assert score.device.type == "cuda" and float(score.compute()[0]) >= 1.0
