"""`opusclip-track eval`: score a folder of generated videos against a folder of references.

Example:
    opusclip-track eval --generated samples/ --reference real/ --metrics psnr,ssim,flicker --json scores.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from opusclip_track._text import format_table
from opusclip_track.cli._types import frame_size, metric_list, positive_int
from opusclip_track.metrics.names import METRIC_NAMES


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `eval` command to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "eval", help="score generated videos against references (PSNR, SSIM, LPIPS, FID, IS, FVD, flicker)",
        description="Pair the videos of two folders by file name and print their video-quality metrics.")
    parser.add_argument("--generated", required=True, type=Path, metavar="DIR", help="folder of generated videos")
    parser.add_argument("--reference", required=True, type=Path, metavar="DIR",
                        help="folder of reference videos with the same file names (any extension)")
    parser.add_argument("--metrics", type=metric_list, default=("psnr", "ssim", "flicker"),
                        help=f"comma-separated, out of {','.join(METRIC_NAMES)} (default: psnr,ssim,flicker)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the scores and protocol here")
    parser.add_argument("--num-frames", type=positive_int, metavar="N", help="read the first N frames of each")
    parser.add_argument("--size", type=frame_size, metavar="HxW", help="resize every frame, e.g. 128x128")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="pairs per metric update")
    parser.add_argument("--weights-dir", type=Path, metavar="DIR", help="pretrained weights for lpips/fid/is/fvd")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """Handler of `eval`: score the folders, print a table, optionally write JSON."""
    # Imported when the command runs, not when the parser is built: it loads torch and the metrics (~3 s),
    # which `--help` and the other commands do not need.
    from opusclip_track.evaluate import evaluate_folders

    report = evaluate_folders(args.generated, args.reference, metrics=args.metrics, num_frames=args.num_frames,
                              size=args.size, batch_size=args.batch_size, weights_dir=args.weights_dir,
                              device=args.device, progress=not args.no_progress)
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The `eval` report as an aligned text table: metric, value, which direction is better."""
    from opusclip_track.metrics.collection import higher_is_better  # loaded already by the evaluation

    rows = [[key, f"{value:.4f}", _direction(higher_is_better(key))] for key, value in report["metrics"].items()]
    proto = report["protocol"]
    resolution = "x".join(map(str, proto["resolution"] or []))
    footer = f"{len(report['pairs'])} pairs, {proto['frames']} frames, {resolution} px"
    return format_table(["metric", "value", "better"], rows, align="<><") + "\n" + footer


def _direction(better: bool | None) -> str:
    return "0 best" if better is None else ("higher" if better else "lower")
