"""The reports `compare_models` and `scripts/sweep.py` write at their end: real training runs, real report files.

A comparison's report groups the runs by model and its statistics are the comparison's (mean and standard
deviation over seeds); a sweep's report lists the trials best first with Optuna's parallel-coordinates and
importance plots embedded, and the sweep's metric as the first key. Both can be skipped (`--no-report`).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from test_scripts import load_script

from _browser import console_errors, non_local, requested_urls, start_browser
from models import MODELS
from models.comparison import ComparisonConfig, compare_models, report_path
from models.training import TrainConfig
from opusclip_track.sweep import run_sweep

# Four CPU runs of about a second each: 2 models x 2 seeds (a standard deviation needs two).
TINY = TrainConfig(model_options={}, image_size=16, context_frames=2, future_frames=2, train_clips=16, val_clips=4,
                   batch_size=4, max_steps=2, eval_every=2, log_every=1, warmup_steps=1, sample_clips=1,
                   metrics=("psnr", "ssim"), device="cpu")


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one intra-op thread (tests/_env.py)


def _section(html: str, anchor: str) -> str:
    return html.split(f'<section id="{anchor}"', 1)[1].split("</section>", 1)[0]


def test_compare_models_writes_a_report_grouped_by_model_whose_statistics_are_the_comparisons(tmp_path: Path) -> None:
    config = ComparisonConfig(seeds=[0, 1], train=TINY, group="cmp", log_dir=str(tmp_path / "runs"),
                              checkpoint_dir=str(tmp_path / "ckpt"), use_wandb=False, progress=False)
    comparison = compare_models(config)
    page = report_path(config.log_dir, "cmp")
    assert page == tmp_path / "runs" / "cmp" / "report.html" and page.is_file()
    stats = json.loads(page.with_name("stats.json").read_text())
    assert stats["group_by"] == "train.model"
    assert {g: len(runs) for g, runs in stats["groups"].items()} == {"video_generation": 2, "transformer": 2}
    assert "cmp-summary" not in [r["name"] for r in stats["runs"]]  # the comparison's own run is no model's run
    for model in config.models:
        name = MODELS[model][1].__name__  # the comparison names models by class
        for ours, theirs in (("val_loss", "val/loss"), ("video/psnr", "video/psnr"), ("video/ssim", "video/ssim"),
                             ("training_time", "train/time_s")):
            mean, std, n = comparison.stats[name][ours]
            group = stats["metrics"][theirs]["groups"][model]
            assert (group["n"], group["mean"], group["std"]) == (n, pytest.approx(mean, rel=1e-12),
                                                                 pytest.approx(std, rel=1e-12)), (model, ours)
    (pair,) = stats["metrics"]["video/psnr"]["comparisons"]
    assert isinstance(pair["p"], float) and pair["sentence"].endswith("n=2 vs 2")
    html = page.read_text()
    assert f'data-value="{stats["metrics"]["val/loss"]["groups"]["transformer"]["mean"]!r}"' in html
    assert "No run logged a per-frame table" not in html  # train logs video/per_frame at each evaluation


def test_compare_models_no_report_writes_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script("compare_models.py")
    script.main(["--models", "video_generation", "--max-steps", "1", "--eval-every", "1", "--image-size", "16",
                 "--batch-size", "2", "--no-wandb", "--group", "quiet", "--no-report", "--log-dir", str(tmp_path / "r"),
                 "--checkpoint-dir", str(tmp_path / "c")])
    assert "report:" not in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["quiet-summary", "quiet-video_generation-seed0"]


def test_sweep_script_writes_a_report_best_trials_first_with_parallel_coordinates_and_importances(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2x2 grid of the example recipe: 2 learning rates x 2 batch sizes, one too large for the recipe's 128
    clips, so two trials train (3 steps each) and two fail at once."""
    config = {"name": "rep", "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
              "parameters": {"learning_rate": {"values": [0.001, 0.01]}, "batch_size": {"values": [8, 1000]},
                             "max_steps": {"value": 3}}}
    Path("rep.yaml").write_text(yaml.safe_dump(config))
    assert load_script("sweep.py").main(["--config", "rep.yaml", "--root", "sweeps"]) == 0
    out = capsys.readouterr().out
    assert "report: sweeps/rep/report.html" in out.splitlines()
    folder = tmp_path / "sweeps" / "rep"
    html = (folder / "report.html").read_text()
    stats = json.loads((folder / "stats.json").read_text())

    trials = optuna.load_study(study_name="rep", storage=f"sqlite:///{tmp_path / 'sweeps' / 'rep.db'}").trials
    complete = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    failed = [t.number for t in trials if t.state.name == "FAIL"]
    assert len(complete) == 2 and len(failed) == 2
    best_first = [t.number for t in complete] + failed
    rows = re.findall(r'<tr data-trial="(\d+)" data-state="(\w+)">(.*?)</tr>', _section(html, "sweep"))
    assert [(int(n), state) for n, state, _ in rows] == [(n, "COMPLETE" if i < 2 else "FAIL")
                                                         for i, n in enumerate(best_first)]
    for (_, _, row), trial in zip(rows, complete, strict=False):  # the value shown is the study's, exactly
        assert f'data-value="{trial.value!r}"' in row
    assert "best" in rows[0][2] and "batch_size=1000" in rows[-1][2]  # failed ones keep their error
    assert [t["number"] for t in stats["sweep"]["trials"]] == best_first
    assert [r["name"] for r in stats["runs"]] == [f"rep-trial{n:03d}" for n in best_first]  # the runs too
    assert stats["keys"][0] == "val/loss"  # the sweep's metric is the chosen key

    importances = stats["sweep"]["importances"]
    printed = next(line for line in out.splitlines() if line.startswith("parameter importances"))
    assert printed.endswith(", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    assert set(importances) == {"learning_rate"} and f'data-value="{importances["learning_rate"]!r}"' in html
    for name in ("parallel_coordinate", "param_importances", "optimization_history"):
        embedded = re.search(rf'data-name="{name}".*?src="data:image/png;base64,([^"]+)"', html).group(1)
        assert base64.b64decode(embedded) == (folder / f"{name}.png").read_bytes(), name

    driver = start_browser(tmp_path / "profile")
    try:  # the plots decode, nothing is fetched, nothing is logged as an error
        driver.get((folder / "report.html").as_uri())
        sizes = driver.execute_script("return [...document.querySelectorAll('figure.sweep-figure img')]"
                                      ".map(i => i.complete && i.naturalWidth)")
        assert len(sizes) == 3 and all(size > 100 for size in sizes), sizes
        assert console_errors(driver) == []
        assert non_local(requested_urls(driver, (folder / "report.html").as_uri())) == []
    finally:
        driver.quit()


def test_a_sweep_report_is_skipped_on_request_and_absent_without_tracked_runs(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]
                                                                              ) -> None:
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({
        "name": "one", "method": "grid", "metric": {"name": "val/loss"},
        "parameters": {"learning_rate": {"value": 0.01}, "max_steps": {"value": 1}}}))
    assert load_script("sweep.py").main(["--config", str(tmp_path / "one.yaml"), "--root", str(tmp_path / "s"),
                                         "--no-report"]) == 0
    assert "report:" not in capsys.readouterr().out
    assert (tmp_path / "s" / "one" / "one-trial000").is_dir() and not (tmp_path / "s" / "one" / "report.html").exists()
    untracked = run_sweep({"name": "q", "method": "grid", "metric": {"name": "loss"},
                           "parameters": {"lr": {"values": [0.001, 0.01]}}},
                          "_sweep_objectives:quadratic", root=tmp_path / "s", track=False)
    assert untracked.report is None and not (tmp_path / "s" / "q" / "report.html").exists()
