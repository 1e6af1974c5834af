"""Training diagnostics: per-step scalars, gradient and weight watching, a model summary and its traced graph.

Everything here stays on the tensors' device and never calls `.item()`: the tracker resolves 0-d tensors
on its worker thread, several at once, so the training loop never waits for the GPU.
"""

from __future__ import annotations

import time
import typing
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .records import Graph

WatchMode = Literal["gradients", "parameters", "all"]
Scalar = int | float | Tensor


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


class ModelWatcher:
    """Collects gradient and weight statistics of a model every `log_freq` steps, on the device.

    On a collecting step, `maybe_collect(step)` returns `(scalars, histograms)`:

    - "gradients": `grad/<param>/norm`, `grad/global_norm`, `grad/nan_count`, `grad/inf_count`
      (0-d tensors) and histogram sources `grad/<param>`;
    - "parameters": `param/<param>/norm` and histogram sources `param/<param>`;
    - "all": both.

    `<param>` is the name from `model.named_parameters()` (e.g. `encoder.0.weight`). Parameters without
    a gradient are left out of the gradient statistics. Histogram sources are flattened copies (at most
    `max_histogram_values` values each, regularly subsampled) for the tracker's worker to bin.

    Args:
        model: The module to watch; its parameters are listed once, here.
        log: What to collect.
        log_freq: Collect on steps where `step % log_freq == 0`.
        max_histogram_values: Cap on the values copied per histogram source; None copies all.

    Example:
        >>> watcher = ModelWatcher(model, log="all", log_freq=100)  # doctest: +SKIP
        >>> collected = watcher.maybe_collect(step)  # doctest: +SKIP
        >>> if collected is not None:  # doctest: +SKIP
        ...     scalars, histograms = collected
    """

    def __init__(self, model: nn.Module, log: WatchMode = "gradients", log_freq: int = 100, *,
                 max_histogram_values: int | None = 1 << 20) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError("ModelWatcher.model: expected a torch.nn.Module, "
                            f"received {type(model).__name__}")
        if log not in typing.get_args(WatchMode):
            raise ValueError(f"ModelWatcher.log: expected one of {typing.get_args(WatchMode)}, "
                             f"received {log!r}")
        if isinstance(log_freq, bool) or not isinstance(log_freq, int) or log_freq < 1:
            raise ValueError(f"ModelWatcher.log_freq: expected an int >= 1, received {log_freq!r}")
        if max_histogram_values is not None and max_histogram_values < 1:
            raise ValueError("ModelWatcher.max_histogram_values: expected None or an int >= 1, "
                             f"received {max_histogram_values!r}")
        self.log: WatchMode = log
        self.log_freq = log_freq
        self._max_histogram_values = max_histogram_values
        # Frozen parameters have no gradient but still have weights worth watching.
        self._params = [(name, p) for name, p in model.named_parameters()
                        if p.requires_grad or log != "gradients"]

    def maybe_collect(self, step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]] | None:
        """`(scalars, histograms)` when `step % log_freq == 0`, else None (without touching a tensor)."""
        if step % self.log_freq != 0:
            return None
        return self.collect()

    @torch.no_grad()
    def collect(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """`(scalars, histograms)` now, whatever the step."""
        scalars: dict[str, Tensor] = {}
        histograms: dict[str, Tensor] = {}
        if self.log in ("gradients", "all"):
            named = [(name, p.grad) for name, p in self._params if p.grad is not None]
            self._collect("grad", named, scalars, histograms)
            if named:
                scalars["grad/global_norm"] = _global_norm([scalars[f"grad/{n}/norm"] for n, _ in named])
                scalars["grad/nan_count"], scalars["grad/inf_count"] = nonfinite_counts([g for _, g in named])
        if self.log in ("parameters", "all"):
            self._collect("param", [(name, p) for name, p in self._params], scalars, histograms)
        return scalars, histograms

    def _collect(self, prefix: str, named: list[tuple[str, Tensor]], scalars: dict[str, Tensor],
                 histograms: dict[str, Tensor]) -> None:
        if not named:
            return
        for (name, tensor), norm in zip(named, _norms([t for _, t in named]), strict=True):
            scalars[f"{prefix}/{name}/norm"] = norm
            histograms[f"{prefix}/{name}"] = _histogram_source(tensor, self._max_histogram_values)


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
