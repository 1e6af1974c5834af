"""Weights & Biases backend: one W&B run per tracked run, its files under `runs/<run_name>/wandb/`.

`wandb_mode="auto"` means online when an API key is configured (`WANDB_API_KEY` or a `wandb login` netrc
entry) and offline otherwise; an offline run uploads later with `wandb sync runs/<run_name>/wandb/...`.
Videos go up as MP4 files we encoded ourselves (`wandb.Video` from an array would need moviepy).

Steps: W&B's own `_step` must only increase, and a row logged with an older step is dropped or merged
into the wrong one, while our worker delivers records out of step order (clips are encoded after the
scalars logged beside them; system samples and several threads share steps). So rows carry the true
training step in `STEP_KEY` and W&B numbers them itself: every chart uses `STEP_KEY` as its x-axis
(`define_metric`), every record keeps its step, and nothing is merged away.

Secrets: W&B records the command line (`sys.argv`) and host metadata itself (`wandb-metadata.json`, the
environment record of the `.wandb` file), where `--api-key K` would land as is, and wandb 0.31 has no
setting to pass it a cleaned copy. We turn that capture off (`x_disable_meta`) and record our own, redacted,
in the config (`environment`: command, python, platform, host, GPUs, packages, git commit/branch/dirty).
W&B's code saving (the script and a `diff.patch` of uncommitted changes) is off too: a diff can hold
anything and cannot be redacted. What W&B still records itself: the git commit and remote URL (it strips
credentials from the URL), `requirements.txt` (name==version lines), and the run's name, group, tags.
"""

from __future__ import annotations

import html
import io
import netrc
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from ..records import Artifact, Histogram, Hyperparameters, Media, RunStatus, Scalars, Text
from .base import Backend


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


STEP_KEY = "trainer/global_step"
"""The history key holding each row's true training step: the x-axis of every W&B chart of the run."""


def wandb_settings() -> Any:
    """`wandb.Settings` for every run we start: quiet, no W&B-side system stats (our monitor logs `sys/*`),
    and no W&B capture of the command line, host metadata or code (see the module docstring)."""
    import wandb

    return wandb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_meta=True,
                          save_code=False)


def run_id(run_name: str) -> str:
    """A W&B run id derived from the run name, so resuming the run name resumes the W&B run."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_name)[:64]


class WandbBackend(Backend):
    """History keyed by `STEP_KEY`, config, histograms, text, MP4 videos, images, tables and artifacts."""

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
            group=cfg.group, tags=list(cfg.tags) or None, config=self.run_config,
            # absolute: the W&B service resolves `dir` against its own working directory, and a child
            # process (a sweep trial, a script started from a notebook) shares its parent's service
            dir=str(self.run_dir.resolve()),
            # the notes as the run config holds them (redacted), not as typed
            notes=self.run_config.get("notes", cfg.notes) or None,
            mode=mode, resume="allow" if cfg.resume else None, reinit="create_new", settings=wandb_settings(),
        )
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        # One row per run of consecutive records at the same step with distinct keys (a loop's metrics and
        # the system sample of that step); a key logged twice at one step gets a second row, not overwritten.
        row: dict[str, Any] = {}
        step = 0
        for rec in records:
            if row and (rec.step != step or not row.keys().isdisjoint(rec.values)):
                self._log(row, step)
                row = {}
            row.update(rec.values)
            step = rec.step
        if row:
            self._log(row, step)

    def _log(self, row: dict[str, Any], step: int) -> None:
        # No `step=`: W&B numbers rows itself (`_step`), so a late row is never dropped or merged.
        self.run.log({**row, STEP_KEY: step})

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        self.run.config.update(record.params, allow_val_change=True)
        if record.metrics:
            self.run.summary.update(record.metrics)

    def update_config(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def log_text(self, record: Text) -> None:
        self._log({record.name: self._wandb.Html(f"<pre>{html.escape(record.text)}</pre>")}, record.step)

    def log_histogram(self, record: Histogram) -> None:
        assert record.edges is not None and record.counts is not None and record.stats is not None
        if record.counts.size == 0:
            # wandb.Histogram cannot hold zero bins, and a made-up bin would show data that never existed:
            # a note under `<name>/note` says why this step has no histogram.
            note = (f"no histogram at step {record.step}: no finite values "
                    f"({int(record.stats.get('nonfinite', 0))} NaN/Inf)")
            self._log({f"{record.name}/note": self._wandb.Html(f"<pre>{html.escape(note)}</pre>")}, record.step)
            return
        hist = self._wandb.Histogram(np_histogram=(record.counts.tolist(), record.edges.tolist()))
        self._log({record.name: hist}, record.step)

    def log_media(self, record: Media) -> None:
        wandb = self._wandb
        value: Any
        if record.kind == "video":
            if "mp4" not in record.files:
                raise FileNotFoundError(f"{record.name}: no MP4 file to send to W&B ({record.error})")
            value = wandb.Video(str(record.files["mp4"]), caption=record.caption, format="mp4")
        elif record.kind == "table":
            columns, rows = record.payload
            value = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        elif "png" in record.files:
            value = wandb.Image(str(record.files["png"]), caption=record.caption)
        else:  # the file could not be written (`record.error`): the PNG encoded in memory
            from PIL import Image

            value = wandb.Image(Image.open(io.BytesIO(record.encoded["png"])), caption=record.caption)
        self._log({record.name: value}, record.step)

    def log_artifact(self, record: Artifact) -> None:
        artifact = self._wandb.Artifact(name=run_id(record.name), type=record.type, metadata=record.metadata)
        artifact.add_file(str(record.path))
        self.run.log_artifact(artifact, aliases=record.aliases or None)

    def close(self, status: RunStatus = "finished") -> None:
        """Finish the W&B run: exit code 0 when `status` is "finished", 1 otherwise (W&B shows it failed)."""
        self.run.finish(exit_code=0 if status == "finished" else 1)
