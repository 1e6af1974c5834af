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
import logging
import netrc
import os
import re
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..records import Alert, Artifact, Histogram, Hyperparameters, Media, RunStatus, Scalars, Text
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


STEP_KEY = "trainer/global_step"
"""The history key holding each row's true training step: the x-axis of every W&B chart of the run."""


def wandb_settings() -> Any:
    """`wandb.Settings` for every run we start: quiet, no W&B-side system stats (our monitor logs `sys/*`),
    and no W&B capture of the command line, host metadata or code (see the module docstring)."""
    import wandb

    return wandb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_meta=True,
                          save_code=False)


def use_step_axis(run: Any) -> None:
    """Make `STEP_KEY` the x-axis of every chart of `run`; each row then logs its true step under `STEP_KEY`
    (`run.log({**row, STEP_KEY: step})`, no `step=`), so rows delivered out of step order all keep their step."""
    run.define_metric(STEP_KEY)
    run.define_metric("*", step_metric=STEP_KEY)


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
        use_step_axis(self.run)

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
        """HTML under the text's name, at its step."""
        self._html(record.name, record.text, record.step)

    def log_alert(self, record: Alert) -> None:
        """A W&B alert (`run.alert`, see `send_alert`), and its text as HTML under `alerts/<title>` in the run's
        history, at its step (W&B's alert record has no step)."""
        send_alert(self.run, record)
        self._html(record.name, record.text, record.step)

    def _html(self, key: str, text: str, step: int) -> None:
        self._log({key: self._wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step)

    def log_histogram(self, record: Histogram) -> None:
        assert record.edges is not None and record.counts is not None and record.stats is not None
        if record.counts.size == 0:
            # wandb.Histogram cannot hold zero bins, and a made-up bin would show data that never existed:
            # a note under `<name>/note` says why this step has no histogram.
            note = (f"no histogram at step {record.step}: no finite values "
                    f"({int(record.stats.get('nonfinite', 0))} NaN/Inf)")
            self._html(f"{record.name}/note", note, record.step)
            return
        hist = self._wandb.Histogram(np_histogram=(record.counts.tolist(), record.edges.tolist()))
        self._log({record.name: hist}, record.step)

    def log_media(self, record: Media) -> None:
        """A clip from its MP4 file, an image or figure from its PNG file (or, when that file could not be written
        or is gone, from the PNG bytes encoded in memory), a table from its rows.

        A clip whose MP4 was never written or is gone raises FileNotFoundError: like any failed record it is
        retried with the next batches and given up after `MAX_ATTEMPTS` tries (counted in the run's health); its
        store row (and the error, when the file could not be written) remains. W&B gets no clip for that step.
        """
        wandb = self._wandb
        value: Any
        if record.kind == "video":
            mp4 = record.files.get("mp4")
            if mp4 is None or not mp4.is_file():
                raise FileNotFoundError(f"{record.name} at step {record.step}: no MP4 file to send to W&B "
                                        f"({record.error or f'{mp4} is gone'})")
            value = wandb.Video(str(mp4), caption=record.caption, format="mp4")
        elif record.kind == "table":
            columns, rows = record.payload
            value = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        elif "png" in record.files and record.files["png"].is_file():
            value = wandb.Image(str(record.files["png"]), caption=record.caption)
        else:  # the file could not be written (`record.error`) or is gone: the PNG encoded in memory
            from PIL import Image

            if "png" not in record.encoded:  # a record rebuilt from the store whose file is gone
                raise FileNotFoundError(f"{record.name} at step {record.step}: no PNG to send to W&B "
                                        f"({record.error or 'its file is gone'})")
            value = wandb.Image(Image.open(io.BytesIO(record.encoded["png"])), caption=record.caption)
        self._log({record.name: value}, record.step)

    def log_artifact(self, record: Artifact) -> None:
        artifact = self._wandb.Artifact(name=run_id(record.name), type=record.type, metadata=record.metadata)
        artifact.add_file(str(record.path))
        self.run.log_artifact(artifact, aliases=record.aliases or None)

    def close(self, status: RunStatus = "finished") -> None:
        """Finish the W&B run (exit code 0 when `status` is "finished", 1 otherwise: W&B shows it failed) and
        return once its transaction log (the `.wandb` file `wandb sync` uploads) is complete on disk.

        `run.finish()` returns before that: it hands the finish to the W&B service, which closes the run's
        stream, and so writes the file, afterwards (wandb 0.31 sends no reply to it; measured: right after
        `finish()` the file held none of 100 logged rows in one try of three). So this waits until the file
        ends with the run's exit record, up to `FINISH_WAIT_S`, then warns and returns.
        """
        finish_run(self.run, 0 if status == "finished" else 1)


def send_alert(run: Any, record: Alert) -> None:
    """`run.alert(title, text, level, wait_duration)`: W&B mails or posts it to Slack as the user's W&B settings say.

    Offline-safe: an offline run (wandb 0.31) records it in its `.wandb` file as an `AlertRecord` (title, text,
    level `INFO`/`WARN`/`ERROR`, wait_duration in ms), which `wandb sync` sends later. W&B asks for a title under 64
    characters (a longer one is cut, the store keeps it whole) and drops an alert of the same title within
    `wait_duration` (ours is the alert's cool-down; W&B takes 0 as its default of 1 minute, so 1 ms is sent).
    """
    title = record.title if len(record.title) < 64 else record.title[:62] + "\u2026"
    run.alert(title=title, text=record.text, level=record.level.upper(), wait_duration=max(record.cooldown_s, 0.001))


def finish_run(run: Any, exit_code: int) -> None:
    """`run.finish(exit_code)`, returning once the run's `.wandb` file holds its exit record (see
    `WandbBackend.close`), or after `FINISH_WAIT_S` with a warning."""
    log_file = Path(run.settings.sync_file)
    run.finish(exit_code=exit_code)
    if not wait_for_exit_record(log_file, FINISH_WAIT_S):
        log.warning("W&B run %s: its transaction log %s has no exit record %.0f s after finish(); the W&B service "
                    "may still be writing it (`wandb sync` of it may miss its end)", run.id, log_file, FINISH_WAIT_S)


# ---- the run's transaction log ----------------------------------------------------------------------------------
FINISH_WAIT_S = 60.0  # how long `close` waits for the service to complete the `.wandb` file
_BLOCK = 32 * 1024  # the log is LevelDB's format: 32 KiB blocks of chunks (4-byte CRC, uint16 length, 1-byte type)
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_TAIL_BLOCKS = 4  # where `has_exit_record` looks: the exit record is the last one W&B writes, and a few bytes


def transaction_log_payloads(data: bytes, start: int = 0) -> list[bytes]:
    """The serialised `wandb_internal_pb2.Record`s of a `.wandb` file's bytes, in order.

    wandb 0.31 ships no reader, but the format is stable and simple: a 7-byte file header (`:W&B`, a uint16 magic,
    a version byte) inside the first block, then LevelDB-style log chunks. `start` (a multiple of the block size)
    reads from a later block: chunks of a record begun before it are skipped.
    """
    if start == 0 and data[:4] != b":W&B":
        raise ValueError(f"data: expected a W&B transaction log, received a file starting with {data[:7]!r}")
    out: list[bytes] = []
    pos, partial = max(start, _CHUNK_HEADER), None
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - (pos % _BLOCK)
        if left_in_block < _CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        chunk = data[pos + _CHUNK_HEADER:pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            partial = chunk
        elif kind == _MIDDLE and partial is not None:
            partial += chunk
        elif kind == _LAST and partial is not None:
            out.append(partial + chunk)
            partial = None
    return out


def has_exit_record(path: Path) -> bool:
    """Whether the `.wandb` file at `path` holds its run's exit record (looking at its last blocks only)."""
    from wandb.proto import wandb_internal_pb2

    try:
        data = path.read_bytes()
    except OSError:  # not created yet
        return False
    if len(data) < _CHUNK_HEADER:  # created, header not written yet
        return False
    start = max(0, (len(data) // _BLOCK - _TAIL_BLOCKS) * _BLOCK)
    for payload in reversed(transaction_log_payloads(data, start)[-8:]):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf module
        try:
            record.ParseFromString(payload)
        except Exception:  # a chunk cut by a write in progress
            continue
        if record.WhichOneof("record_type") == "exit":
            return True
    return False


def wait_for_exit_record(path: Path, timeout_s: float) -> bool:
    """Wait until `has_exit_record(path)`, checking every 5 ms at first, then less often; False on timeout."""
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while not has_exit_record(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(0.1, pause * 2)
    return True
