"""Video metrics, training diagnostics, system status and environment through a real tracker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _readers import scalars, tensorboard_accumulator
from _wandb_reader import read_wandb_run
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.metrics import psnr as psnr_fn


def make(runs_dir: Path, **overrides: object) -> AdvancedExperimentTracker:
    options: dict[str, object] = {"experiment_name": "diag", "log_dir": str(runs_dir), "use_wandb": False,
                                  "system_monitor_interval_s": 0.0}
    options.update(overrides)
    return AdvancedExperimentTracker(TrackingConfig(**options))  # type: ignore[arg-type]


def test_evaluate_videos_logs_scores_curves_and_the_protocol(runs_dir: Path) -> None:
    torch.manual_seed(0)
    reference = torch.rand(2, 6, 3, 32, 32)
    generated = (reference + 0.05 * torch.randn_like(reference)).clamp(0, 1)
    with make(runs_dir, wandb_mode="offline", use_wandb=True) as tracker:
        tracker.log_metrics({"train/loss": 0.3}, step=40)
        results = tracker.evaluate_videos(generated, reference)
    assert set(results) >= {"video/psnr", "video/ssim", "video/flicker"}
    assert results["video/psnr"] == pytest.approx(float(psnr_fn(generated, reference)), rel=1e-5)
    tb = scalars("tensorboard", tracker.run_dir)
    assert tb["video/psnr"] == [(40, pytest.approx(results["video/psnr"], rel=1e-6))]
    store = RunStore(tracker.run_dir)
    (curve,) = store.events("table", "video/per_frame")
    assert curve["step"] == 40
    protocol = store.config()["video_metric_protocol"]
    assert protocol["frames"] == 6 and protocol["resolution"] == [32, 32] and protocol["value_range"] == [0.0, 1.0]
    assert read_wandb_run(tracker.run_dir)["config"]["video_metric_protocol"]["frames"] == 6


def test_log_video_metrics_the_original_call(runs_dir: Path) -> None:
    with make(runs_dir) as tracker:
        tracker.log_video_metrics(psnr=28.5, ssim=0.91, lpips=0.12, fid=35.0, step=5)
        tracker.log_video_metrics(fvd=210.0, inception_score=3.1, step=6)
        with pytest.raises(ValueError, match="at least one score"):
            tracker.log_video_metrics(step=7)
    store = RunStore(tracker.run_dir)
    assert store.last("video/psnr") == (5, 28.5) and store.last("video/fvd") == (6, 210.0)
    assert store.last("video/is") == (6, pytest.approx(3.1))


def test_training_steps_and_watch_histograms_every_log_freq(runs_dir: Path) -> None:
    """`log_training_step` beside a watched model: the hooks' statistics once per due backward pass, at the step
    logged after it, and never a second set from `log_training_step` on the same step."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with make(runs_dir) as tracker:
        tracker.watch(model, log="all", log_freq=5)
        for step in range(12):
            x = torch.randn(16, 4)
            if step == 9:
                x[0, 0] = float("nan")  # a NaN input: every gradient of this backward pass is NaN
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            tracker.log_training_step(loss.detach(), grad_norm=grad_norm, learning_rate=0.1, step=step)
            optimizer.step()
    store = RunStore(tracker.run_dir)
    assert [s for s, _, _ in store.history("train/loss")] == list(range(12))
    # Backward passes 5 and 10 run in steps 4 and 9: one set each (log_training_step collects nothing more).
    assert [s for s, _, _ in store.history("grad/global_norm")] == [4, 9]
    n_params = sum(p.numel() for p in model.parameters())
    assert [v for _, _, v in store.history("grad/nan_count")] == [0, n_params]
    acc = tensorboard_accumulator(tracker.run_dir)
    assert [e.step for e in acc.Histograms("param/0.weight")] == [4, 9]
    assert [e.step for e in acc.Histograms("grad/2.bias")] == [4, 9]


def test_log_training_step_collects_for_a_watched_model_whose_gradients_are_set_by_hand(runs_dir: Path) -> None:
    """No backward pass reaches the hooks (gradients assigned, e.g. from torch.autograd.grad): log_training_step
    collects on steps where step % log_freq == 0, as it always did."""
    model = torch.nn.Linear(3, 2)
    with make(runs_dir) as tracker:
        tracker.watch(model, log="gradients", log_freq=2)
        for step in range(5):
            grads = torch.autograd.grad(model(torch.randn(4, 3)).sum(), list(model.parameters()))
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g
            tracker.log_training_step(0.1, step=step)
        tracker.unwatch(model)
    assert [s for s, _, _ in RunStore(tracker.run_dir).history("grad/global_norm")] == [0, 2, 4]


def test_model_architecture_system_status_and_environment(runs_dir: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1))
    with make(runs_dir, seed=7) as tracker:
        counts = tracker.log_model_architecture(model)
        status = tracker.get_system_status()
        snapshot = tracker.log_performance_metrics()
    assert counts["params/total"] == sum(p.numel() for p in model.parameters())
    assert status["sys/process_rss_gb"] > 0 and not any(k.startswith("sys/gpu") for k in status)
    store = RunStore(tracker.run_dir)
    assert store.last("sys/process_rss_gb") is not None and set(snapshot) == set(status)
    assert "Conv3d" in store.events("text", "model/architecture")[0]["data"]["text"]
    environment = store.config()["environment"]
    assert environment["seed"] == 7 and environment["torch"] == torch.__version__


def test_model_graph_reaches_tensorboards_graphs_tab(runs_dir: Path) -> None:
    from tensorboard.compat.proto.graph_pb2 import GraphDef

    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1))
    with make(runs_dir) as tracker:
        tracker.log_model_architecture(model, graph_input=torch.rand(1, 3, 4, 8, 8))
    graph = tensorboard_accumulator(tracker.run_dir).Graph()
    assert isinstance(graph, GraphDef)
    ops = {node.op for node in graph.node}
    assert any("conv" in op.lower() for op in ops) and any("relu" in op.lower() for op in ops)
    assert RunStore(tracker.run_dir).events("graph")[0]["data"]["num_nodes"] == len(graph.node)


def test_the_system_monitor_samples_at_the_configured_rate(runs_dir: Path) -> None:
    import time

    with make(runs_dir, system_monitor_interval_s=0.2) as tracker:
        time.sleep(1.3)
    samples = RunStore(tracker.run_dir).history("sys/cpu_percent")
    assert 3 <= len(samples) <= 9
    assert "sys/cpu_percent" in scalars("tensorboard", tracker.run_dir)
