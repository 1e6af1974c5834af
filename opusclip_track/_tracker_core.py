"""The core of the tracker facade (`AdvancedExperimentTracker` in `tracker.py` builds on it).

Every `log_*` method runs in the caller's thread and only checks (`_record_checks.py`), stamps the step and the
time, and hands one record to the run writer (`_writer.py`), which owns the rest: the store's worker (values
resolved, media encoded, SQLite written) and one worker per backend. Which run to resume and how an unclosed run
ends (atexit, SIGTERM, an uncaught exception, a fork) live in `_lifecycle.py`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from . import media
from ._checks import check_int, is_number
from ._foreign_names import FOREIGN_SETTINGS
from ._host_copy import host_copy
from ._lifecycle import register, settle_run_name, unregister
from ._record_checks import (
    ScalarChecker,
    check_artifact,
    check_fps,
    check_key,
    check_step,
    check_utf8,
    check_utf8_tree,
    histogram_values,
    table_rows,
)
from ._writer import NullWriter, RunWriter
from .alerts import check_level
from .backends import enabled_backends, get_backend_class
from .config import TrackingConfig, redact_secrets, redact_text
from .distributed import rank_zero_only, refresh_rank
from .environment import capture_environment
from .media import ImageLayout, VideoLayout
from .records import (
    Alert,
    AlertLevel,
    Artifact,
    ConfigUpdate,
    Histogram,
    Hyperparameters,
    Media,
    Record,
    RunStatus,
    Scalars,
    Text,
)
from .store import RunStore


class TrackerCore:
    """The tracker's core: the run's identity and step, every `log_*` of values the caller gives, flush and close.

    `AdvancedExperimentTracker` (the public class, `tracker.py`) adds what computes before it logs. Only global
    rank 0 writes: on other ranks every `log_*` method is a no-op (`rank_zero_only`) and the run writer is a
    `NullWriter`, installed once.
    """

    def __init__(self, config: TrackingConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            if message := TrackingConfig.unknown_fields_message(kwargs):
                raise TypeError(f"AdvancedExperimentTracker: {message}")
            config = TrackingConfig(**kwargs)
        elif kwargs:
            raise TypeError("AdvancedExperimentTracker: pass a TrackingConfig or keyword arguments, not both")
        if not isinstance(config, TrackingConfig):
            hint = f": use {FOREIGN_SETTINGS['config']}" if isinstance(config, Mapping) else ""
            raise TypeError(f"config: expected a TrackingConfig, received {type(config).__name__}{hint}")
        self.config = config
        self._lock = threading.Lock()
        self._step: int = -1  # last step used; the next automatic step is _step + 1
        self._scalars = ScalarChecker()
        self._closed = False
        self._owner_pid = os.getpid()  # a forked child must not write or close the parent's run
        self._writer: RunWriter | NullWriter = NullWriter()  # replaced on global rank 0 by `_start`
        self.rank = refresh_rank()
        settle_run_name(config, self.rank)  # rank 0's name on every rank, when it was generated (waits for rank 0)
        self._start()

    @rank_zero_only
    def _start(self) -> None:
        """Open the run: its store (continuing a resumed run's steps), its recorded config, its writer."""
        cfg = self.config
        store = RunStore(self.run_dir, create=True)
        previous = store.max_step()
        if previous is not None:  # a resumed run continues after its last step: no step goes backwards
            self._step = previous
        earlier = store.meta()  # empty unless this run is resumed
        self._run_config = {**earlier.get("config", {}), **cfg.to_dict(),
                            "environment": capture_environment(seed=cfg.seed)}
        store.set_meta({"run_name": cfg.run_name, "experiment_name": cfg.experiment_name,
                        "project_name": cfg.project_name, "group": cfg.group, "tags": cfg.tags,
                        "created_at": earlier.get("created_at", time.time()), "status": "running",
                        "config": self._run_config})
        backends = [get_backend_class(name)(cfg, self.run_dir, self._run_config) for name in enabled_backends(cfg)]
        self._writer = RunWriter(store, backends, self.run_dir / "media", flush_interval_s=cfg.flush_interval_s,
                                 max_bytes=cfg.max_queue_bytes, alerts=cfg.alerts)
        register(self)

    # ---- properties ------------------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        return str(self.config.run_name)

    @property
    def run_dir(self) -> Path:
        """`<log_dir>/<run_name>`: event files, the store (`run.db`), `media/`, `wandb/`."""
        return self.config.run_dir

    @property
    def step(self) -> int:
        """The last step logged (-1 before anything was logged)."""
        return self._step

    @property
    def backend_errors(self) -> dict[str, int]:
        """Errors raised by each backend so far (their records are safe in the local store)."""
        return self._writer.backend_errors

    @property
    def health(self) -> dict[str, Any]:
        """What went wrong in this run so far, counted by stage; also stored in the run's meta at close.

        Keys: `ok` (False when any record is missing from the store or from a backend), `worker_errors`,
        `bad_records` (could not be converted), `media_write_errors` (file not written; the record is stored
        with its error), `store_rejected` (content the store can never hold), `store_write_failures`
        (attempts that hit a full disk or a read-only/removed run directory), `store_pending` (records held
        for the next attempt), `store_lost` (never reached the store), `store_last_error`, and per backend:
        `backend_errors`, `backend_gave_up` (records it never received), `backend_pending` (waiting for a
        retry), `backend_last_error`, plus `backends_missing_hparams`, and `slowest_batch_s` (the longest the
        worker took to convert and store one batch: a SIGKILL loses at most the records of the last
        `flush_interval_s` plus this). Empty on a non-zero rank.
        """
        return self._writer.health

    # ---- the hot path ----------------------------------------------------------------------------
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalars at one step. Returns in microseconds; the worker does the rest.

        Args:
            metrics: name -> value; a value is a Python/NumPy number, a bool, or a one-element tensor on any
                device (device tensors are resolved on the worker, several at once, with no sync here).
                NaN and Inf are recorded as they are.
            step: the step; when omitted, one more than the largest step so far.
        """
        self._check_open()
        values = self._scalars.check(metrics)
        self._put(Scalars(self._take_step(step), time.time(), values), 64 + 48 * len(values))

    def _take_step(self, step: int | None) -> int:
        with self._lock:
            step = self._step + 1 if step is None else check_step(step)
            if step > self._step:
                self._step = step
            return step

    def _current_step(self, step: int | None) -> int:
        """For text, histograms and media: the given step, else the current one (no increment)."""
        if step is None:
            return max(self._step, 0)
        return self._take_step(step)

    def _put(self, record: Record, nbytes: int) -> None:
        if self._writer.put(record, nbytes):  # the caller waited for room: record how long, in total
            total = {"tracker/backpressure_wait_s": self._writer.backpressure_wait_s}
            self._writer.put(Scalars(self._current_step(None), time.time(), total), 128)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(self._closed_message())

    def _closed_message(self) -> str:
        if os.getpid() != self._owner_pid:
            return (f"tracker for run {self.run_name!r} belongs to process {self._owner_pid}; this process "
                    f"({os.getpid()}) is a fork of it (a DataLoader worker, a multiprocessing 'fork' child, "
                    "os.fork()), and a forked child never writes or closes its parent's run: log from the parent "
                    "(return the values to it), or open a tracker with another run_name in the child")
        return f"tracker for run {self.run_name!r} is closed: nothing more can be logged"

    # ---- other records ---------------------------------------------------------------------------
    @rank_zero_only
    def log_hyperparameters(self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Record hyperparameters (W&B config, TensorBoard HParams dashboard, the store).

        Args:
            params: name -> value (nested dicts are flattened as `a/b` where a backend needs flat names);
                secret-looking keys are redacted.
            metrics: optional summary metrics to show beside them (e.g. the sweep objective).
        """
        self._check_open()
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a dict, received {type(params).__name__}")
        for key in params:
            check_key(key, "params")
        check_utf8_tree(params, "params")
        summary = self._scalars.check(metrics or {})
        self._put(Hyperparameters(redact_secrets(dict(params)), summary, time.time()), 1024)
        if summary:
            self._put(Scalars(self._current_step(None), time.time(), summary), 256)

    @rank_zero_only
    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        """Log a text entry (Markdown in TensorBoard's Text tab, HTML in W&B).

        Secrets in it (`scheme://user:password@host`, `api_key=...`, `Authorization: Bearer ...`) are redacted
        before it is handed over (`opusclip_track.config.redact_text`).
        """
        self._check_open()
        check_key(name, "name")
        check_utf8(text, "text")
        text = redact_text(text)
        self._put(Text(name, text, self._current_step(step), time.time()), 128 + len(text))

    @rank_zero_only
    def alert(self, title: str, text: str, level: AlertLevel = "warn", *, step: int | None = None,
              wait_s: float = 60.0) -> None:
        """Raise an alert: printed once (the `opusclip_track` logger), stored, shown on top of the HTML report and
        by `opusclip-track runs show`, sent to W&B (`run.alert`), MLflow (a tag) and TensorBoard (text under
        `alerts/`). The run's own rules raise alerts the same way (`TrackingConfig.alerts`, `opusclip_track.alerts`).

        Args:
            title: a short summary (W&B keeps its first 63 characters).
            text: what happened; secrets in both are redacted as in `log_text`.
            level: `"info"`, `"warn"` or `"error"` (W&B's `INFO`, `WARN`, `ERROR` are taken too).
            step: defaults to the current step.
            wait_s: an alert with the same title less than this many seconds after the last one raised is dropped
                (W&B's `wait_duration`; 0 raises every one).

        Example:
            >>> tracker.alert("FVD regressed", f"val/fvd {fvd:.1f} > best {best:.1f}", level="error")  # doctest: +SKIP
        """
        self._check_open()
        check_key(title, "title")
        check_utf8(text, "text")
        level = check_level(level)
        if not is_number(wait_s, finite=True) or wait_s < 0:
            raise ValueError(f"wait_s: expected a number of seconds >= 0, received {wait_s!r}")
        title, text = redact_text(title), redact_text(text)
        record = Alert.new(title, text, level, self._current_step(step), time.time(), cooldown_s=float(wait_s))
        self._put(record, 256 + len(title) + len(text))

    @rank_zero_only
    def log_histogram(self, name: str, values: Any, step: int | None = None, bins: int = 64) -> None:
        """Log the distribution of `values` (tensor on any device, array or sequence); binned on the worker.

        NaN and Inf are counted apart (`nonfinite`), not binned; with no finite value at all the recorded
        histogram is empty (no bins, `num` 0). Empty `values` raise `ValueError`.
        """
        self._check_open()
        check_key(name, "name")
        data, nbytes = histogram_values(values)
        check_int("bins", bins, minimum=1)
        self._put(Histogram(name, data, self._current_step(step), time.time(), bins), 256 + nbytes)

    @rank_zero_only
    def log_artifact(self, path: str | Path, name: str, type: str = "model", aliases: Sequence[str] = (),
                     metadata: Mapping[str, Any] | None = None) -> None:
        """Version a file in every backend that keeps files (a W&B artifact, an MLflow artifact); the store
        records it. The tracker does this itself for its best checkpoint at close.

        Args:
            path: an existing file (read by the backends on the worker: do not change it until `flush()`).
            name: the artifact's name, e.g. `"model-my-run"`.
            type: its kind, e.g. `"model"` or `"dataset"`.
            aliases: labels such as `"best"` or `"latest"`.
            metadata: JSON-like facts shown beside it (step, score, sha256); secret-looking keys are redacted.
        """
        self._check_open()
        check_artifact(name, type, aliases, metadata)
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"path: expected an existing file, received {str(path)!r}"
                                    + (" (a directory)" if file.is_dir() else ""))
        clean = redact_secrets(dict(metadata or {}))
        self._put(Artifact(name, file, type, list(aliases), clean, time.time()), 1024)

    def _log_now(self, values: Mapping[str, Any]) -> None:
        """Log scalars at the current step without advancing it (system samples, summaries)."""
        if self._closed:
            if os.getpid() != self._owner_pid:
                raise RuntimeError(self._closed_message())
            return  # the system monitor racing with close()
        self._put(Scalars(self._current_step(None), time.time(), self._scalars.check(values)),
                  64 + 48 * len(values))

    @rank_zero_only
    def update_config(self, values: Mapping[str, Any]) -> None:
        """Add entries to the run's configuration (store, W&B config, TensorBoard text); secrets redacted."""
        self._check_open()
        if not isinstance(values, Mapping):
            raise TypeError(f"values: expected a dict, received {type(values).__name__}")
        check_utf8_tree(values, "values")
        clean = redact_secrets(dict(values))
        self._run_config.update(clean)
        self._put(ConfigUpdate(clean, time.time()), 1024)

    # ---- media: the caller's thread checks and copies; the worker converts and encodes ----------------
    @rank_zero_only
    def log_video(self, video: Any, name: str, step: int | None = None, fps: float = 8, caption: str | None = None,
                  *, reference: Any = None, layout: VideoLayout | None = None,
                  value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        """Log a clip (or a batch of clips as a grid; with `reference`, generated above ground truth).

        TensorBoard gets an animated GIF (Images tab), W&B an MP4, and the MP4 is kept in
        `runs/<run>/media/`. The call only checks shapes and takes a host copy; encoding runs on the worker.

        Args:
            video: `(T, C, H, W)` or `(B, T, C, H, W)` tensor/array (channels-last with `layout`), uint8 or
                float in `value_range`, C in (1, 3).
            name: the tag, e.g. `"samples/generated"`.
            step: defaults to the current step.
            fps: playback frame rate.
            caption: shown under the clip in W&B.
            reference: ground truth of the same shape, shown under `video`.
            layout: `"TCHW"`, `"BTCHW"`, `"THWC"` or `"BTHWC"`; None infers from the number of dimensions.
            value_range: range of float input: `(0, 1)` or `(-1, 1)`.
        """
        self._check_open()
        check_key(name, "name")
        media.check_video(video, layout=layout)
        if reference is not None:
            media.check_video(reference, layout=layout, name="reference")
            if tuple(reference.shape) != tuple(video.shape):
                raise ValueError(f"reference: expected the shape of video {tuple(video.shape)}, "
                                 f"received {tuple(reference.shape)}")
        if caption is not None:
            check_utf8(caption, "caption")
        copy = host_copy(video)
        options = {"fps": check_fps(fps), "layout": layout, "value_range": value_range,
                   "reference": None if reference is None else host_copy(reference)}
        record = Media("video", name, self._current_step(step), time.time(), copy, options, caption)
        self._put(record, copy.nbytes * (2 if reference is not None else 1))

    @rank_zero_only
    def log_image(self, image: Any, name: str, step: int | None = None, caption: str | None = None, *,
                  layout: ImageLayout | None = None, value_range: tuple[float, float] = (0.0, 1.0),
                  nrow: int = 8) -> None:
        """Log an image `(H, W)`, `(C, H, W)`, `(H, W, C)`, or a batch `(B, C, H, W)` as a grid of `nrow`."""
        self._check_open()
        check_key(name, "name")
        media.check_image(image, layout=layout)
        check_int("nrow", nrow, minimum=1)
        if caption is not None:
            check_utf8(caption, "caption")
        copy = host_copy(image)
        options = {"layout": layout, "value_range": value_range, "nrow": nrow}
        self._put(Media("image", name, self._current_step(step), time.time(), copy, options, caption), copy.nbytes)

    def log_images(self, images: Any, name: str, step: int | None = None, nrow: int = 8, **kwargs: Any) -> None:
        """Log a batch `(B, C, H, W)` as one grid image, `nrow` per row (see `log_image`)."""
        self.log_image(images, name, step, nrow=nrow, **kwargs)

    @rank_zero_only
    def log_figure(self, figure: Any, name: str, step: int | None = None, close: bool = True) -> None:
        """Log a matplotlib figure, rendered on the worker (do not change the figure after this call)."""
        self._check_open()
        check_key(name, "name")
        from matplotlib.figure import Figure

        if not isinstance(figure, Figure):
            raise TypeError(f"figure: expected a matplotlib.figure.Figure, received {type(figure).__name__}")
        self._put(Media("figure", name, self._current_step(step), time.time(), figure, {"close": close}), 1 << 20)

    @rank_zero_only
    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                  step: int | None = None) -> None:
        """Log a table: a W&B Table, a Markdown table in TensorBoard's Text tab, JSON in `media/`.

        Cells are numbers, strings, bools, None, or one-element tensors and NumPy scalars (stored as their
        number; a CPU tensor is read now, a device tensor on the worker).
        """
        self._check_open()
        check_key(name, "name")
        table = table_rows(columns, rows)
        payload = (list(columns), table)
        self._put(Media("table", name, self._current_step(step), time.time(), payload), 256 + 64 * len(table))

    # ---- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is in the store and has been through every backend.

        Returns:
            False on timeout, or when some record logged so far is not in the store (it could not be
            converted, the store rejected it, or the store cannot be written: `health` says which); the
            backends' own failures are counted in `health` and do not make it False.
        """
        if self._closed:
            if os.getpid() != self._owner_pid:
                raise RuntimeError(self._closed_message())
            return True
        return self._writer.flush(timeout)

    def close(self, status: RunStatus = "finished") -> None:
        """Flush, stop the worker, close the backends and the store. Idempotent; atexit/SIGTERM call it.

        Args:
            status: how the run ended, recorded in its meta and passed to every backend: "finished", or
                "failed" (a `with` block that raised, an uncaught exception or SIGTERM set it for you).

        Never raises for what the backends or the store do at close: their failures are counted in the
        run's `health` (also written to its meta) and summarised in one warning.
        """
        if status not in get_args(RunStatus):
            raise ValueError(f"status: expected one of {get_args(RunStatus)}, received {status!r}")
        self._finish(status, None)

    def _finish(self, status: RunStatus, error: str | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._before_close()
        self._writer.close(status, error)
        unregister(self)

    def _before_close(self) -> None:
        """Runs once, before the writer closes: what still has records to log (`AdvancedExperimentTracker`)."""

    def _abandon_after_fork(self) -> None:
        """In a forked child: this run belongs to the parent. Never write or close it from here."""
        self._closed = True
        self._writer.abandon_after_fork()
