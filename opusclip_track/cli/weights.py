"""`opusclip-track weights list|download|verify`: see, fetch and check the learned metrics' weights files.

`add_weights_parser(subparsers)` registers the commands on the main parser's subparsers (`cli/__init__.py`);
each sets `func`, a handler taking the parsed `argparse.Namespace` and returning the exit status.

Example:
    opusclip-track weights list
    opusclip-track weights download inception alexnet            # into the torch hub cache
    opusclip-track weights download --all --dest /shared/weights  # then OPUSCLIP_WEIGHTS_DIR=/shared/weights
    opusclip-track weights verify --weights-dir /shared/weights
    opusclip-track weights verify --metrics lpips,fvd           # only what these metrics load

`verify` requires some files and exits 1 when one of them is missing; see `VERIFY_RULES`.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
from pathlib import Path
from typing import Any

from opusclip_track.cli._types import metric_list
from opusclip_track.metrics.names import DEFAULT_METRICS, weights_keys
from opusclip_track.metrics.weights import (
    REGISTRY,
    WeightsChecksumError,
    WeightsFile,
    download_weights,
    find_weights,
    missing_message,
    search_dirs,
    sha256_file,
    verify_weights,
)

VERIFY_RULES = (
    "Which files verify requires (a missing one exits 1): the files named as KEYs, the files the metrics named "
    "with --metrics load, every file with --all, and with none of these the files of the default learned "
    "metrics (LPIPS, FID, IS, FVD: alexnet, inception, i3d). Other files present are verified too; absent, they "
    "are reported as optional. A checksum mismatch always exits 1.")


def add_weights_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `weights` command (with `list`, `download`, `verify`) to an argparse subparsers object.

    Returns:
        The `weights` parser.
    """
    parser = subparsers.add_parser("weights", help="list, download and verify pretrained weights (FID, IS, "
                                   "LPIPS, FVD)", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="weights_command", required=True, metavar="{list,download,verify}")

    listing = commands.add_parser("list", help="the known files, what uses them and where they are")
    _add_weights_dir(listing)
    listing.set_defaults(func=run_list)

    download = commands.add_parser("download", help="download files (verified against their checksums)")
    _add_keys(download)
    download.add_argument("--dest", type=Path, default=None,
                          help="target directory (default: --weights-dir if given, else the torch hub cache)")
    download.add_argument("--mirror", default=None,
                          help="base URL holding the files under their file names, instead of the canonical URLs")
    download.add_argument("--force", action="store_true", help="download even when the file is already present")
    _add_weights_dir(download)
    download.set_defaults(func=run_download)

    verify = commands.add_parser("verify", help="check files on disk against the registry's checksums; exit 1 "
                                 "when one is corrupt or a required one is missing",
                                 description=VERIFY_RULES)
    _add_keys(verify)
    _add_weights_dir(verify)
    verify.set_defaults(func=run_verify)
    return parser


def _add_weights_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="directory searched first (then $OPUSCLIP_WEIGHTS_DIR, then the torch hub cache)")


def _add_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("keys", nargs="*", metavar="KEY", help=f"files to act on, among {', '.join(REGISTRY)}")
    parser.add_argument("--metrics", type=metric_list, default=(), metavar="LIST",
                        help="the files these metrics load, e.g. lpips,fid,fvd (comma-separated)")
    parser.add_argument("--all", action="store_true", help="act on every known file")


def _selected(args: argparse.Namespace) -> tuple[list[WeightsFile], set[str]] | None:
    """The registry entries to act on and the keys of the required ones; None (after saying why) if bad."""
    unknown = [k for k in args.keys if k not in REGISTRY]
    if unknown:
        print(f"keys: expected among {', '.join(REGISTRY)}, received {', '.join(unknown)}", file=sys.stderr)
        return None
    if args.all:
        return list(REGISTRY.values()), set(REGISTRY)
    named = list(dict.fromkeys([*args.keys, *weights_keys(args.metrics)]))
    if named:
        return [REGISTRY[k] for k in named], set(named)
    if args.metrics:  # only metrics without weights (psnr, ssim, flicker): nothing to act on
        return [], set()
    if args.weights_command == "download":
        print("keys: expected one or more of " + ", ".join(REGISTRY) + ", --metrics or --all, received none",
              file=sys.stderr)
        return None
    return list(REGISTRY.values()), set(weights_keys(DEFAULT_METRICS))


def run_list(args: argparse.Namespace) -> int:
    """Print each known file: key, file name, users, where it was found (or MISSING), URL and checksum."""
    print("search order: " + " -> ".join(str(d) for d in search_dirs(args.weights_dir)))
    for spec in REGISTRY.values():
        path = find_weights(spec, args.weights_dir)
        checksum = spec.sha256 or (f"{spec.hash_prefix}..." if spec.hash_prefix else "none published")
        size = f"{spec.size_mb:.0f} MB" if spec.size_mb else "size unknown"
        print(f"{spec.key:<10} {spec.filename}  ({', '.join(spec.used_by)}; {size})\n"
              f"           {'found: ' + str(path) if path else 'MISSING'}\n"
              f"           url: {spec.url}\n           sha256: {checksum}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Download the selected files that are not present yet; 1 if any failed or did not verify."""
    selected = _selected(args)
    if selected is None:
        return 2
    specs, _ = selected
    dest = args.dest if args.dest is not None else args.weights_dir
    status = 0
    for spec in specs:
        present = find_weights(spec, args.weights_dir)
        if present is not None and not args.force:
            print(f"{spec.key}: already present at {present}")
            continue
        url = f"{args.mirror.rstrip('/')}/{spec.filename}" if args.mirror else None
        try:
            path = download_weights(spec, dest, url=url, progress=sys.stderr.isatty())
        except WeightsChecksumError as err:
            print(f"{spec.key}: {err}", file=sys.stderr)
            status = 1
        except (urllib.error.URLError, OSError) as err:
            print(f"{spec.key}: " + missing_message(spec, args.weights_dir, reason=f"download failed: {err}"),
                  file=sys.stderr)
            status = 1
        else:
            print(f"{spec.key}: downloaded to {path}")
    return status


def run_verify(args: argparse.Namespace) -> int:
    """Hash the selected files found on disk; 1 on a mismatch or when a required file is missing."""
    selected = _selected(args)
    if selected is None:
        return 2
    specs, required = selected
    missing: list[str] = []
    status = 0
    for spec in specs:
        path = find_weights(spec, args.weights_dir)
        if path is None:
            if spec.key in required:
                print(f"{spec.key}: MISSING ({spec.filename}), required by {', '.join(spec.used_by)}")
                missing.append(spec.key)
            else:
                print(f"{spec.key}: not present ({spec.filename}); optional: only {', '.join(spec.used_by)} "
                      "loads it (name it or pass --all to require it)")
            continue
        try:
            digest = verify_weights(spec, path)
        except WeightsChecksumError as err:
            print(f"{spec.key}: MISMATCH: {err}", file=sys.stderr)
            status = 1
            continue
        print(f"{spec.key}: OK {path}" if digest else f"{spec.key}: present at {path}, sha256 "
              f"{sha256_file(path)} (no published checksum to verify against)")
    if missing:
        print(f"weights verify: {len(missing)} required file(s) missing: {', '.join(missing)}; fetch them with "
              f"`opusclip-track weights download {' '.join(missing)}` (searched: "
              f"{', '.join(str(d) for d in search_dirs(args.weights_dir))})", file=sys.stderr)
        status = 1
    return status
