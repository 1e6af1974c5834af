"""`opusclip-track eval` on real video files written with PyAV: pairing, table, JSON, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from opusclip_track.cli import main
from opusclip_track.media import encode_gif, encode_mp4, read_video
from opusclip_track.metrics import flicker, psnr, psnr_per_frame, ssim, ssim_per_frame, temporal_diff

FPS = 8.0


def clip(seed: int, steps: int = 6, size: tuple[int, int] = (48, 48), noise: float = 0.0) -> np.ndarray:
    """A moving colour pattern, uint8 (T, H, W, 3), optionally with per-frame noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    phase = rng.uniform(0, 6.28, 3)
    frames = np.stack([np.stack([0.5 + 0.35 * np.sin(6 * xx + 0.5 * t + phase[c]) * np.cos(4 * yy) for c in range(3)],
                                axis=-1) for t in range(steps)])
    frames = frames + noise * rng.standard_normal(frames.shape)
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def write_folders(root: Path, names: tuple[str, ...] = ("a", "b", "c")) -> tuple[Path, Path]:
    generated, reference = root / "generated", root / "reference"
    for i, name in enumerate(names):
        encode_mp4(clip(i), reference / f"{name}.mp4", FPS)
        encode_mp4(clip(i, noise=0.05), generated / f"{name}.mp4", FPS)
    return generated, reference


def decoded(folder: Path, names: tuple[str, ...]) -> torch.Tensor:
    return torch.stack([read_video(folder / f"{n}.mp4")[0] for n in names])


