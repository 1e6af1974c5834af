"""`tracker.watch(model)` as `wandb.watch`: hooks count backward passes, and a plain training loop records gradient
and weight statistics every `log_freq` passes, read back from TensorBoard's event files and the run store."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from _readers import tensorboard_accumulator
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig


def make(runs_dir: Path, **overrides: object) -> AdvancedExperimentTracker:
    options: dict[str, object] = {"experiment_name": "watch", "log_dir": str(runs_dir), "use_wandb": False,
                                  "system_monitor_interval_s": 0.0}
    options.update(overrides)
    return AdvancedExperimentTracker(TrackingConfig(**options))  # type: ignore[arg-type]


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def grad_norm(model: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()
                                               if p.grad is not None])).item()


def steps(store: RunStore, key: str) -> list[int]:
    return [step for step, _, _ in store.history(key)]


def train(model: nn.Module, tracker: AdvancedExperimentTracker, iterations: int, *,
          on_backward: Callable[[int], None] | None = None, lr: float = 0.05) -> None:
    """The plain loop a W&B user writes: backward, step, log. Nothing else is called for the watched model."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for i in range(iterations):
        loss = model(torch.randn(16, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if on_backward is not None:
            on_backward(i)
        optimizer.step()
        tracker.log_metrics({"train/loss": loss.detach()})  # automatic steps 0, 1, 2, ...


def test_a_plain_loop_records_gradients_and_weights_every_log_freq_backward_passes(runs_dir: Path) -> None:
    """Before: watch() followed by backward/step/log_metrics recorded nothing at all."""
    model = mlp()
    expected: dict[int, tuple[float, float]] = {}  # iteration -> (gradient norm, weight norm before the update)

    def remember(i: int) -> None:
        expected[i] = (grad_norm(model), torch.linalg.vector_norm(model[0].weight).item())

    with make(runs_dir) as tracker:
        watcher = tracker.watch(model, log="all", log_freq=10)
        train(model, tracker, 35, on_backward=remember)
    assert watcher.passes == 35
    store = RunStore(tracker.run_dir)
    assert steps(store, "train/loss") == list(range(35))  # watching never moves the loop's own steps
    acc = tensorboard_accumulator(tracker.run_dir)
    # Passes 10, 20, 30 run in iterations 9, 19, 29 and land on the steps those iterations logged.
    for tag in ("grad/global_norm", "grad/0.weight/norm", "grad/2.bias/norm", "grad/nan_count",
                "param/0.weight/norm", "param/2.bias/norm"):
        assert [e.step for e in acc.Scalars(tag)] == [9, 19, 29], tag
    assert [e.value for e in acc.Scalars("grad/global_norm")] == pytest.approx(
        [expected[i][0] for i in (9, 19, 29)], rel=1e-5)
    assert [e.value for e in acc.Scalars("param/0.weight/norm")] == pytest.approx(
        [expected[i][1] for i in (9, 19, 29)], rel=1e-5)
    assert [e.value for e in acc.Scalars("grad/nan_count")] == [0, 0, 0]
    assert set(acc.Tags()["histograms"]) == {f"{kind}/{name}" for kind in ("grad", "param")
                                             for name, _ in model.named_parameters()}
    histograms = acc.Histograms("grad/0.weight")
    assert [h.step for h in histograms] == [9, 19, 29]
    assert histograms[0].histogram_value.num == model[0].weight.numel()


def test_gradient_accumulation_counts_backward_passes_and_records_the_summed_gradient(runs_dir: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before_update: list[float] = []
    with make(runs_dir) as tracker:
        watcher = tracker.watch(model, log="gradients", log_freq=8)
        for step in range(5):  # 4 micro-batches per optimizer step: passes 8 and 16 end steps 1 and 3
            for _ in range(4):
                (model(torch.randn(8, 4)).pow(2).mean() / 4).backward()
            before_update.append(grad_norm(model))
            optimizer.step()
            optimizer.zero_grad()
            tracker.log_metrics({"train/loss": 0.0}, step=step)
    assert watcher.passes == 20
    scalars = RunStore(tracker.run_dir).history("grad/global_norm")
    assert [s for s, _, _ in scalars] == [1, 3]
    assert [v for _, _, v in scalars] == pytest.approx([before_update[1], before_update[3]], rel=1e-5)


def test_frozen_and_unused_parameters_and_several_forward_passes_per_backward(runs_dir: Path) -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"frozen": nn.Linear(4, 4), "body": nn.Linear(4, 2), "unused": nn.Linear(2, 2)})
    model["frozen"].requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with make(runs_dir) as tracker:
        watcher = tracker.watch(model, log="all", log_freq=2)
        for step in range(7):  # siamese: the body runs twice before one backward pass
            a, b = (model["body"](model["frozen"](torch.randn(8, 4))) for _ in range(2))
            (a - b).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            tracker.log_metrics({"train/loss": 0.0}, step=step)
    assert watcher.passes == 7
    store = RunStore(tracker.run_dir)
    assert steps(store, "grad/global_norm") == [1, 3, 5]
    keys = set(store.keys())
    assert {k for k in keys if k.startswith("grad/")} == {
        "grad/body.weight/norm", "grad/body.bias/norm", "grad/global_norm", "grad/nan_count", "grad/inf_count"}
    assert {"param/frozen.weight/norm", "param/unused.weight/norm", "param/body.bias/norm"} <= keys


def test_watching_the_same_model_again_replaces_its_hooks(runs_dir: Path) -> None:
    model = mlp()
    with make(runs_dir) as tracker:
        first = tracker.watch(model, log="gradients", log_freq=10)
        second = tracker.watch(model, log="all", log_freq=2)
        train(model, tracker, 7)
    assert not first.attached and first.passes == 0 and second.passes == 7
    acc = tensorboard_accumulator(tracker.run_dir)
    # One set of hooks: each due pass is recorded once (a second set would double every event), under the
    # same names as before (no prefix for the run's first model).
    assert [e.step for e in acc.Scalars("grad/global_norm")] == [1, 3, 5]
    assert [e.step for e in acc.Scalars("param/0.weight/norm")] == [1, 3, 5]
    assert [h.step for h in acc.Histograms("grad/0.weight")] == [1, 3, 5]


def test_several_models_are_kept_apart_by_a_prefix(runs_dir: Path) -> None:
    class Discriminator(nn.Sequential):
        pass

    generator = mlp()
    discriminator = Discriminator(nn.Linear(1, 1))
    with make(runs_dir) as tracker:
        tracker.watch(generator, log="gradients", log_freq=1)
        tracker.watch(discriminator, log="gradients", log_freq=1)
        with pytest.raises(ValueError, match="name: expected a name no other watched model"):
            tracker.watch(nn.Linear(1, 1), name="Discriminator")
        for step in range(3):
            discriminator(generator(torch.randn(4, 4))).mean().backward()
            tracker.log_metrics({"train/loss": 0.0}, step=step)
    keys = set(RunStore(tracker.run_dir).keys())
    assert {"grad/global_norm", "grad/0.weight/norm", "grad/Discriminator/global_norm",
            "grad/Discriminator/0.weight/norm"} <= keys
    assert not any(k.startswith("grad/Discriminator/2.") for k in keys)  # the generator's layers stay unprefixed


def test_unwatch_logs_what_was_taken_and_removes_the_hooks(runs_dir: Path) -> None:
    model = mlp()
    with make(runs_dir) as tracker:
        watcher = tracker.watch(model, log="gradients", log_freq=2)
        train(model, tracker, 4)  # passes 2 and 4: pass 4's statistics are still waiting for the next pass
        tracker.unwatch(model)
        train(model, tracker, 4)
        with pytest.warns(UserWarning, match="unwatch: Linear is not watched"):
            tracker.unwatch(nn.Linear(1, 1))
    assert not watcher.attached and watcher.passes == 4
    assert steps(RunStore(tracker.run_dir), "grad/global_norm") == [1, 3]


def test_a_model_no_backward_pass_reaches_is_reported_instead_of_silence(runs_dir: Path) -> None:
    watched, trained = mlp(), mlp()
    with make(runs_dir) as tracker:
        tracker.watch(watched, log="all", log_freq=1)
        train(trained, tracker, 3)
        with pytest.warns(UserWarning, match=r"no backward pass reached 'Sequential' before unwatch"):
            tracker.unwatch(watched)
    assert not any(k.startswith(("grad/", "param/")) for k in RunStore(tracker.run_dir).keys())


def test_at_close_the_last_statistics_are_logged_and_an_unreached_model_is_reported_once(runs_dir: Path) -> None:
    """Needs `AdvancedExperimentTracker._before_close` to call `self._close_watchers()` (the lead's integration)."""
    model, other = mlp(), mlp()
    tracker = make(runs_dir)
    watcher = tracker.watch(model, log="gradients", log_freq=5)
    tracker.watch(other, log="parameters", log_freq=1, name="other")
    train(model, tracker, 10)  # pass 10, the last, is due: nothing starts another pass
    with pytest.warns(UserWarning, match="no backward pass reached 'other' before close") as caught:
        tracker.close()
    assert len([w for w in caught if "no backward pass" in str(w.message)]) == 1
    assert not watcher.attached
    assert steps(RunStore(tracker.run_dir), "grad/global_norm") == [4, 9]


def test_a_trained_model_raises_no_warning_at_close(runs_dir: Path) -> None:
    model = mlp()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with make(runs_dir) as tracker:
            tracker.watch(model, log="all", log_freq=3)
            train(model, tracker, 4)
    assert not [w for w in caught if "watch" in str(w.message)]


def test_a_ddp_wrapped_model_is_watched_under_its_own_parameter_names(runs_dir: Path, tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = mlp()
        expected: list[float] = []
        with make(runs_dir) as tracker:
            ddp = DistributedDataParallel(model)
            watcher = tracker.watch(ddp, log="gradients", log_freq=2)
            optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
            for step in range(5):
                ddp(torch.randn(8, 4)).pow(2).mean().backward()
                expected.append(grad_norm(model))
                optimizer.step()
                optimizer.zero_grad()
                tracker.log_metrics({"train/loss": 0.0}, step=step)
    finally:
        dist.destroy_process_group()
    assert watcher.passes == 5
    store = RunStore(tracker.run_dir)
    assert "grad/0.weight/norm" in store.keys() and not any("module." in k for k in store.keys())
    assert [(s, pytest.approx(v, rel=1e-5)) for s, _, v in store.history("grad/global_norm")] == [
        (1, expected[1]), (3, expected[3])]


def _ddp_worker(rank: int, rendezvous: str, out: str) -> None:
    """One of two gloo ranks: each trains on its own data; rank 0 writes what its watcher recorded."""
    import json

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from opusclip_track.diagnostics import ModelWatcher

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    model = nn.Linear(3, 1)
    results = {}
    for bucket_view in (False, True):
        ddp = DistributedDataParallel(model, gradient_as_bucket_view=bucket_view)
        recorded: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
        watcher = ModelWatcher(ddp, log="gradients", log_freq=1)
        watcher.attach(recorded.append)
        for _ in range(2):  # the second pass hands the first one's statistics over
            model.zero_grad()
            ddp(torch.full((2, 3), float(rank + 1))).sum().backward()
        watcher.detach()
        scalars = recorded[0][0]
        results[str(bucket_view)] = [scalars["grad/weight/norm"].item(), model.weight.grad.norm().item()]
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()
    # torch 2.14.1's gloo over a file:// rendezvous aborts a rank during interpreter teardown now and then
    # ("terminate called without an active exception"), with or without a watcher: plain DDP, no opusclip_track
    # import, 3 of 8 runs without the barrier above and 1 of 16 with it. The results are written; skip teardown.
    os._exit(0)


def test_with_two_ddp_ranks_the_gradients_are_taken_after_averaging(tmp_path: Path) -> None:
    """Taken when the pass ends, before DDP's own end-of-backward callback, they were rank 0's local gradients
    (or, with gradient_as_bucket_view, a bucket mid-reduction)."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path / "out.json")), nprocs=2)
    results = json.loads((tmp_path / "out.json").read_text())
    # Rank 0's gradient is 2 per weight, rank 1's 4: averaged 3, norm 3 * sqrt(3); rank 0's alone 2 * sqrt(3).
    for recorded, averaged in results.values():
        assert recorded == pytest.approx(averaged) == pytest.approx(3 * 3**0.5)


def test_a_compiled_model_is_watched_under_its_own_parameter_names(runs_dir: Path) -> None:
    model = mlp()
    compiled = torch.compile(model, backend="eager")  # dynamo's tracing without a C++ toolchain
    with make(runs_dir) as tracker:
        watcher = tracker.watch(compiled, log="gradients", log_freq=2)
        assert tracker.watch(model, log="gradients", log_freq=2) is not watcher  # the same model: replaced
        train(compiled, tracker, 5)
    keys = set(RunStore(tracker.run_dir).keys())
    assert "grad/0.weight/norm" in keys and not any("_orig_mod" in k for k in keys)
    assert steps(RunStore(tracker.run_dir), "grad/global_norm") == [1, 3]


def test_under_a_grad_scaler_the_scaled_gradients_are_recorded(runs_dir: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    unscaled: list[float] = []
    with make(runs_dir) as tracker:
        tracker.watch(model, log="gradients", log_freq=2)
        for step in range(5):
            scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
            scaler.unscale_(optimizer)
            unscaled.append(grad_norm(model))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            tracker.log_metrics({"train/loss": 0.0}, step=step)
    recorded = [v for _, _, v in RunStore(tracker.run_dir).history("grad/global_norm")]
    assert recorded == pytest.approx([1024.0 * unscaled[1], 1024.0 * unscaled[3]], rel=1e-5)


def test_log_graph_traces_the_model_on_its_first_forward_pass(runs_dir: Path) -> None:
    from tensorboard.compat.proto.graph_pb2 import GraphDef

    model = mlp()
    with make(runs_dir) as tracker:
        tracker.watch(model, log=None, log_graph=True)
        train(model, tracker, 3)
    graph = tensorboard_accumulator(tracker.run_dir).Graph()
    assert isinstance(graph, GraphDef) and any("tanh" in node.op.lower() for node in graph.node)
    assert len(RunStore(tracker.run_dir).events("graph")) == 1  # once, not at every forward pass
    assert not any(k.startswith("grad/") for k in RunStore(tracker.run_dir).keys())  # log=None: no statistics


def test_bad_arguments_name_the_argument(runs_dir: Path) -> None:
    with make(runs_dir) as tracker:
        with pytest.raises(ValueError, match="log: expected one of"):
            tracker.watch(mlp(), log="weights")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="log_freq: expected an int >= 1"):
            tracker.watch(mlp(), log_freq=0)
        with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
            tracker.watch(object())  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_hooks_never_synchronise_with_the_device(runs_dir: Path) -> None:
    model = mlp().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, foreach=True)
    # A long flush interval keeps the worker (which reads the values, as it should) asleep during the loop.
    with make(runs_dir, flush_interval_s=60.0) as tracker:
        tracker.watch(model, log="all", log_freq=2)
        x = torch.randn(16, 4, device="cuda")
        model(x).sum().backward()  # CUDA and autograd's device thread started outside the checked region
        optimizer.zero_grad()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
        try:
            for step in range(6):
                loss = model(x).pow(2).mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                tracker.log_metrics({"train/loss": loss.detach()}, step=step)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert steps(RunStore(tracker.run_dir), "grad/global_norm") == [0, 2, 4]
