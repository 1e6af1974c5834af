"""Training diagnostics: per-step scalars, gradient and weight watching, a model summary and its traced graph.

Everything here stays on the tensors' device and never calls `.item()`: the tracker resolves 0-d tensors
on its worker thread, several at once, so the training loop never waits for the GPU.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import typing
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .records import Graph

log = logging.getLogger("opusclip_track")

WatchMode = Literal["gradients", "parameters", "all"]
Scalar = int | float | Tensor
Stats = tuple[dict[str, Tensor], dict[str, Tensor]]  # (scalars, histogram sources) of one collection
# `queue_callback(fn)` runs `fn` when the current backward pass ends (what DDP uses to finish its averaging).
_ENGINE = torch.autograd.Variable._execution_engine  # type: ignore[attr-defined]


def _check_scalar(name: str, value: Any) -> Any:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"training_step_metrics {name}: expected a number or a 0-d tensor, "
                             f"received a tensor of shape {tuple(value.shape)}")
        return value.detach().reshape(())  # detach: do not keep the autograd graph alive until logged
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return value
    raise TypeError(f"training_step_metrics {name}: expected a number or a 0-d tensor, "
                    f"received {type(value).__name__}")


def training_step_metrics(loss: Scalar, *, grad_norm: Scalar | None = None,
                          learning_rate: Scalar | None = None, nan_count: Scalar | None = None,
                          inf_count: Scalar | None = None, clipped: Scalar | None = None) -> dict[str, Any]:
    """The scalars of one training step under `train/`, leaving out those not given.

    Values may be numbers or single-element tensors on any device; tensors are detached, never read.

    Args:
        loss: The step's loss.
        grad_norm: Total gradient norm, e.g. what `clip_grad_norm_` returns.
        learning_rate: Current learning rate.
        nan_count: NaN values seen in this step (e.g. `ModelWatcher`'s `grad/nan_count`).
        inf_count: Inf values seen in this step.
        clipped: Whether gradient clipping changed the gradients (logged as 1.0 / 0.0).

    Returns:
        `{"train/loss": ..., "train/grad_norm": ..., "train/learning_rate": ..., "train/nan_count": ...,
        "train/inf_count": ..., "train/clipped": ...}` with only the given entries.

    Example:
        >>> training_step_metrics(0.5, learning_rate=1e-3)
        {'train/loss': 0.5, 'train/learning_rate': 0.001}
    """
    given = {"loss": loss, "grad_norm": grad_norm, "learning_rate": learning_rate, "nan_count": nan_count,
             "inf_count": inf_count, "clipped": clipped}
    return {f"train/{name}": _check_scalar(name, value) for name, value in given.items() if value is not None}


def nonfinite_counts(tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """NaN and Inf element counts over `tensors`, as two int64 0-d tensors on the first tensor's device.

    Runs on the device without a host sync; `tensors` must not be empty.
    """
    if not tensors:
        raise ValueError("nonfinite_counts tensors: expected at least one tensor, received an empty list")
    device = tensors[0].device
    # One reduction per tensor instead of concatenating: no temporary copy of every gradient.
    nans = torch.stack([t.isnan().sum().to(device) for t in tensors]).sum()
    infs = torch.stack([t.isinf().sum().to(device) for t in tensors]).sum()
    return nans, infs


def _norms(tensors: list[Tensor]) -> list[Tensor]:
    # One fused kernel launch per (device, dtype) group; float32 accumulation so that fp16 and bf16
    # tensors do not overflow.
    return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))


def _global_norm(norms: list[Tensor]) -> Tensor:
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def _histogram_source(tensor: Tensor, max_values: int | None) -> Tensor:
    # A copy, since the optimizer changes weights and gradients in place before the worker reads them;
    # a regular subsample bounds the copy for very large tensors.
    flat = tensor.detach().reshape(-1)
    if max_values is not None and flat.numel() > max_values:
        flat = flat[:: -(-flat.numel() // max_values)]
    return flat.clone()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose parameter names the user wrote: inside `DistributedDataParallel`/`DataParallel`
    (`.module`) and `torch.compile` (`._orig_mod`), any number of times."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


class ModelWatcher:
    """Gradient and weight statistics of a model, on the device: collected on demand, or every `log_freq`
    backward passes once attached (what `AdvancedExperimentTracker.watch` does).

    `collect()` (and `maybe_collect(step)` on steps where `step % log_freq == 0`) returns `(scalars, histograms)`:

    - "gradients": `grad/<param>/norm`, `grad/global_norm`, `grad/nan_count`, `grad/inf_count`
      (0-d tensors) and histogram sources `grad/<param>`;
    - "parameters": `param/<param>/norm` and histogram sources `param/<param>`;
    - "all": both; None: nothing.

    `<param>` is the name from `model.named_parameters()` (e.g. `encoder.0.weight`) of the model inside any
    DDP/DataParallel/`torch.compile` wrapper, after `<name>/` when a `name` is given. Parameters without a gradient
    are left out of the gradient statistics. Histogram sources are flattened copies (at most
    `max_histogram_values` values each, regularly subsampled) for the tracker's worker to bin.

    Attached (`attach(deliver)`), the watcher counts backward passes with a hook on each trainable parameter
    (`register_post_accumulate_grad_hook`; a pass is one autograd graph task that accumulates into at least one of
    them, as `wandb.watch` counts them). On every `log_freq`-th pass it takes the statistics when the pass ends
    (after the callbacks queued during it, such as DDP's gradient averaging) and hands them to `deliver` when the
    next pass starts (or at `detach()`): by then the training loop has logged the step they belong to. No hook
    reads a value: the statistics stay device tensors.

    Args:
        model: The module to watch; its parameters are listed once, here.
        log: What to collect.
        log_freq: Collect every `log_freq` backward passes (attached) or steps (`maybe_collect`).
        max_histogram_values: Cap on the values copied per histogram source; None copies all.
        name: Prefix of the keys, `grad/<name>/...` (to keep several models apart); "" for none.

    Example:
        >>> watcher = ModelWatcher(model, log="all", log_freq=100)  # doctest: +SKIP
        >>> collected = watcher.maybe_collect(step)  # doctest: +SKIP
        >>> if collected is not None:  # doctest: +SKIP
        ...     scalars, histograms = collected
    """

    def __init__(self, model: nn.Module, log: WatchMode | None = "gradients", log_freq: int = 100, *,
                 max_histogram_values: int | None = 1 << 20, name: str = "") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError("ModelWatcher.model: expected a torch.nn.Module, "
                            f"received {type(model).__name__}")
        if log is not None and log not in typing.get_args(WatchMode):
            raise ValueError(f"ModelWatcher.log: expected one of {typing.get_args(WatchMode)} or None, "
                             f"received {log!r}")
        if isinstance(log_freq, bool) or not isinstance(log_freq, int) or log_freq < 1:
            raise ValueError(f"ModelWatcher.log_freq: expected an int >= 1, received {log_freq!r}")
        if max_histogram_values is not None and max_histogram_values < 1:
            raise ValueError("ModelWatcher.max_histogram_values: expected None or an int >= 1, "
                             f"received {max_histogram_values!r}")
        if not isinstance(name, str) or name != name.strip("/ "):
            raise ValueError(f"ModelWatcher.name: expected a string without leading or trailing '/' or spaces, "
                             f"received {name!r}")
        self.log: WatchMode | None = log
        self.log_freq = log_freq
        self.name = name
        self._prefix = f"{name}/" if name else ""
        self._max_histogram_values = max_histogram_values
        module = unwrap_model(model)
        self.label = name or type(module).__name__  # for messages
        self._model = weakref.ref(module)  # identity only: a watcher never keeps a model alive
        # Frozen parameters have no gradient but still have weights worth watching.
        self._params = [(name, p) for name, p in module.named_parameters()
                        if p.requires_grad or log not in ("gradients", None)]
        self.passes = 0  # backward passes seen since attach()
        self.logged_step: int | None = None  # the step of the last set of statistics logged (the tracker's)
        self._task = -1  # the autograd graph task of the pass seen last
        self._pending: Stats | None = None
        self._deliver: Callable[[Stats], None] | None = None
        self._handles: list[RemovableHandle] = []
        self._graph_hook: RemovableHandle | None = None
        self._lock = threading.Lock()  # hooks run on one autograd thread per device
        self._reported: set[str] = set()

    @property
    def attached(self) -> bool:
        """Whether `attach` installed the hooks and `detach` has not removed them."""
        return self._deliver is not None

    def watches(self, model: nn.Module) -> bool:
        """Whether `model` (or the module inside its DDP/compile wrapper) is the one this watcher was built for."""
        return self._model() is unwrap_model(model)

    def maybe_collect(self, step: int) -> Stats | None:
        """`(scalars, histograms)` when `step % log_freq == 0`, else None (without touching a tensor)."""
        if step % self.log_freq != 0:
            return None
        return self.collect()

    @torch.no_grad()
    def collect(self) -> Stats:
        """`(scalars, histograms)` now, whatever the step."""
        scalars: dict[str, Tensor] = {}
        histograms: dict[str, Tensor] = {}
        if self.log in ("gradients", "all"):
            named = [(name, p.grad) for name, p in self._params if p.grad is not None]
            self._collect("grad", named, scalars, histograms)
            if named:
                prefix = f"grad/{self._prefix}"
                scalars[f"{prefix}global_norm"] = _global_norm([scalars[f"{prefix}{n}/norm"] for n, _ in named])
                scalars[f"{prefix}nan_count"], scalars[f"{prefix}inf_count"] = nonfinite_counts([g for _, g in named])
        if self.log in ("parameters", "all"):
            self._collect("param", [(name, p) for name, p in self._params], scalars, histograms)
        return scalars, histograms

    def _collect(self, kind: str, named: list[tuple[str, Tensor]], scalars: dict[str, Tensor],
                 histograms: dict[str, Tensor]) -> None:
        if not named:
            return
        for (name, tensor), norm in zip(named, _norms([t for _, t in named]), strict=True):
            scalars[f"{kind}/{self._prefix}{name}/norm"] = norm
            histograms[f"{kind}/{self._prefix}{name}"] = _histogram_source(tensor, self._max_histogram_values)

    # ---- counting backward passes ---------------------------------------------------------------------------
    def attach(self, deliver: Callable[[Stats], None],
               on_first_forward: Callable[[nn.Module, tuple[Any, ...]], None] | None = None) -> None:
        """Count backward passes and hand every `log_freq`-th pass's statistics to `deliver`.

        Args:
            deliver: Called with `(scalars, histograms)` from inside autograd (the next backward pass) or from
                `detach()`; an exception it raises is logged once and never reaches the training loop.
            on_first_forward: Called once with the module and its positional inputs after its first forward
                pass (to trace its graph).
        """
        if self.attached:
            raise RuntimeError(f"ModelWatcher {self.name!r}: already attached; detach() it first")
        module = self._model()
        if module is None:
            raise RuntimeError(f"ModelWatcher {self.name!r}: the model it was built for no longer exists")
        self._deliver = deliver
        if self.log is not None:
            self._handles = [p.register_post_accumulate_grad_hook(self._on_grad_accumulated)
                             for _, p in self._params if p.requires_grad]
        if on_first_forward is not None:
            self._graph_hook = module.register_forward_hook(functools.partial(self._first_forward, on_first_forward))

    def detach(self) -> Stats | None:
        """Remove the hooks and forget the model; returns the statistics taken but not yet delivered."""
        for handle in [*self._handles, *([self._graph_hook] if self._graph_hook is not None else [])]:
            handle.remove()
        with self._lock:
            pending, self._pending = self._pending, None
            self._handles, self._graph_hook, self._params, self._deliver = [], None, [], None
        return pending

    def _on_grad_accumulated(self, _param: Tensor) -> None:
        # Runs once per parameter per pass; the fast path is one C call and a comparison (1-3 us per parameter,
        # measured with 100-200). A pass is told apart by its graph task id, as torch's own
        # `register_multi_grad_hook(mode="any")` does (that one takes a lock per call and keeps every id); a
        # pass that fails midway leaves nothing behind. The inner backward of reentrant checkpointing
        # (`use_reentrant=True`) is a task of its own and counts as a pass.
        task = torch._C._current_graph_task_id()
        if task == self._task:
            return
        with self._lock:
            if task == self._task:
                return
            self._task = task
            self.passes += 1
            pending, self._pending = self._pending, None
            deliver = self._deliver
            due = self.passes % self.log_freq == 0
        if due:
            _ENGINE.queue_callback(self._after_pass)
        if pending is not None and deliver is not None:
            self._guarded("deliver", deliver, pending)

    def _after_pass(self) -> None:
        # Callbacks queued during the pass (DDP queues its gradient averaging when the last bucket is ready,
        # after this one was queued) run first: queued again here, the snapshot sees the final gradients.
        _ENGINE.queue_callback(self._snapshot)

    def _snapshot(self) -> None:
        stats = self._guarded("collect", self.collect)
        with self._lock:
            self._pending = stats

    def _first_forward(self, callback: Callable[[nn.Module, tuple[Any, ...]], None], module: nn.Module,
                       inputs: tuple[Any, ...], _output: Any) -> None:
        if self._graph_hook is not None:  # once is enough
            self._graph_hook.remove()
            self._graph_hook = None
        self._guarded("on_first_forward", callback, module, inputs)

    def _guarded(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, or None after logging its exception once: watching never breaks a backward pass."""
        try:
            return fn(*args)
        except Exception as exc:
            if what not in self._reported:
                self._reported.add(what)
                log.error("opusclip-track: watching model %r: %s failed (%s: %s); training goes on (reported once)",
                          self.label, what, type(exc).__name__, exc)
            return None


def no_backward_message(watchers: list[ModelWatcher], when: str) -> str:
    """The warning for watched models whose hooks saw no backward pass by `when` ("close", "unwatch")."""
    names = ", ".join(repr(w.label) for w in watchers)
    return (f"watch: no backward pass reached {names} before {when}, so no gradient or weight statistics were "
            "recorded for it: watch the module whose loss.backward() runs (a DDP or torch.compile wrapper of it is "
            "fine), with parameters that require grad; statistics come from backward passes, not from "
            "torch.autograd.grad")


# ---- architecture ---------------------------------------------------------------------------------------
def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tree_lines(module: nn.Module, name: str, depth: int) -> list[str]:
    extra = module.extra_repr()
    head = f"{'  ' * depth}{name}: {type(module).__name__}" + (f"({extra})" if extra else "")
    lines = [f"{head}  [{_count(module):,} params]"]
    for child_name, child in module.named_children():
        lines.extend(_tree_lines(child, child_name, depth + 1))
    return lines


def model_architecture_summary(model: nn.Module) -> tuple[str, dict[str, int]]:
    """The module tree as indented text with parameter counts, and the counts as a dict.

    Returns:
        `(text, counts)`; `counts` holds `params/total`, `params/trainable` and `params/modules/<child>`
        for each top-level child module. Shared (tied) parameters count once in the total but in each
        child that holds them.

    Example:
        >>> text, counts = model_architecture_summary(nn.Sequential(nn.Linear(4, 2)))
        >>> counts
        {'params/total': 10, 'params/trainable': 10, 'params/modules/0': 10}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_architecture_summary model: expected a torch.nn.Module, "
                        f"received {type(model).__name__}")
    counts = {"params/total": _count(model),
              "params/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for name, child in model.named_children():
        counts[f"params/modules/{name}"] = _count(child)
    total, trainable = counts["params/total"], counts["params/trainable"]
    header = f"{type(model).__name__}: {total:,} params ({trainable:,} trainable)"
    body = [line for name, child in model.named_children() for line in _tree_lines(child, name, 1)]
    return "\n".join([header, *body]), counts


def trace_graph(name: str, model: nn.Module, example: Any) -> Graph:
    """Trace `model` on `example` (a tensor or a tuple of them) into the `GraphDef` TensorBoard's Graphs tab shows.

    Runs the model once, on the caller's thread (tracing needs the model as it is now).
    """
    from torch.utils.tensorboard._pytorch_graph import graph  # TensorBoard's own tracer, loaded only when used

    inputs = example if isinstance(example, tuple) else (example,)
    with warnings.catch_warnings():  # torch.jit tracing is deprecated upstream but is what TensorBoard reads
        warnings.simplefilter("ignore", FutureWarning)
        graph_def, _ = graph(model, inputs)
    return Graph(name, graph_def.SerializeToString(), len(graph_def.node), time.time())
