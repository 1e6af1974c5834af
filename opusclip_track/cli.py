"""`opusclip-track`: the command line.

Each subcommand is registered by one small function that adds its parser and sets `func`, a handler taking
the parsed arguments and returning the exit code: `eval` here, `weights` in `metrics/weights_cli.py`,
`runs` and `sync` in `runs_cli.py`.

    opusclip-track eval --generated samples/ --reference real/ --metrics psnr,ssim,flicker --json scores.json
    opusclip-track weights list | download --all | verify
    opusclip-track runs list | show RUN | compare RUN RUN ...
    opusclip-track sync RUN --to wandb
    python -m opusclip_track.cli eval ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opusclip_track.metrics.collection import METRIC_NAMES, MetricName, check_metric_names
from opusclip_track.metrics.weights_cli import add_weights_parser
from opusclip_track.runs_cli import add_runs_parser

PROG = "opusclip-track"
# Errors a user can fix (bad paths, unpaired or unreadable files, missing weights): a message, not a traceback.
_USER_ERRORS = (ValueError, OSError)


# ----------------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------------


def _metric_list(text: str) -> tuple[MetricName, ...]:
    try:
        return check_metric_names([m.strip() for m in text.split(",") if m.strip()], name="--metrics")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _frame_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 128x128, received {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected positive HEIGHTxWIDTH, received {text!r}")
    return height, width


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _add_eval(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval", help="score generated videos against references (PSNR, SSIM, LPIPS, FID, IS, FVD, flicker)",
        description="Pair the videos of two folders by file name and print their video-quality metrics.")
    parser.add_argument("--generated", required=True, type=Path, metavar="DIR", help="folder of generated videos")
    parser.add_argument("--reference", required=True, type=Path, metavar="DIR",
                        help="folder of reference videos with the same file names (any extension)")
    parser.add_argument("--metrics", type=_metric_list, default=("psnr", "ssim", "flicker"),
                        help=f"comma-separated, out of {','.join(METRIC_NAMES)} (default: psnr,ssim,flicker)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the scores and protocol here")
    parser.add_argument("--num-frames", type=_positive_int, metavar="N", help="read the first N frames of each")
    parser.add_argument("--size", type=_frame_size, metavar="HxW", help="resize every frame, e.g. 128x128")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="pairs per metric update")
    parser.add_argument("--weights-dir", type=Path, metavar="DIR", help="pretrained weights for lpips/fid/is/fvd")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Handler of `eval`: score the folders, print a table, optionally write JSON."""
    from opusclip_track.evaluate import evaluate_folders  # keeps `--help` fast

    report = evaluate_folders(args.generated, args.reference, metrics=args.metrics, num_frames=args.num_frames,
                              size=args.size, batch_size=args.batch_size, weights_dir=args.weights_dir,
                              device=args.device, progress=not args.no_progress)
    print(format_table(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def format_table(report: dict[str, Any]) -> str:
    """The `eval` report as an aligned text table: metric, value, which direction is better."""
    rows = [(key, f"{value:.4f}", _direction(key)) for key, value in report["metrics"].items()]
    widths = [max(len(r[i]) for r in [("metric", "value", "better"), *rows]) for i in range(3)]
    lines = ["  ".join(("metric".ljust(widths[0]), "value".rjust(widths[1]), "better"))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join((k.ljust(widths[0]), v.rjust(widths[1]), d)) for k, v, d in rows]
    proto = report["protocol"]
    resolution = "x".join(map(str, proto["resolution"] or []))
    lines.append(f"{len(report['pairs'])} pairs, {proto['frames']} frames, {resolution} px")
    return "\n".join(lines)


def _direction(key: str) -> str:
    from opusclip_track.metrics.collection import higher_is_better

    better = higher_is_better(key)
    return "0 best" if better is None else ("higher" if better else "lower")


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The `opusclip-track` parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="Experiment tracking and evaluation for "
                                     "video-generation research.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_eval(subparsers)
    add_weights_parser(subparsers)
    add_runs_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 a reported error, 2 a usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except _USER_ERRORS as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