def test_eval_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated, reference = write_folders(tmp_path)
    out = tmp_path / "scores" / "eval.json"
    code = main(["eval", "--generated", str(generated), "--reference", str(reference), "--json", str(out),
                 "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for line in ("video/psnr", "video/ssim", "video/flicker", "video/temporal_diff", "3 pairs, 6 frames, 48x48 px"):
        assert line in captured.out
    assert "3/3" in captured.err  # the tqdm progress bar
    report = json.loads(out.read_text())
    assert report["pairs"] == ["a", "b", "c"]
    assert report["protocol"]["resolution"] == [48, 48]
    gen, ref = decoded(generated, ("a", "b", "c")), decoded(reference, ("a", "b", "c"))
    assert report["metrics"]["video/psnr"] == pytest.approx(float(psnr(gen, ref)), abs=1e-9)
    assert report["metrics"]["video/ssim"] == pytest.approx(float(ssim(gen, ref)), abs=1e-9)
    assert report["metrics"]["video/flicker"] == pytest.approx(float(flicker(gen, ref)), abs=1e-9)
    assert 20 < report["metrics"]["video/psnr"] < 35  # 5% noise through H.264: a plausible, not a perfect, score
    assert f"{report['metrics']['video/psnr']:.4f}" in captured.out


def test_eval_json_has_per_clip_scores_and_per_frame_curves(tmp_path: Path) -> None:
    generated, reference = write_folders(tmp_path)
    out = tmp_path / "eval.json"
    code = main(["eval", "--generated", str(generated), "--reference", str(reference), "--json", str(out),
                 "--batch-size", "2", "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    names = ("a", "b", "c")
    gen, ref = decoded(generated, names), decoded(reference, names)
    for key, per_frame in (("video/psnr", psnr_per_frame), ("video/ssim", ssim_per_frame)):
        assert report["curves"][key] == pytest.approx(per_frame(gen, ref).tolist(), abs=1e-9)  # (T,) over clips
    assert [c["name"] for c in report["clips"]] == list(names)
    for i, entry in enumerate(report["clips"]):
        assert entry["generated"] == str(generated / f"{names[i]}.mp4")
        assert entry["reference"] == str(reference / f"{names[i]}.mp4")
        one_gen, one_ref = gen[i], ref[i]
        assert entry["metrics"] == pytest.approx({
            "video/psnr": float(psnr(one_gen, one_ref)), "video/ssim": float(ssim(one_gen, one_ref)),
            "video/flicker": float(flicker(one_gen, one_ref)),
            "video/temporal_diff": float(temporal_diff(one_gen, one_ref))}, abs=1e-9)
        assert entry["curves"]["video/psnr"] == pytest.approx(psnr_per_frame(one_gen, one_ref).tolist(), abs=1e-9)
        assert len(entry["curves"]["video/ssim"]) == 6
    assert report["metrics"]["video/psnr"] == pytest.approx(
        sum(c["metrics"]["video/psnr"] for c in report["clips"]) / 3, abs=1e-9)  # equal-length clips


def test_eval_pairs_by_name_across_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated, reference = tmp_path / "gen", tmp_path / "ref"
    generated.mkdir()
    (generated / "clip.gif").write_bytes(encode_gif(clip(0), FPS))
    encode_mp4(clip(0), reference / "clip.mp4", FPS)
    (reference / "notes.txt").write_text("not a video: ignored")
    code = main(["eval", "--generated", str(generated), "--reference", str(reference), "--metrics", "psnr",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "video/psnr" in captured.out and "video/ssim" not in captured.out
    assert captured.err == ""


def test_unpaired_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated, reference = write_folders(tmp_path, names=("a", "b"))
    encode_mp4(clip(7), generated / "extra.mp4", FPS)
    encode_mp4(clip(8), reference / "lonely.mp4", FPS)
    code = main(["eval", "--generated", str(generated), "--reference", str(reference)])
    err = capsys.readouterr().err
    assert code == 1
    assert "opusclip-track eval: error: generated/reference: expected the same video names in both folders" in err
    assert "1 only in" in err and "[extra]" in err and "[lonely]" in err


def test_mismatched_sizes_are_an_error_until_resized(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated, reference = tmp_path / "gen", tmp_path / "ref"
    encode_mp4(clip(0, size=(48, 48), noise=0.05), generated / "x.mp4", FPS)
    encode_mp4(clip(0, size=(32, 32)), reference / "x.mp4", FPS)
    args = ["eval", "--generated", str(generated), "--reference", str(reference), "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "x.mp4" in err and "expected the same (T, C, H, W) as generated" in err
    assert "(6, 3, 48, 48), received (6, 3, 32, 32)" in err
    assert main([*args, "--size", "32x32"]) == 0
    assert "1 pairs, 6 frames, 32x32 px" in capsys.readouterr().out


def test_different_lengths_need_num_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated, reference = tmp_path / "gen", tmp_path / "ref"
    for name, steps in (("long", 8), ("short", 5)):
        encode_mp4(clip(1, steps=steps, noise=0.05), generated / f"{name}.mp4", FPS)
        encode_mp4(clip(1, steps=steps), reference / f"{name}.mp4", FPS)
    args = ["eval", "--generated", str(generated), "--reference", str(reference), "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "short.mp4" in err and "expected the (T, C, H, W) of 'long.mp4' (8, 3, 48, 48)" in err
    assert "--num-frames" in err
    assert main([*args, "--num-frames", "5"]) == 0
    assert "2 pairs, 5 frames" in capsys.readouterr().out


def test_unreadable_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated, reference = write_folders(tmp_path, names=("ok",))
    (generated / "broken.mp4").write_bytes(b"\x00not really a video" * 50)
    encode_mp4(clip(3), reference / "broken.mp4", FPS)
    code = main(["eval", "--generated", str(generated), "--reference", str(reference), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"generated video {str(generated / 'broken.mp4')!r} could not be read" in err


@pytest.mark.parametrize("argv, code, message", [
    (["eval", "--generated", "missing-dir", "--reference", "."], 1,
     "generated: expected a directory of video files, received 'missing-dir'"),
    (["eval", "--generated", ".", "--reference", "."], 1, "generated: expected video files"),
    (["eval", "--generated", ".", "--reference", ".", "--metrics", "psnr,bleu"], 2, "received ['psnr', 'bleu']"),
    (["eval", "--generated", ".", "--reference", ".", "--size", "big"], 2, "expected HEIGHTxWIDTH"),
    (["eval", "--generated", ".", "--reference", ".", "--num-frames", "0"], 2, "expected a positive integer"),
    (["eval", "--generated", "."], 2, "the following arguments are required: --reference"),
    ([], 2, "usage: opusclip-track"),
])
def test_usage_errors(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    assert message in capsys.readouterr().err


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "eval" in out and "weights" in out


def test_python_dash_m_runs_eval(tmp_path: Path) -> None:
    generated, reference = write_folders(tmp_path, names=("a",))
    out = tmp_path / "m.json"
    result = subprocess.run([sys.executable, "-m", "opusclip_track.cli", "eval", "--generated", str(generated),
                             "--reference", str(reference), "--metrics", "ssim", "--json", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "video/ssim" in result.stdout
    assert set(json.loads(out.read_text())["metrics"]) == {"video/ssim"}
