"""The clip gallery's media: which clip of each run to show, and how the page gets it.

The tracker writes one H.264 MP4 per `log_video` call under `runs/<run>/media/` (with `reference=`, the
generated clips sit above the reference clips in one grid). Debian's Chromium plays these files as they are,
so the report uses them unchanged: no transcoding.

Embedded or beside the page (`media="auto"`, the default): clips are embedded as base64 `data:` URLs while
they total at most `EMBED_LIMIT_BYTES` (8 MiB, so about 11 MB of HTML), which keeps the report one file you
can attach to a pull request; the sample clips of a training run are 20-200 KB each. Past that, base64's
+33% and a page that must be parsed whole before it shows anything cost more than a second file is worth, so
the clips are copied to a sibling folder `<report>_files/` referenced by relative URLs (move the two together).
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from opusclip_track.report.data import RunData

__all__ = ["EMBED_LIMIT_BYTES", "Clip", "MediaMode", "choose_clips", "place_clips"]

EMBED_LIMIT_BYTES = 8 * 1024 * 1024
MediaMode = Literal["auto", "embed", "folder"]


@dataclass
class Clip:
    """One run's clip in a gallery (`file` None: the run logged no such clip at that step)."""

    run: RunData
    name: str
    step: int | None
    file: Path | None
    fps: float
    frames: int
    caption: str | None
    src: str = ""
    problem: str | None = None


def choose_clips(runs: Sequence[RunData], step: int | None = None) -> dict[str, list[Clip]]:
    """For each clip name, one clip per run that logged it: at `step` when given, else at the last step every
    run that logged this name has a clip for (each run's last clip when they share none)."""
    names = list(dict.fromkeys(v["name"] for run in runs for v in run.videos))
    galleries: dict[str, list[Clip]] = {}
    for name in names:
        by_run = {run.name: {v["step"]: v for v in run.videos if v["name"] == name} for run in runs}
        having = [steps for steps in by_run.values() if steps]
        common = set.intersection(*(set(s) for s in having)) if having else set()
        chosen = step if step is not None else (max(common) if common else None)
        clips = []
        for run in runs:
            steps = by_run[run.name]
            if not steps:
                continue  # this run never logged such a clip (a summary run, say)
            event = steps.get(chosen) if chosen is not None else (steps[max(steps)] if steps else None)
            clips.append(_clip(run, name, event, chosen))
        galleries[name] = clips
    return galleries


def _clip(run: RunData, name: str, event: dict | None, step: int | None) -> Clip:
    if event is None:
        where = f"at step {step}" if step is not None else ""
        return Clip(run, name, step, None, 0.0, 0, None, problem=f"no {name} clip {where}".strip())
    data = event["data"]
    file = event.get("file")
    clip = Clip(run, name, event["step"], file, float(data.get("fps") or 8.0), int(data.get("frames") or 1),
                data.get("caption"))
    if data.get("error") or file is None or not Path(file).is_file():
        clip.problem = f"clip file missing: {data.get('error') or file}"
        clip.file = None
    return clip


def place_clips(galleries: dict[str, list[Clip]], out: Path, mode: MediaMode = "auto") -> str:
    """Set every clip's `src`: embedded `data:` URLs or copies in `<out stem>_files/`. Returns the mode used."""
    files = [c for clips in galleries.values() for c in clips if c.file is not None]
    total = sum(c.file.stat().st_size for c in files if c.file is not None)
    used = mode if mode != "auto" else ("embed" if total <= EMBED_LIMIT_BYTES else "folder")
    folder = out.parent / f"{out.stem}_files"
    if used == "folder" and files:
        folder.mkdir(parents=True, exist_ok=True)
    for clip in files:
        assert clip.file is not None
        if used == "embed":
            clip.src = "data:video/mp4;base64," + base64.b64encode(clip.file.read_bytes()).decode("ascii")
        else:
            target = folder / _safe(clip.run.name) / clip.file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip.file, target)
            clip.src = quote(target.relative_to(out.parent).as_posix())
    return used


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"
