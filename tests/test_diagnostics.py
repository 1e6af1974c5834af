"""Training-step scalars, ModelWatcher statistics and the architecture summary, against torch references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from _readers import tensorboard_accumulator
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.diagnostics import (
    ModelWatcher,
    model_architecture_summary,
    nonfinite_counts,
    training_step_metrics,
)


def _model_with_grads(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).to(dtype)
    model(torch.randn(2, 3, 8, 8, dtype=dtype)).square().mean().backward()
    return model


# ---- training_step_metrics -------------------------------------------------------------------------------
def test_step_metrics_keep_only_given_values_and_never_read_tensors() -> None:
    weight = torch.tensor(2.0, requires_grad=True)
    loss = weight * 3
    out = training_step_metrics(loss, grad_norm=torch.tensor([0.5]), learning_rate=1e-3, clipped=True)
    assert set(out) == {"train/loss", "train/grad_norm", "train/learning_rate", "train/clipped"}
    assert isinstance(out["train/loss"], torch.Tensor) and out["train/loss"].shape == ()
    assert not out["train/loss"].requires_grad  # detached: the graph is not kept alive until logged
    assert out["train/loss"].item() == 6.0 and out["train/grad_norm"].shape == ()
    assert out["train/learning_rate"] == 1e-3 and out["train/clipped"] == 1.0


def test_step_metrics_with_nonfinite_counts() -> None:
    out = training_step_metrics(0.1, nan_count=torch.tensor(2), inf_count=0, clipped=False)
    assert out["train/nan_count"].item() == 2 and out["train/inf_count"] == 0 and out["train/clipped"] == 0.0


def test_step_metrics_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"loss: expected a number or a 0-d tensor.*shape \(3,\)"):
        training_step_metrics(torch.ones(3))
    with pytest.raises(TypeError, match="learning_rate"):
        training_step_metrics(0.1, learning_rate="1e-3")  # type: ignore[arg-type]


# ---- ModelWatcher ------------------------------------------------------------------------------------------
def test_collects_only_every_log_freq_steps() -> None:
    watcher = ModelWatcher(_model_with_grads(), log="gradients", log_freq=100)
    collected = [step for step in range(301) if watcher.maybe_collect(step) is not None]
    assert collected == [0, 100, 200, 300]


def test_gradient_norms_match_torch() -> None:
    model = _model_with_grads()
    scalars, histograms = ModelWatcher(model, log="gradients", log_freq=1).maybe_collect(0)
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name, grad in grads.items():
        assert scalars[f"grad/{name}/norm"].shape == ()
        torch.testing.assert_close(scalars[f"grad/{name}/norm"], torch.linalg.vector_norm(grad))
        torch.testing.assert_close(histograms[f"grad/{name}"], grad.flatten())
    everything = torch.cat([g.flatten() for g in grads.values()])
    torch.testing.assert_close(scalars["grad/global_norm"], torch.linalg.vector_norm(everything))
    assert scalars["grad/nan_count"].item() == 0 and scalars["grad/inf_count"].item() == 0
    assert not any(key.startswith("param/") for key in [*scalars, *histograms])


def test_nan_and_inf_gradients_are_counted() -> None:
    model = _model_with_grads()
    model[0].weight.grad[0, 0, 0, 0] = float("nan")
    model[3].weight.grad[1, :3] = float("inf")
    model[3].bias.grad[0] = float("-inf")
    scalars, _ = ModelWatcher(model, log="gradients", log_freq=10).maybe_collect(20)
    assert scalars["grad/nan_count"].item() == 1
    assert scalars["grad/inf_count"].item() == 4
    assert scalars["grad/nan_count"].dtype == torch.int64
    assert torch.isnan(scalars["grad/0.weight/norm"]) and torch.isinf(scalars["grad/3.weight/norm"])
    assert torch.isfinite(scalars["grad/0.bias/norm"])


def test_parameters_mode_needs_no_gradients_and_copies_weights() -> None:
    model = nn.Sequential(nn.Linear(6, 3), nn.Linear(3, 2))
    scalars, histograms = ModelWatcher(model, log="parameters", log_freq=5).maybe_collect(5)
    names = [name for name, _ in model.named_parameters()]
    assert set(scalars) == {f"param/{n}/norm" for n in names}
    assert set(histograms) == {f"param/{n}" for n in names}
    before = model[0].weight.detach().flatten().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # what optimizer.step() does before the worker reads the histogram
    torch.testing.assert_close(histograms["param/0.weight"], before)
    torch.testing.assert_close(scalars["param/0.weight/norm"], torch.linalg.vector_norm(before))


def test_all_mode_collects_both_and_skips_params_without_gradients() -> None:
    model = _model_with_grads()
    model[3].bias.grad = None
    scalars, histograms = ModelWatcher(model, log="all", log_freq=1).maybe_collect(7)
    assert "grad/3.bias/norm" not in scalars and "grad/3.bias" not in histograms
    assert "param/3.bias/norm" in scalars and "grad/3.weight/norm" in scalars
    assert {"grad/global_norm", "grad/nan_count", "grad/inf_count"} <= set(scalars)


def test_low_precision_gradients_are_normed_in_float32() -> None:
    model = _model_with_grads(torch.bfloat16)
    scalars, _ = ModelWatcher(model, log="gradients", log_freq=1).maybe_collect(0)
    grad = model[3].weight.grad
    assert scalars["grad/3.weight/norm"].dtype == torch.float32
    torch.testing.assert_close(scalars["grad/3.weight/norm"], torch.linalg.vector_norm(grad.float()))


def test_large_histogram_sources_are_subsampled() -> None:
    model = nn.Linear(100, 50)
    _, histograms = ModelWatcher(model, log="parameters", log_freq=1, max_histogram_values=1000).maybe_collect(0)
    source = histograms["param/weight"]
    assert 500 <= source.numel() <= 1000
    torch.testing.assert_close(source, model.weight.detach().flatten()[::5])


def test_watcher_bad_arguments() -> None:
    with pytest.raises(ValueError, match="log: expected one of"):
        ModelWatcher(nn.Linear(2, 2), log="weights")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log_freq"):
        ModelWatcher(nn.Linear(2, 2), log_freq=0)
    with pytest.raises(TypeError, match="model"):
        ModelWatcher(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tensors"):
        nonfinite_counts([])


def test_attached_watcher_counts_backward_passes_and_hands_each_due_set_over_at_the_next_pass() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    delivered: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
    watcher = ModelWatcher(nn.parallel.DataParallel(model), log="gradients", log_freq=2, name="net")
    watcher.attach(delivered.append)
    norms = []
    for _ in range(3):
        model.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        norms.append(torch.linalg.vector_norm(model[0].weight.grad).item())
        with torch.no_grad():
            model[0].weight.add_(1.0)  # an optimizer step between the snapshot and its delivery
    assert watcher.passes == 3 and len(delivered) == 1  # pass 2, delivered when pass 3 started
    scalars, histograms = delivered[0]
    assert scalars["grad/net/0.weight/norm"].item() == pytest.approx(norms[1], rel=1e-6)
    assert set(histograms) == {"grad/net/0.weight", "grad/net/0.bias"}
    model(torch.randn(4, 3)).sum().backward()  # pass 4 is due: taken, not yet delivered
    pending = watcher.detach()
    assert pending is not None and not watcher.attached
    model(torch.randn(4, 3)).sum().backward()
    assert watcher.passes == 4 and len(delivered) == 1  # detached: no hook left on the model


def test_a_deliver_that_raises_never_breaks_a_backward_pass(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Linear(3, 1)

    def broken(_stats: object) -> None:
        raise OSError("disk full")

    watcher = ModelWatcher(model, log="gradients", log_freq=1)
    watcher.attach(broken)
    for _ in range(4):
        model(torch.randn(2, 3)).sum().backward()
    assert watcher.passes == 4
    assert [r.getMessage() for r in caplog.records].count(
        "opusclip-track: watching model 'Linear': deliver failed (OSError: disk full); training goes on "
        "(reported once)") == 1


# ---- model_architecture_summary ----------------------------------------------------------------------------
def test_architecture_counts_match_numel() -> None:
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Conv3d(3, 8, 3), nn.GroupNorm(2, 8)))
    model.add_module("head", nn.Linear(8, 4))
    model.encoder[0].weight.requires_grad_(False)
    text, counts = model_architecture_summary(model)
    total = sum(p.numel() for p in model.parameters())
    assert counts["params/total"] == total
    assert counts["params/trainable"] == total - model.encoder[0].weight.numel()
    assert counts["params/modules/encoder"] == sum(p.numel() for p in model.encoder.parameters())
    assert counts["params/modules/head"] == 8 * 4 + 4
    assert text.splitlines()[0] == f"Sequential: {total:,} params ({counts['params/trainable']:,} trainable)"
    assert "  encoder: Sequential" in text and "    0: Conv3d(3, 8, kernel_size=(3, 3, 3)" in text
    assert "head: Linear(in_features=8, out_features=4, bias=True)  [36 params]" in text


def test_tied_parameters_count_once_in_the_total() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    _, counts = model_architecture_summary(nn.ModuleDict({"emb": emb, "head": head}))
    assert counts["params/total"] == 40
    assert counts["params/modules/emb"] == counts["params/modules/head"] == 40


# ---- with the real tracker -----------------------------------------------------------------------------------
def test_watcher_output_lands_in_tensorboard_and_the_store(runs_dir: Path) -> None:
    model = _model_with_grads()
    watcher = ModelWatcher(model, log="all", log_freq=2)
    config = TrackingConfig(experiment_name="watch", log_dir=str(runs_dir), use_wandb=False)
    with AdvancedExperimentTracker(config) as tracker:
        for step in range(5):
            tracker.log_metrics(training_step_metrics(torch.tensor(1.0 / (step + 1)), learning_rate=0.1), step=step)
            collected = watcher.maybe_collect(step)
            if collected is not None:
                scalars, histograms = collected
                tracker.log_metrics(scalars, step=step)
                for name, values in histograms.items():
                    tracker.log_histogram(name, values, step=step)
    acc = tensorboard_accumulator(tracker.run_dir)
    store = RunStore(tracker.run_dir)
    assert [s for s, _, _ in store.history("grad/global_norm")] == [0, 2, 4]
    assert [s for s, _, _ in store.history("train/loss")] == list(range(5))
    expected = torch.linalg.vector_norm(model[3].weight.grad).item()
    assert [e.value for e in acc.Scalars("grad/3.weight/norm")] == pytest.approx([expected] * 3, rel=1e-6)
    histogram = acc.Histograms("param/0.weight")
    assert [h.step for h in histogram] == [0, 2, 4]
    assert histogram[0].histogram_value.num == model[0].weight.numel()
    assert histogram[0].histogram_value.sum == pytest.approx(model[0].weight.sum().item(), rel=1e-5, abs=1e-6)
