"""Video-metric speed and agreement: ours against scikit-image per-frame loops, torchmetrics, `lpips` and
torch-fidelity.

One batch of 16 frames of 3x128x128 (a `(1, 16, 3, 128, 128)` video: a moving pattern and a blurred, noisy
copy), measured in one process, contenders interleaved round by round so that load from other processes hits
them alike. Reports frames/s (best of the rounds), the speed ratio ours / peer, and the largest per-frame
absolute difference from scikit-image (SSIM, PSNR) or from the `lpips` package (LPIPS).

FID and FVD feature extraction (`--frechet-rounds`, on the same `--device`; on a GPU: `--device cuda`): frames/s
of our streaming `FID.update` against torch-fidelity's `FeatureExtractorInceptionV3` called on the uint8 frames and
torchmetrics' `FrechetInceptionDistance.update` (same network file, `antialias=False`), and of our `FVD.update`
against the I3D detector called directly on clips already resized to 224x224 (what the reference FVD code times;
neither torchmetrics nor torch-fidelity has FVD). The networks are random-init copies of the real architectures
written to a temporary directory (no download): a speed figure; the agreement column is the largest feature
difference relative to the largest feature.

    python benchmarks/bench_metrics.py [--rounds 11] [--device cpu] [--threads 1] [--json out.json]
    python benchmarks/bench_metrics.py --device cuda --frechet-frames 64 --frechet-clips 8   # on a GPU

On a shared machine absolute numbers move with the load; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from opusclip_track.metrics import psnr_per_frame, ssim_per_frame
from opusclip_track.metrics.weights import REGISTRY

FRAMES, CHANNELS, SIZE = 16, 3, 128


@dataclass
class Row:
    metric: str
    implementation: str
    frames_per_s: float
    ours_speedup: float  # ours frames/s divided by this row's frames/s
    max_abs_diff: float | None  # per frame, against the row's reference implementation
    diff_against: str


def make_pair(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A moving pattern and a blurred, noisy copy: float32 (1, T, C, H, W) in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    frames = torch.stack([torch.stack([0.5 + 0.3 * torch.sin(9 * xx + 0.3 * t + c) * torch.cos(7 * yy - 0.2 * t)
                                       + 0.1 * torch.sin(31 * xx * yy) for c in range(CHANNELS)])
                          for t in range(FRAMES)]).clamp(0, 1)
    blurred = TF.gaussian_blur(frames, kernel_size=5, sigma=1.0)
    noisy = (blurred + 0.04 * torch.randn(frames.shape, generator=gen)).clamp(0, 1)
    return noisy.unsqueeze(0).to(device), frames.unsqueeze(0).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fns: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> dict[str, float]:
    """Best wall time of each function over `rounds`, contenders interleaved within each round."""
    for fn in fns.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _sk_frames(gen: np.ndarray, ref: np.ndarray, score: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    return np.array([score(gen[t], ref[t]) for t in range(gen.shape[0])])


def _sk_ssim(g: np.ndarray, r: np.ndarray) -> float:
    return structural_similarity(g, r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=0)


def _sk_psnr(g: np.ndarray, r: np.ndarray) -> float:
    return peak_signal_noise_ratio(r, g, data_range=1.0)


def bench_ssim_psnr(gen: torch.Tensor, ref: torch.Tensor, rounds: int, device: torch.device) -> list[Row]:
    gen_np, ref_np = gen[0].double().cpu().numpy(), ref[0].double().cpu().numpy()  # scikit-image's own input
    gen_f, ref_f = gen[0], ref[0]  # (T, C, H, W) frames, torchmetrics' input
    contenders: dict[str, dict[str, Callable[[], torch.Tensor | np.ndarray]]] = {
        "SSIM": {
            "opusclip_track (ours)": lambda: ssim_per_frame(gen, ref),
            "scikit-image loop (Gaussian)": lambda: _sk_frames(gen_np, ref_np, _sk_ssim),
            "torchmetrics": lambda: tm_ssim(gen_f, ref_f, data_range=1.0, reduction="none"),
        },
        "PSNR": {
            "opusclip_track (ours)": lambda: psnr_per_frame(gen, ref),
            "scikit-image loop": lambda: _sk_frames(gen_np, ref_np, _sk_psnr),
            "torchmetrics": lambda: tm_psnr(gen_f, ref_f, data_range=1.0, reduction="none", dim=(1, 2, 3)),
        },
    }
    rows: list[Row] = []
    for metric, fns in contenders.items():
        seconds = best_seconds(fns, rounds, device)
        reference = np.asarray(fns[next(n for n in fns if n.startswith("scikit-image"))]())
        ours_fps = FRAMES / seconds["opusclip_track (ours)"]
        for name, fn in fns.items():
            values = fn()
            values = values.double().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
            rows.append(Row(metric, name, FRAMES / seconds[name], ours_fps / (FRAMES / seconds[name]),
                            float(np.abs(values - reference).max()), "scikit-image"))
    return rows


def bench_lpips(gen: torch.Tensor, ref: torch.Tensor, rounds: int, device: torch.device) -> list[Row]:
    """LPIPS (AlexNet) through our metric's frame path against calling the `lpips` package on the batch.

    Pretrained backbone weights cannot be assumed here, so both use the same network with a RANDOM-INIT
    backbone (`pnet_rand=True`; the package's calibrated linear heads): a speed figure, not a score.
    """
    try:
        import lpips as lpips_package

        from opusclip_track.metrics.lpips import _lpips_frames
    except ImportError as err:
        print(f"LPIPS skipped: {err}")
        return []
    torch.manual_seed(0)
    net = lpips_package.LPIPS(net="alex", pnet_rand=True, verbose=False).eval().to(device)
    frames_gen, frames_ref = gen[0] * 2 - 1, ref[0] * 2 - 1

    def package_batch() -> torch.Tensor:
        with torch.no_grad():
            return net(frames_gen, frames_ref).flatten()

    def package_loop() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([net(frames_gen[t:t + 1], frames_ref[t:t + 1]).flatten() for t in range(FRAMES)])

    fns: dict[str, Callable[[], torch.Tensor]] = {
        "opusclip_track (ours, random-init backbone)": lambda: _lpips_frames(net, gen, ref, frame_batch=64),
        "lpips package, batch of 16 (random-init)": package_batch,
        "lpips package, frame loop (random-init)": package_loop,
    }
    seconds = best_seconds(fns, rounds, device)
    reference = package_batch().double().cpu().numpy()
    ours_fps = FRAMES / seconds["opusclip_track (ours, random-init backbone)"]
    return [Row("LPIPS", name, FRAMES / seconds[name], ours_fps / (FRAMES / seconds[name]),
                float(np.abs(fn().double().cpu().numpy().ravel() - reference).max()), "lpips package")
            for name, fn in fns.items()]


def write_random_networks(directory: str) -> None:
    """Random-init Inception-v3 (torch-fidelity's FID network) and I3D (the FVD detector) under the real file
    names (`metrics._stand_ins`), so the weights resolver, torch-fidelity and torchmetrics all load them as they
    would the real ones."""
    from opusclip_track.metrics._stand_ins import write_random_i3d, write_random_inception

    torch.manual_seed(0)
    write_random_inception(directory, torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    write_random_i3d(directory, torch.rand(2, 3, 16, 64, 64) * 2 - 1)


def _relative_diff(ours: torch.Tensor, reference: torch.Tensor) -> float:
    scale = reference.abs().max().clamp_min(1e-12)
    return float((ours.double().cpu() - reference.double().cpu()).abs().max() / scale.cpu())


def bench_frechet(rounds: int, device: torch.device, frames: int, clips: int) -> list[Row]:
    """FID and FVD feature extraction: ours against torch-fidelity, torchmetrics and the raw I3D detector."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torchmetrics.image.fid import FrechetInceptionDistance

    from opusclip_track.metrics import FID, FVD
    from opusclip_track.metrics.fid import _inception_features, load_inception
    from opusclip_track.metrics.fvd import _i3d_input, load_i3d

    gen = torch.Generator().manual_seed(1)
    videos = torch.rand(1, frames, 3, 64, 64, generator=gen).to(device)  # FID: every frame is an image
    uint8_frames = (videos[0] * 255).round().to(torch.uint8)
    fvd_videos = torch.rand(clips, 16, 3, 64, 64, generator=gen).to(device)  # FVD: 16-frame clips
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as weights_dir:
        write_random_networks(weights_dir)
        path = f"{weights_dir}/{REGISTRY['inception'].filename}"
        fidelity = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=path).eval().to(device)
        theirs = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=path, antialias=False).to(device)
        ours = FID(weights_dir=weights_dir, device=device)

        def fidelity_features() -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([fidelity(uint8_frames[i:i + 32])[0] for i in range(0, frames, 32)])

        fns: dict[str, Callable[[], object]] = {
            "opusclip_track FID.update (ours)": lambda: ours.update(generated=videos),
            "torch-fidelity InceptionV3 features": fidelity_features,
            "torchmetrics FrechetInceptionDistance.update": lambda: theirs.update(uint8_frames, real=False),
        }
        seconds = best_seconds(fns, rounds, device)
        diff = _relative_diff(_inception_features(load_inception(weights_dir, device), videos, frame_batch=32)["2048"],
                              fidelity_features())
        rows += [Row("FID (3x64x64 -> 299)", name, frames / seconds[name],
                     seconds[name] / seconds["opusclip_track FID.update (ours)"],
                     diff if name.startswith("opusclip") else None, "torch-fidelity") for name in fns]
        detector, fvd = load_i3d(weights_dir, device), FVD(weights_dir=weights_dir, device=device)
        resized = _i3d_input(fvd_videos, 224)  # (N, 3, 16, 224, 224) in [-1, 1]

        def detector_features() -> torch.Tensor:
            with torch.inference_mode():
                return torch.cat([detector(resized[i:i + 4], rescale=False, resize=False, return_features=True)
                                  for i in range(0, clips, 4)])

        fns = {"opusclip_track FVD.update (ours)": lambda: fvd.update(generated=fvd_videos),
               "I3D detector on resized clips": detector_features}
        seconds = best_seconds(fns, rounds, device)
        fvd.reset()
        fvd.update(generated=fvd_videos)
        diff = _relative_diff(fvd.gen_sum / clips, detector_features().double().mean(dim=0))
        rows += [Row("FVD (16x3x64x64 -> 224)", name, clips * 16 / seconds[name],
                     seconds[name] / seconds["opusclip_track FVD.update (ours)"],
                     diff if name.startswith("opusclip") else None, "I3D detector (mean feature)") for name in fns]
    return rows


