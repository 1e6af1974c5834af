"""`AdvancedExperimentTracker`: the facade a training or generation loop calls.

Every `log_*` method runs in the caller's thread and only checks, stamps and hands over (see
`_dispatch.py`); conversion, the local store and the backends run on one background worker.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from ._dispatch import Dispatcher
from ._pipeline import BackendSlot, Pipeline
from .backends import get_backend_class
from .config import TrackingConfig, redact_secrets
from .distributed import rank_zero_only, refresh_rank
from .records import Histogram, Hparams, Record, Scalars, Text
from .store import RunStore

log = logging.getLogger("opusclip_track")

# Types accepted as metric values without further checks (the common case on the hot path).
_PLAIN_NUMBERS = frozenset({float, int, bool, np.float64, np.float32, np.float16, np.int64, np.int32,
                            np.int16, np.int8, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_})


class AdvancedExperimentTracker:
    """Async experiment tracker: local SQLite store + TensorBoard + Weights & Biases.

    Args:
        config: the run's settings; keyword arguments build one when omitted
            (`AdvancedExperimentTracker(experiment_name="vgen")`).

    Example:
        >>> cfg = TrackingConfig(experiment_name="vgen", use_wandb=False)      # doctest: +SKIP
        >>> with AdvancedExperimentTracker(cfg) as tracker:                   # doctest: +SKIP
        ...     for step, batch in enumerate(loader):
        ...         loss = train_step(batch)
        ...         tracker.log_metrics({"train/loss": loss}, step=step)      # a CUDA tensor is fine
    """

    def __init__(self, config: TrackingConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = TrackingConfig(**kwargs)
        elif kwargs:
            raise TypeError("AdvancedExperimentTracker: pass a TrackingConfig or keyword arguments, not both")
        if not isinstance(config, TrackingConfig):
            raise TypeError(f"config: expected a TrackingConfig, received {type(config).__name__}")
        self.config = config
        self._lock = threading.Lock()
        self._step = -1  # last step used; the next automatic step is _step + 1
        self._known_keys: set[str] = set()
        self._closed = False
        self._dispatcher: Dispatcher[Record] | None = None
        self.rank = refresh_rank()
        self._start()

    # ---- start-up (rank zero) --------------------------------------------------------------------
    @rank_zero_only
    def _start(self) -> None:
        cfg = self.config
        self._resolve_resume()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._store = RunStore(self.run_dir, create=True)
        previous = self._store.max_step()
        if previous is not None:  # a resumed run continues after its last step: no step goes backwards
            self._step = previous
        self._run_config = cfg.to_dict()
        self._store.set_meta({"run_name": cfg.run_name, "experiment_name": cfg.experiment_name,
                              "project_name": cfg.project_name, "group": cfg.group, "tags": cfg.tags,
                              "created_at": time.time(), "status": "running", "config": self._run_config})
        names = [n for n, on in (("tensorboard", cfg.use_tensorboard),
                                 ("wandb", cfg.use_wandb and cfg.wandb_mode != "disabled")) if on]
        names += [n for n in cfg.backends if n not in names]
        slots = [BackendSlot(get_backend_class(n)(cfg, self.run_dir, self._run_config)) for n in names]
        self._pipeline = Pipeline(self._store, slots)
        self._dispatcher = Dispatcher(self._pipeline, flush_interval_s=cfg.flush_interval_s,
                                      max_bytes=cfg.max_queue_bytes)
        _register(self)

    def _resolve_resume(self) -> None:
        cfg = self.config
        if not cfg.resume:
            return
        if isinstance(cfg.resume, str):
            cfg.run_name = cfg.resume
            return
        from .store import list_runs

        for run_dir in list_runs(cfg.log_dir):
            try:
                with RunStore(run_dir) as store:
                    experiment = store.meta().get("experiment_name")
            except Exception:  # an unreadable run is not the one to resume
                continue
            if experiment == cfg.experiment_name:
                cfg.run_name = run_dir.name
                log.info("resuming run %s", cfg.run_name)
                return
        log.info("resume=True but no earlier run of %r under %s: starting %s", cfg.experiment_name,
                 cfg.log_dir, cfg.run_name)

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
        if self._dispatcher is None:
            return {}
        return {s.backend.name: s.errors for s in self._pipeline.slots}

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
        values = self._check_scalars(metrics)
        self._put(Scalars(self._take_step(step), time.time(), values), 64 + 48 * len(values))

    def _check_scalars(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics: expected a dict of name -> number, received {type(metrics).__name__}")
        values = dict(metrics)  # the caller may reuse its dict
        known = self._known_keys
        for key, value in values.items():
            if key not in known:
                _check_key(key, "metrics")
                known.add(key)
            if type(value) in _PLAIN_NUMBERS:
                continue
            if isinstance(value, torch.Tensor):
                values[key] = _scalar_tensor(key, value)
            elif isinstance(value, (np.number, np.bool_)) and not np.iscomplexobj(value):
                continue
            else:
                raise TypeError(f"metrics[{key!r}]: expected a number, bool or one-element tensor, "
                                f"received {type(value).__name__}")
        return values

    def _take_step(self, step: int | None) -> int:
        with self._lock:
            if step is None:
                step = self._step + 1
            elif type(step) is not int:
                if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
                    raise TypeError(f"step: expected an int, received {type(step).__name__} {step!r}")
                step = int(step)
            if step < 0:
                raise ValueError(f"step: expected >= 0, received {step}")
            if step > self._step:
                self._step = step
            return step

    def _current_step(self, step: int | None) -> int:
        """For text, histograms and media: the given step, else the current one (no increment)."""
        if step is None:
            return max(self._step, 0)
        return self._take_step(step)

    def _put(self, record: Record, nbytes: int) -> None:
        assert self._dispatcher is not None
        if self._dispatcher.put(record, nbytes):  # the caller waited for room: record how long, in total
            total = {"tracker/backpressure_wait_s": self._dispatcher.backpressure_wait_s}
            self._dispatcher.put(Scalars(self._current_step(None), time.time(), total), 128)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"tracker for run {self.run_name!r} is closed: nothing more can be logged")

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
            _check_key(key, "params")
        summary = self._check_scalars(metrics or {})
        clean = redact_secrets(dict(params))
        self._put(Hparams(clean, summary, time.time()), 1024)
        if summary:
            self._put(Scalars(self._current_step(None), time.time(), summary), 256)

    @rank_zero_only
    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        """Log a text entry (Markdown in TensorBoard's Text tab, HTML in W&B)."""
        self._check_open()
        _check_key(name, "name")
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, received {type(text).__name__}")
        self._put(Text(name, text, self._current_step(step), time.time()), 128 + len(text))

    @rank_zero_only
    def log_histogram(self, name: str, values: Any, step: int | None = None, bins: int = 64) -> None:
        """Log the distribution of `values` (tensor on any device, array or sequence); binned on the worker."""
        self._check_open()
        _check_key(name, "name")
        if isinstance(values, torch.Tensor):
            data: Any = values.detach().clone()  # on its own device: no sync, safe from later in-place edits
            nbytes = data.numel() * data.element_size()
        else:
            data = np.array(values)
            if data.dtype.kind not in "biuf":
                raise TypeError(f"values: expected numbers, received an array of dtype {data.dtype}")
            nbytes = data.nbytes
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins: expected a positive int, received {bins!r}")
        self._put(Histogram(name, data, self._current_step(step), time.time(), bins), 256 + nbytes)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is in the store and every backend. False on timeout."""
        if self._dispatcher is None or self._closed:
            return True
        return self._dispatcher.flush(timeout)

    def close(self) -> None:
        """Flush, stop the worker, close the backends and the store. Idempotent; atexit/SIGTERM call it."""
        if self._closed:
            return
        self._closed = True
        if self._dispatcher is None:  # a non-zero rank: nothing was opened
            return
        self._dispatcher.close()
        for slot in self._pipeline.slots:
            slot.close()
        self._store.set_meta({"status": "finished", "finished_at": time.time(),
                              "backend_errors": self.backend_errors,
                              "backpressure_wait_s": self._dispatcher.backpressure_wait_s})
        self._store.close()
        _OPEN.discard(self)

    def __enter__(self) -> AdvancedExperimentTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AdvancedExperimentTracker(run_name={self.run_name!r}, step={self._step})"


# ---- input checks --------------------------------------------------------------------------------------
def _check_key(key: Any, argument: str) -> None:
    if not isinstance(key, str) or not key.strip():
        raise (TypeError if not isinstance(key, str) else ValueError)(
            f"{argument}: expected non-empty string keys, received {type(key).__name__} {key!r}")


def _scalar_tensor(key: str, value: torch.Tensor) -> Any:
    if value.numel() != 1:
        raise ValueError(f"metrics[{key!r}]: expected a one-element tensor, received shape "
                         f"{tuple(value.shape)}; log a reduction (.mean()) or use log_histogram")
    if value.is_complex():
        raise TypeError(f"metrics[{key!r}]: expected a real tensor, received dtype {value.dtype}")
    if value.device.type == "cpu":
        # Reading a CPU tensor is a memory read, not a device sync; reading it now also captures the value
        # before any later in-place update by the caller.
        return value.item()
    # On an accelerator: detach and clone on its own device (an async kernel, no sync); the worker reads
    # all of a batch's device values in one transfer.
    return value.detach().clone()


# ---- closing open trackers at exit and on SIGTERM -----------------------------------------------------
_OPEN: weakref.WeakSet[AdvancedExperimentTracker] = weakref.WeakSet()
_handlers_installed = False


def _register(tracker: AdvancedExperimentTracker) -> None:
    global _handlers_installed
    _OPEN.add(tracker)
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            _close_all()
            if callable(previous):
                previous(signum, frame)
            else:  # default action: die by SIGTERM, as the sender expects
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)


def _close_all() -> None:
    for tracker in list(_OPEN):
        try:
            tracker.close()
        except Exception:  # at exit, close what can be closed
            log.exception("closing tracker %s failed", tracker.run_name)
