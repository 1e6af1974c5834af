"""Media, encoded on the store's worker: clips, images, figures and tables become files under `media/` and bytes
for the backends, once, whatever the number of backends.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import media
from ._files import atomic_write_bytes
from ._host_copy import HostCopy
from .records import Media, Record

log = logging.getLogger("opusclip_track")


class MediaEncoder:
    """Turns a `Media` record's payload into files under `<run_dir>/media/` and bytes for the backends.

    The payload of a clip or an image (and a clip's reference) is the `HostCopy` the caller's thread took.

    Video: uint8 frames -> MP4 (H.264, kept on disk, what W&B uploads) and an animated GIF (what TensorBoard
    plays in its Images tab). Image and figure: PNG. Table: plain cells, kept as the payload, and JSON on disk.

    A payload that cannot be converted raises (the record is skipped as bad). A file that cannot be written
    (media folder not writable, full disk) does not lose the record: `record.error` says why, its store row
    keeps it, and the backends still get what was encoded in memory. Counted in `write_errors`, reported once.
    """

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir
        self.write_errors = 0
        # Stems already used (files of a resumed run included): one listing here, not one per clip.
        self._used = {p.stem for p in media_dir.iterdir()} if media_dir.is_dir() else set()

    def __call__(self, record: Media) -> None:
        stem = self._stem(record)
        if record.kind == "video":
            opts = record.options
            reference: HostCopy | None = opts.pop("reference")
            frames = media.video_to_frames(record.payload.wait(), layout=opts.pop("layout"),
                                           value_range=opts.pop("value_range"),
                                           reference=None if reference is None else reference.wait())
            fps = opts["fps"]
            record.encoded["gif"] = media.encode_gif(frames, fps)
            opts.update(frames=int(frames.shape[0]), height=int(frames.shape[1]), width=int(frames.shape[2]))
            self._file(record, "mp4", lambda: media.encode_mp4(frames, self.media_dir / f"{stem}.mp4", fps))
        elif record.kind in ("image", "figure"):
            if record.kind == "figure":
                array = media.render_figure(record.payload, close=record.options.pop("close"))
            else:
                opts = record.options
                array = media.image_to_array(record.payload.wait(), layout=opts.pop("layout"),
                                             value_range=opts.pop("value_range"), nrow=opts.pop("nrow"))
            png = media.encode_png(array)
            record.encoded["png"] = png
            record.options.update(height=int(array.shape[0]), width=int(array.shape[1]))
            self._file(record, "png", lambda: atomic_write_bytes(self.media_dir / f"{stem}.png", png))
        elif record.kind == "table":
            columns, rows = record.payload
            rows = [[_plain_cell(v) for v in row] for row in rows]
            record.payload = (columns, rows)
            data = json.dumps({"columns": list(columns), "rows": rows}, default=str).encode()
            self._file(record, "json", lambda: atomic_write_bytes(self.media_dir / f"{stem}.json", data))
        record.payload = None if record.kind != "table" else record.payload  # free the frames early

    def _file(self, record: Media, fmt: str, write: Callable[[], Path]) -> None:
        try:
            record.files[fmt] = write()
        except OSError as exc:
            self.write_errors += 1
            record.error = f"{fmt} file not written: {type(exc).__name__}: {exc}"
            if self.write_errors == 1:
                log.warning("opusclip-track: a %s file could not be written under %s (%s: %s); the record is kept "
                            "in the store with this error (later ones are counted in the run's health)", fmt,
                            self.media_dir, type(exc).__name__, exc)

    def _stem(self, record: Media) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", record.name).strip("_") or record.kind
        stem = f"{safe}_step{record.step:08d}"
        n = 1
        while stem in self._used:  # the same name logged twice at one step
            stem = f"{safe}_step{record.step:08d}_{n}"
            n += 1
        self._used.add(stem)
        return stem


def encoded_bytes(record: Record) -> int:
    """The bytes a record holds in memory after encoding (what a queue of encoded records counts)."""
    if isinstance(record, Media):
        return sum(len(b) for b in record.encoded.values())
    return 0


def _plain_cell(value: Any) -> Any:
    """A table cell as plain data: a one-element tensor or a NumPy scalar is its number, arrays are lists."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 and value.dim() == 0 else value.tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value