def format_rows(rows: list[Row]) -> str:
    header = ("metric", "implementation", "frames/s", "ours is", "max |diff|", "vs")
    cells = [header] + [(r.metric, r.implementation, f"{r.frames_per_s:,.0f}", f"{r.ours_speedup:.2f}x",
                         "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}", r.diff_against) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for i, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if j in (2, 3, 4) else c.ljust(w)
                               for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _thread_settings(text: str) -> list[int]:
    default = torch.get_num_threads()
    return [default if part.strip() == "default" else int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds per contender (best is kept)")
    parser.add_argument("--device", default="cpu", help="device for ours, torchmetrics and lpips")
    parser.add_argument("--threads", type=_thread_settings, default="1",
                        help="torch intra-op thread counts, one table each, e.g. '1,default' (default: 1, like "
                        "with like against single-threaded scikit-image; on an oversubscribed machine torch's "
                        "multi-threaded small ops stall and the ratios measure the load, not the code)")
    parser.add_argument("--json", metavar="PATH", help="write the figures here")
    parser.add_argument("--no-lpips", action="store_true", help="skip the LPIPS comparison")
    parser.add_argument("--frechet-rounds", type=int, default=3,
                        help="timed rounds of the FID/FVD feature extraction (0 skips it; ~10 s a round on a CPU)")
    parser.add_argument("--frechet-frames", type=int, default=16, help="frames (images) per FID update")
    parser.add_argument("--frechet-clips", type=int, default=2, help="16-frame clips per FVD update")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen, ref = make_pair(device)
    started = time.perf_counter()
    runs = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows = bench_ssim_psnr(gen, ref, args.rounds, device)
        if not args.no_lpips:
            rows += bench_lpips(gen, ref, args.rounds, device)
        if args.frechet_rounds > 0:
            rows += bench_frechet(args.frechet_rounds, device, args.frechet_frames, args.frechet_clips)
        print(f"\n{FRAMES} frames of {CHANNELS}x{SIZE}x{SIZE} as a (1, {FRAMES}, {CHANNELS}, {SIZE}, {SIZE}) video "
              f"on {device}, torch {torch.__version__}, {threads} thread(s); best of {args.rounds} rounds")
        print(format_rows(rows))
        runs.append({"threads": threads, "rows": [asdict(r) for r in rows]})
    print(f"('ours is' = our frames/s over that row's; {time.perf_counter() - started:.0f} s in all)")
    if args.json:
        figures = {"frames": FRAMES, "frame_shape": [CHANNELS, SIZE, SIZE], "device": str(device),
                   "torch": torch.__version__, "rounds": args.rounds, "runs": runs}
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
