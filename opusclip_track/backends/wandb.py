"""Weights & Biases backend: one W&B run per tracked run, its files under `runs/<run_name>/wandb/`.

`wandb_mode="auto"` means online when an API key is configured (`WANDB_API_KEY` or a `wandb login` netrc
entry) and offline otherwise; an offline run uploads later with `wandb sync runs/<run_name>/wandb/...`.
Videos go up as MP4 files we encoded ourselves (`wandb.Video` from an array would need moviepy).
"""

from __future__ import annotations

import html
import logging
import netrc
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from ..records import Artifact, Histogram, Hparams, Media, Scalars, Text
from .base import Backend

log = logging.getLogger(__name__)


def api_key_configured() -> bool:
    """True when W&B would find credentials: `WANDB_API_KEY` or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = re.sub(r"^https?://", "", os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).rstrip("/")
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> Literal["online", "offline", "disabled"]:
    """`auto` -> `online` with an API key, else `offline`; other modes pass through."""
    if mode == "auto":
        return "online" if api_key_configured() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"wandb_mode: expected auto, online, offline or disabled, received {mode!r}")
    return mode  # type: ignore[return-value]


def run_id(run_name: str) -> str:
    """A W&B run id derived from the run name, so resuming the run name resumes the W&B run."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_name)[:64]


class WandbBackend(Backend):
    """History with explicit steps, config, histograms, text, MP4 videos, images, tables and artifacts."""

    name = "wandb"

    def start(self) -> None:
        try:
            import wandb
        except ModuleNotFoundError as exc:  # pragma: no cover - wandb is a dependency
            raise ModuleNotFoundError("the W&B backend needs `pip install wandb`") from exc
        self._wandb = wandb
        cfg = self.config
        mode = resolve_mode(cfg.wandb_mode)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=cfg.project_name, entity=cfg.wandb_entity, name=cfg.run_name, id=run_id(str(cfg.run_name)),
            group=cfg.group, tags=list(cfg.tags) or None, notes=cfg.notes or None, config=self.run_config,
            dir=str(self.run_dir), mode=mode, resume="allow" if cfg.resume else None, reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        self._last_step = -1
        self._late_rows = 0

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        # W&B history needs non-decreasing steps; records from several threads may interleave, so merge and
        # sort each batch by step. A row older than what W&B already has is logged at the current step
        # (W&B would drop it); its true step is in the local store and TensorBoard.
        rows: dict[int, dict[str, float]] = {}
        for rec in records:
            rows.setdefault(rec.step, {}).update(rec.values)
        for step in sorted(rows):
            self._log(rows[step], step)

    def _log(self, row: dict[str, Any], step: int) -> None:
        if step < self._last_step:
            if self._late_rows == 0:
                log.info("W&B needs increasing steps: a row for step %d arrived after step %d; it is logged "
                         "at step %d (the local store keeps its true step)", step, self._last_step,
                         self._last_step)
            self._late_rows += 1
            step = self._last_step
        self.run.log(row, step=step)
        self._last_step = step

    def log_hparams(self, record: Hparams) -> None:
        self.run.config.update(record.params, allow_val_change=True)
        if record.metrics:
            self.run.summary.update(record.metrics)

    def update_config(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def log_text(self, record: Text) -> None:
        self._log({record.name: self._wandb.Html(f"<pre>{html.escape(record.text)}</pre>")}, record.step)

    def log_histogram(self, record: Histogram) -> None:
        assert record.edges is not None and record.counts is not None
        hist = self._wandb.Histogram(np_histogram=(record.counts.tolist(), record.edges.tolist()))
        self._log({record.name: hist}, record.step)

    def log_media(self, record: Media) -> None:
        wandb = self._wandb
        value: Any
        if record.kind == "video":
            value = wandb.Video(str(record.files["mp4"]), caption=record.caption, format="mp4")
        elif record.kind == "table":
            columns, rows = record.payload
            value = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        else:
            value = wandb.Image(str(record.files["png"]), caption=record.caption)
        self._log({record.name: value}, record.step)

    def log_artifact(self, record: Artifact) -> None:
        artifact = self._wandb.Artifact(name=run_id(record.name), type=record.type, metadata=record.metadata)
        artifact.add_file(str(record.path))
        self.run.log_artifact(artifact, aliases=record.aliases or None)

    def close(self) -> None:
        self.run.finish()
