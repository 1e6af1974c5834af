"""`opusclip-track report` without a browser: what the page and the JSON contain, the command line, the
downsampling of curves, and what the command imports.

The runs come from the real tracker (tests/_report_runs.py); a run with thousands of points is written through
`RunStore` (real SQLite), as the tracker's worker writes it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _report_runs import FAILED, FRAMES, GROUPS, SEEDS, STEPS, run_name, write_runs
from opusclip_track import RunStore
from opusclip_track._downsample import bucket_mean
from opusclip_track.report import build_report, minmax_downsample, svg
from opusclip_track.report import clips as report_clips
from opusclip_track.report.cli import add_report_parser
from opusclip_track.report.data import RunData, group_runs


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runs(tmp_path_factory.getbasetemp() / "report-runs")


@pytest.fixture(scope="module")
def report(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """The default report of every run: (html, json)."""
    out = tmp_path_factory.mktemp("report")
    build_report(["*"], out / "report.html", log_dir=log_dir, json_path=out / "stats.json")
    return (out / "report.html").read_text(), json.loads((out / "stats.json").read_text())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opusclip-track")
    add_report_parser(parser.add_subparsers(dest="command"))
    return parser


def _section(html: str, anchor: str) -> str:
    return html.split(f'<section id="{anchor}"', 1)[1].split("</section>", 1)[0]


# ---- the command line --------------------------------------------------------------------------------------
def test_the_command_writes_the_page_and_every_number_as_json(log_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["report", "transformer-*", "unet-s*", "--log-dir", str(log_dir), "--out",
                                 "out/cmp.html", "--keys", "video/psnr,val/loss", "--json", "out/stats.json"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "wrote out/cmp.html (6 runs" in printed and "wrote out/stats.json" in printed
    stats = json.loads(Path("out/stats.json").read_text())
    assert [r["name"] for r in stats["runs"]] == [run_name(g, s) for g in GROUPS for s in SEEDS]
    assert stats["keys"] == ["video/psnr", "val/loss"] and stats["group_by"] == "group"
    psnr = stats["metrics"]["video/psnr"]
    assert psnr["direction"] == "higher" and psnr["unit"] == "dB"
    assert set(psnr["groups"]) == set(GROUPS) and all(g["n"] == 3 for g in psnr["groups"].values())
    (comparison,) = psnr["comparisons"]
    for field in ("diff", "ci_low", "ci_high", "df", "t", "p", "hedges_g"):
        assert isinstance(comparison[field], float), field
    assert comparison["better"] == "transformer" and comparison["sentence"].startswith("transformer beats unet")
    assert "<title>" in Path("out/cmp.html").read_text()


def test_a_pattern_that_matches_no_run_is_an_error_naming_it(log_dir: Path) -> None:
    args = _parser().parse_args(["report", "nothing-*", "--log-dir", str(log_dir)])
    with pytest.raises(ValueError, match=r"RUN_OR_GLOB: .*received 'nothing-\*', which matches no run \(runs under"):
        args.func(args)
    assert not Path("report.html").exists()


@pytest.mark.parametrize("argv", [["report"], ["report", "x", "--smoothing", "1"], ["report", "x", "--media", "cdn"],
                                  ["report", "x", "--clip-step", "last"]])
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_report_command_is_registered_in_opusclip_track(log_dir: Path) -> None:
    from opusclip_track.cli import main

    assert main(["report", "unet-s0", "--log-dir", str(log_dir), "--out", "r.html"]) == 0
    assert Path("r.html").is_file()


def test_the_command_line_builds_and_runs_the_report_without_torch(log_dir: Path, tmp_path: Path) -> None:
    code = ("import argparse, sys\nfrom opusclip_track.report.cli import add_report_parser\n"
            "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"
            "p = argparse.ArgumentParser(); add_report_parser(p.add_subparsers())\n"
            f"a = p.parse_args(['report', 'unet-s0', '--log-dir', {str(log_dir)!r}, '--out', 'r.html'])\n"
            "assert a.func(a) == 0\nprint(sorted(m for m in ('torch', 'torchmetrics', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['numpy']"


# ---- what the page shows -----------------------------------------------------------------------------------
def test_alerts_come_first_and_their_text_is_escaped(report: tuple[str, dict]) -> None:
    html, stats = report
    assert html.index('id="alerts"') < html.index('id="runs"')
    alerts = _section(html, "alerts")
    assert alerts.count('class="alert ') == 2 and "loss spike" in alerts and 'class="alert error"' in alerts
    assert "train/loss is NaN at step 12 &lt;b&gt;" in alerts and "<b>\n" not in alerts
    (failed,) = [r for r in stats["runs"] if r["name"] == FAILED]
    assert [(a["title"], a["level"], a["step"]) for a in failed["alerts"]] == [("loss spike", "warn", 11),
                                                                              ("NaN loss", "error", 12)]


def test_the_run_table_shows_status_duration_steps_and_best_checkpoint(report: tuple[str, dict],
                                                                       log_dir: Path) -> None:
    html, stats = report
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr data-run="([^"]+)">(.*?)</tr>', _section(html, "runs"))}
    assert len(rows) == 7
    assert 'class="badge failed">failed<' in rows[FAILED]
    assert 'class="badge finished">finished<' in rows["unet-s1"]
    assert "ckpt-step00000039.pt" in rows["unet-s1"] and "step 39" in rows["unet-s1"]
    by_name = {r["name"]: r for r in stats["runs"]}
    assert by_name[FAILED]["steps"] == 13 and by_name["unet-s1"]["steps"] == STEPS - 1
    with RunStore(log_dir / "unet-s1") as store:
        meta = store.meta()
    assert by_name["unet-s1"]["duration_s"] == pytest.approx(meta["finished_at"] - meta["created_at"])
    assert by_name["unet-s1"]["best_checkpoint"]["step"] == STEPS - 1


def test_the_config_diff_lists_only_keys_that_differ(report: tuple[str, dict]) -> None:
    keys = re.findall(r'<tr data-key="([^"]+)">', _section(report[0], "config"))
    assert {"hparams.lr", "hparams.model", "seed", "group"} <= set(keys)
    assert "hparams.seed" not in keys, "the config's seed, which the hyperparameters repeat, is shown once"
    assert not {"experiment_name", "use_wandb", "run_name", "checkpoint_monitor"} & set(keys)


def test_curves_for_the_default_keys_and_per_frame_quality_across_runs(report: tuple[str, dict]) -> None:
    html, stats = report
    assert stats["keys"] == ["train/loss", "val/loss", "video/flicker", "video/psnr", "video/ssim",
                             "video/temporal_diff"]
    charts = re.findall(r'<figure class="chart" data-key="([^"]+)"', _section(html, "curves"))
    assert charts == stats["keys"]
    per_frame = _section(html, "per-frame")
    assert re.findall(r'data-key="([^"]+)"', per_frame) == ["video/psnr", "video/ssim"]
    psnr_chart = per_frame.split('data-key="video/psnr"')[1].split("</figure>")[0]
    assert psnr_chart.count("<circle") == 7 * FRAMES * 2  # every frame of every run, in both y scales


def _table_psnr(log_dir: Path, run: str) -> list[float]:
    with RunStore(log_dir / run) as store:
        (event,) = [e for e in store.events("table", "video/per_frame") if e["step"] == STEPS - 1]
    table = json.loads(Path(event["path"]).read_text())
    return [row[table["columns"].index("psnr")] for row in table["rows"]]


def test_per_frame_curves_fall_along_the_horizon(log_dir: Path) -> None:
    psnr = _table_psnr(log_dir, "transformer-s0")  # the clips' noise grows with t: what the chart must show
    assert len(psnr) == FRAMES and psnr[0] > psnr[-1] + 6


def test_the_gallery_shows_each_runs_clip_at_the_last_step_they_share(log_dir: Path, tmp_path: Path) -> None:
    build_report(["*"], tmp_path / "a.html", log_dir=log_dir)
    html = (tmp_path / "a.html").read_text()
    assert html.count("<video ") == 7 and html.count('src="data:video/mp4;base64,') == 7
    assert "at step 10;" in html  # the failed run's only clip is at step 10
    build_report(["*"], tmp_path / "b.html", log_dir=log_dir, clip_step=STEPS - 1)
    html = (tmp_path / "b.html").read_text()
    assert html.count("<video ") == 6 and f"no samples/prediction clip at step {STEPS - 1}" in html


def test_large_media_goes_to_a_sibling_folder(log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_clips, "EMBED_LIMIT_BYTES", 1000)  # our clips are ~2 KB each
    result = build_report(["unet-s*"], tmp_path / "r.html", log_dir=log_dir)
    assert result.media == "folder"
    html = (tmp_path / "r.html").read_text()
    sources = re.findall(r'<video [^>]*src="([^"]+)"', html)
    assert sources == [f"r_files/unet-s{s}/samples_prediction_step{STEPS - 1:08d}.mp4" for s in SEEDS]
    assert all((tmp_path / s).read_bytes() == (log_dir / f"unet-s{i}/media" / Path(s).name).read_bytes()
               for i, s in enumerate(sources))


def test_a_group_of_one_run_gets_no_interval_and_no_test(log_dir: Path, tmp_path: Path) -> None:
    build_report(["*"], tmp_path / "r.html", log_dir=log_dir, group_by="hparams.seed", keys=["video/psnr"],
                 json_path=tmp_path / "s.json")
    psnr = json.loads((tmp_path / "s.json").read_text())["metrics"]["video/psnr"]
    lone = psnr["groups"]["7"]  # only the failed run has seed 7
    assert lone["n"] == 1 and lone["std"] is None and lone["ci_low"] is None and "n=1" in lone["note"]
    with_lone = [c for c in psnr["comparisons"] if "7" in (c["a"], c["b"])]
    assert len(with_lone) == 3 and all(c["p"] is None and "n=1" in c["note"] for c in with_lone)
    html = (tmp_path / "r.html").read_text()
    assert "one run has no spread, so no standard deviation and no interval" in html


def test_a_corrupt_run_is_listed_unreadable_and_the_others_still_reported(log_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "run.db").write_bytes(b"not a database" * 100)
    result = build_report([str(broken), str(log_dir / "unet-s0")], tmp_path / "r.html")
    assert result.runs == 2
    row = re.search(r'<tr data-run="broken">(.*?)</tr>', (tmp_path / "r.html").read_text()).group(1)
    assert 'class="badge unreadable"' in row and "DatabaseError" in row


def test_the_default_grouping_falls_back_to_the_model_when_the_group_does_not_split() -> None:
    runs = [RunData(f"r{i}", Path("."), "finished", group="cmp", settings={"train.model": m})
            for i, m in enumerate(["unet", "unet", "transformer"])]
    key, groups = group_runs(runs, None)
    assert key == "train.model" and {g: len(r) for g, r in groups.items()} == {"unet": 2, "transformer": 1}
    assert group_runs(runs, "group")[1].keys() == {"cmp"}


# ---- curves: downsampling keeps what a researcher looks for ----------------------------------------------
def test_a_single_spike_survives_downsampling_where_striding_loses_it() -> None:
    x = np.arange(1_000_000, dtype=np.float64)
    y = np.sin(x / 5e4)
    y[654_321] = 25.0
    y[222_222] = -25.0
    xs, ys = minmax_downsample(x, y, 500)
    assert len(xs) <= 1002 and np.all(np.diff(xs) > 0)
    assert (xs[ys.argmax()], ys.max()) == (654_321, 25.0) and (xs[ys.argmin()], ys.min()) == (222_222, -25.0)
    assert y[::1000].max() < 2  # what plain striding to the same size would draw
    assert (xs[0], xs[-1]) == (0, 999_999)


def test_downsampling_drops_non_finite_values_sorts_and_keeps_short_series_whole() -> None:
    x = np.array([3.0, 1.0, 2.0, 4.0])
    y = np.array([30.0, 10.0, math.nan, math.inf])
    assert [a.tolist() for a in minmax_downsample(x, y, 10)] == [[1.0, 3.0], [10.0, 30.0]]
    mx, my = bucket_mean(np.arange(10.0), np.arange(10.0), 2)
    assert mx.tolist() == [2.0, 7.0] and my.tolist() == [2.0, 7.0]
    with pytest.raises(ValueError, match=r"buckets: expected an int >= 1, received 0"):
        minmax_downsample(x, y, 0)


def _big_run(log_dir: Path, steps: int, spike_at: int) -> None:
    """A run of one key written through RunStore as the tracker's worker writes it (one transaction per batch)."""
    rng = np.random.default_rng(0)
    values = 1.0 / np.sqrt(np.arange(1, steps + 1)) + 0.01 * rng.random(steps)
    values[spike_at] = 5.0
    values[spike_at + 7] = math.nan
    now = time.time()
    with RunStore(log_dir / "big", create=True) as store:
        store.set_meta({"run_name": "big", "status": "finished", "created_at": now, "finished_at": now + 60})
        store.write([("train/loss", s, now + s * 1e-3, float(v)) for s, v in enumerate(values)])


def test_a_spike_in_a_long_run_is_drawn_and_its_nan_marked(tmp_path: Path) -> None:
    _big_run(tmp_path / "runs", 20_000, spike_at=12_345)
    build_report(["big"], tmp_path / "r.html", log_dir=tmp_path / "runs", keys=["train/loss"])
    chart = (tmp_path / "r.html").read_text().split('data-key="train/loss"')[1].split("</figure>")[0]
    linear = chart.split('<g class="scale-lin">')[1].split('<g class="scale-log">')[0]
    raw = re.search(r'<path class="raw" [^>]*d="M([^"]+)"', linear).group(1)
    points = np.array([[float(v) for v in p.split(",")] for p in raw.split("L")])
    assert len(points) <= 1002
    top = points[points[:, 1].argmin()]  # the highest point on screen (SVG y grows downwards)
    assert top[0] == pytest.approx(svg.LEFT + 12_345 / 19_999 * (svg.WIDTH - svg.LEFT - svg.RIGHT), abs=0.1)
    assert top[1] == pytest.approx(svg.TOP, abs=8)  # at the top of the plot area
    assert chart.count('<path class="nonfinite"') == 1 and "NaN or inf near here" in chart
