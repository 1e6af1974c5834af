"""Alerts (`tracker.alert` and the rules of `opusclip_track.alerts`) through a real tracker, read back from the store,
TensorBoard's reader, the W&B offline run's `.wandb` file, MLflow's client, `opusclip-track runs show`, the HTML
report and a `sync` replay.

One run (module fixture) logs values that trip every value rule once, repeats each trip (the cool-down must hold
the repeats back) and raises one alert by hand twice; each test reads one destination. The watchdog (`stalled`)
is tested apart, with a silence of a fraction of a second and a real wait.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from _env import isolate
from _readers import read_back, tensorboard_accumulator
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.alerts import DEFAULT_RULES, AlertRules
from opusclip_track.backends.wandb import transaction_log_payloads
from opusclip_track.cli import main
from opusclip_track.records import Alert, Scalars, from_store_event
from opusclip_track.report import build_report
from opusclip_track.sync import sync

# (rule, key, step, level) of every alert the fixture's run must raise, in order: each trip once
EXPECTED = [("gpu_memory", "sys/gpu0", 20, "warn"), ("loss_spike", "train/loss", 30, "warn"),
            ("throughput_drop", "perf/samples_per_s", 35, "warn"), ("nonfinite_loss", "train/loss", 45, "error"),
            ("nonfinite_loss", "val/loss", 50, "error"), ("user", "Checkpoint missing", 55, "error")]
USER_TEXT = "no checkpoint <b>written</b> at step 55, api_key=abc123"


@dataclass
class Run:
    config: TrackingConfig
    printed: list[logging.LogRecord]

    @property
    def alerts(self) -> list[dict]:
        return RunStore(self.config.run_dir).events("alert")


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("opusclip-track alert"):
            self.records.append(record)


def _values(step: int) -> dict[str, float]:
    """One step of the run: every value rule trips once (at steps 20, 30, 35, 45, 50) and stays tripped."""
    loss = 1.0 + 0.01 * (step % 7)
    return {
        "train/loss": math.nan if step >= 45 else 50.0 if step in (30, 31) else loss,
        "amp/loss_scale": 65536.0 * (2 if step >= 40 else 1),  # doubles by design: ignored (`*loss_scale*`)
        "perf/samples_per_s": (100.0 + step % 3) if step < 35 else 20.0,
        "sys/gpu0/memory_used_gb": 40.0 if step < 20 else 78.0, "sys/gpu0/memory_total_gb": 80.0,  # 97.5% from 20
        "sys/gpu1/memory_used_gb": 70.0, "sys/gpu1/memory_total_gb": 80.0,  # 87.5%: below 95%
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("alerts")
    keep = _Keep()
    logger = logging.getLogger("opusclip_track")
    with pytest.MonkeyPatch.context() as env:  # as conftest's per-test isolation, for the whole module
        isolate(env, root)
        config = TrackingConfig(experiment_name="alerts", run_name="tripped", log_dir=str(root / "runs"),
                                project_name="opusclip-alerts", wandb_mode="offline", backends=["mlflow"],
                                system_monitor_interval_s=0)
        logger.addHandler(keep)
        try:
            with AdvancedExperimentTracker(config) as tracker:
                for step in range(60):
                    tracker.log_metrics(_values(step), step=step)
                    if step % 5 == 0:
                        tracker.log_metrics({"val/loss": math.inf if step == 50 else 1.1}, step=step)
                    if step == 55:
                        for _ in range(2):  # the second within `wait_s` (60 s): dropped
                            tracker.alert("Checkpoint missing", USER_TEXT, level="ERROR")
        finally:
            logger.removeHandler(keep)
        yield Run(config, keep.records)


def _shown(alert: dict) -> tuple[str, str, int, str]:
    data = alert["data"]
    return data["rule"], data["key"], alert["step"], data["level"]


# ---- the store and the log: each alert once -------------------------------------------------------------------
def test_each_rule_trips_once_within_its_cooldown_and_the_store_holds_it(run: Run) -> None:
    assert [_shown(a) for a in run.alerts] == EXPECTED
    by_rule = {a["data"]["rule"]: a for a in run.alerts}
    assert by_rule["loss_spike"]["data"]["title"] == "Loss spike: train/loss"
    assert "train/loss = 50 at step 30" in by_rule["loss_spike"]["data"]["text"]
    assert "above the median 1.03" in by_rule["loss_spike"]["data"]["text"]
    assert "is 20% of its running median 101" in by_rule["throughput_drop"]["data"]["text"]
    assert "gpu0 uses 78.00 of 80.00 GiB (98%)" in by_rule["gpu_memory"]["data"]["text"]
    assert {a["name"] for a in run.alerts if a["data"]["rule"] == "nonfinite_loss"} == {
        "NaN loss: train/loss", "Inf loss: val/loss"}
    assert all(a["data"]["cooldown_s"] == 600.0 for a in run.alerts if a["data"]["rule"] != "user")


def test_a_user_alert_is_redacted_and_its_level_stored_in_lower_case(run: Run) -> None:
    (user,) = [a for a in run.alerts if a["data"]["rule"] == "user"]
    assert user["data"] == {"title": "Checkpoint missing", "level": "error", "rule": "user",
                            "key": "Checkpoint missing", "cooldown_s": 60.0,
                            "text": "no checkpoint <b>written</b> at step 55, api_key=***REDACTED***"}


def test_each_alert_is_printed_once_at_its_level(run: Run) -> None:
    printed = [(r.levelno, r.getMessage()) for r in run.printed]
    assert len(printed) == len(EXPECTED)
    assert [level for level, _ in printed] == [logging.ERROR if e[3] == "error" else logging.WARNING
                                               for e in EXPECTED]
    assert printed[1][1].startswith("opusclip-track alert (warn) Loss spike: train/loss: train/loss = 50 at step 30")
    assert printed[1][1].endswith("[run tripped, step 30]")


def test_the_store_rows_come_back_as_the_alerts_that_wrote_them(run: Run) -> None:
    rebuilt = [from_store_event(e) for e in run.alerts]
    assert all(isinstance(r, Alert) for r in rebuilt)
    spike = rebuilt[1]
    assert isinstance(spike, Alert)
    assert (spike.name, spike.title, spike.level, spike.rule, spike.key, spike.step, spike.cooldown_s) == (
        "alerts/Loss spike: train/loss", "Loss spike: train/loss", "warn", "loss_spike", "train/loss", 30, 600.0)
    assert spike.text == run.alerts[1]["data"]["text"] and spike.wall_time == run.alerts[1]["wall_time"]


# ---- the backends ------------------------------------------------------------------------------------------------
def _tensorboard_alerts(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """The Text tab's entries under `alerts/`, as TensorBoard's own reader sees them."""
    acc = tensorboard_accumulator(run_dir)
    return {tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
            for tag in acc.PluginTagToContent("text") if tag.startswith("alerts/")}


def test_tensorboard_shows_each_alert_in_the_text_tab_under_alerts(run: Run) -> None:
    shown = _tensorboard_alerts(run.config.run_dir)
    assert sorted(shown) == sorted(f"alerts/{a['data']['title']}" for a in run.alerts)
    assert shown["alerts/NaN loss: train/loss"] == [(45, "**ERROR** at step 45: train/loss is nan at step 45")]
    assert shown["alerts/Checkpoint missing"] == [(55, f"**ERROR** at step 55: {run.alerts[-1]['data']['text']}")]


def _wandb_alerts(run_dir: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = run_dir.rglob("*.wandb")
    records = [pb.Record.FromString(p) for p in transaction_log_payloads(log_file.read_bytes())]
    return [r.alert for r in records if r.WhichOneof("record_type") == "alert"]


def test_wandb_offline_run_records_each_alert_for_wandb_sync(run: Run) -> None:
    alerts = _wandb_alerts(run.config.run_dir)
    assert [(a.title, a.level, a.wait_duration) for a in alerts] == [
        (e["data"]["title"], e["data"]["level"].upper(), int(e["data"]["cooldown_s"] * 1000)) for e in run.alerts]
    assert alerts[-1].text == run.alerts[-1]["data"]["text"]
    shown = read_back("wandb", run.config).alerts  # each with its step: the HTML of its text in the run's history
    assert shown["Loss spike: train/loss"] == [(30, "warn", run.alerts[1]["data"]["text"])]


def test_mlflow_tags_the_run_with_each_alert_and_keeps_its_text(run: Run) -> None:
    from mlflow import MlflowClient

    from opusclip_track.backends.mlflow import RUN_NAME_TAG, resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(None, run.config.run_dir))
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("opusclip-alerts").experiment_id],
                                       f"tags.`{RUN_NAME_TAG}` = 'tripped'")
    tags = {k: v for k, v in mlflow_run.data.tags.items() if k.startswith("opusclip.alert.")}
    assert sorted(tags) == sorted(f"opusclip.alert.{a['data']['title']}" for a in run.alerts)
    assert tags["opusclip.alert.Inf loss: val/loss"].startswith("ERROR at step 50 (")
    assert tags["opusclip.alert.Inf loss: val/loss"].endswith("): val/loss is inf at step 50")
    files = sorted(f.path for f in client.list_artifacts(mlflow_run.info.run_id, "alerts"))
    assert "alerts/Loss_spike_train_loss_step00000030.txt" in files and len(files) == len(EXPECTED)


# ---- runs show, the report, sync ---------------------------------------------------------------------------------
def test_runs_show_lists_the_alerts_above_the_scalars(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--log-dir", run.config.log_dir, "show", "tripped"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("alerts: 6")
    shown = lines[start + 1:start + 7]
    assert [line.split()[3:6] for line in shown][:2] == [["20", "WARN", "GPU"], ["30", "WARN", "Loss"]]
    assert shown[3].split("step 45  ERROR  ")[1] == "NaN loss: train/loss: train/loss is nan at step 45"
    assert lines.index("alerts: 6") < next(i for i, line in enumerate(lines) if line.startswith("key "))
    assert main(["runs", "--log-dir", run.config.log_dir, "show", "tripped", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert [(a["rule"], a["key"], a["step"], a["level"]) for a in data["alerts"]] == EXPECTED


def test_the_report_shows_the_alerts_on_top(run: Run, tmp_path: Path) -> None:
    build_report(["tripped"], tmp_path / "report.html", log_dir=run.config.log_dir)
    html = (tmp_path / "report.html").read_text()
    assert html.index('id="alerts"') < html.index('id="runs"')
    section = html.split('<section id="alerts"', 1)[1].split("</section>", 1)[0]
    assert "Alerts (6)" in section and section.count('class="alert ') == 6
    assert section.count('class="alert error"') == 3 and "<b>Loss spike: train/loss</b>" in section
    assert "&lt;b&gt;written&lt;/b&gt;" in section and "<b>written" not in section


def test_sync_replays_the_alerts(runs_dir: Path) -> None:
    config = TrackingConfig(experiment_name="alerts", run_name="store-only", log_dir=str(runs_dir),
                            use_tensorboard=False, use_wandb=False, system_monitor_interval_s=0)
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_metrics({"train/loss": math.nan}, step=3)
        tracker.alert("Eval done", "FVD 212.5", level="info", step=4)
    result = sync(config.run_dir, "tensorboard")
    assert result.counts["alert"] == 2
    texts = _tensorboard_alerts(config.run_dir)
    assert texts["alerts/NaN loss: train/loss"] == [(3, "**ERROR** at step 3: train/loss is nan at step 3")]
    assert texts["alerts/Eval done"] == [(4, "**INFO** at step 4: FVD 212.5")]


# ---- rules: settings, device values, cool-down, the watchdog ----------------------------------------------------
def _tracker(runs_dir: Path, name: str, **alerts: object) -> AdvancedExperimentTracker:
    return AdvancedExperimentTracker(TrackingConfig(
        experiment_name="alerts", run_name=name, log_dir=str(runs_dir), use_tensorboard=False, use_wandb=False,
        system_monitor_interval_s=0, flush_interval_s=0.05, alerts=alerts or True))


def _rules_raised(tracker: AdvancedExperimentTracker) -> list[tuple[str, str, int]]:
    return [(e["data"]["rule"], e["data"]["key"], e["step"]) for e in RunStore(tracker.run_dir).events("alert")]


def test_a_tensor_loss_is_checked_after_the_worker_resolved_it(runs_dir: Path) -> None:
    with _tracker(runs_dir, "tensor") as tracker:
        tracker.log_metrics({"train/loss": torch.tensor(float("nan")), "train/aux_loss": torch.tensor([0.5])}, step=7)
    assert _rules_raised(tracker) == [("nonfinite_loss", "train/loss", 7)]


def test_configured_rules_keys_and_thresholds_are_used(runs_dir: Path) -> None:
    with _tracker(runs_dir, "configured", nonfinite_loss={"keys": ["*objective*"]}, loss_spike=False,
                  gpu_memory={"fraction": 0.5}) as tracker:
        for step in range(30):
            tracker.log_metrics({"train/loss": math.nan if step > 25 else 1.0 + (step == 25) * 100,
                                 "train/objective": math.inf if step == 29 else 1.0,
                                 "sys/gpu3/memory_total_gb": 16.0, "sys/gpu3/memory_used_gb": 9.0}, step=step)
    assert _rules_raised(tracker) == [("gpu_memory", "sys/gpu3", 0), ("nonfinite_loss", "train/objective", 29)]


def _spikes_by_definition(values: list[float], window: int, min_points: int, k: float) -> list[int]:
    """The steps the documented rule flags: a value above the median of its last `window` finite values (once there
    are `min_points`) by more than k x 1.4826 x their MAD, computed from scratch."""
    flagged, kept = [], []
    for step, value in enumerate(values):
        if not math.isfinite(value):
            continue
        if len(kept) >= min_points:
            median = statistics.median(kept)
            sigma = 1.4826 * statistics.median(abs(v - median) for v in kept)
            if value > median and (sigma == 0 or (value - median) / sigma > k):
                flagged.append(step)
        kept = [*kept, value][-window:]
    return flagged


def _loss_curve(rng: random.Random, length: int) -> list[float]:
    """Regimes a loss goes through: noisy plateaus, steady falls and rises, sharp drops, constant stretches, bumps
    near the threshold, NaN."""
    values, level = [], 1.0
    while len(values) < length:
        kind, n = rng.choice(["noise", "fall", "rise", "drop", "flat", "bumps", "nan"]), rng.randint(1, 40)
        for i in range(n):
            if kind == "fall":
                level *= 0.97
            elif kind == "rise":
                level += 0.01 * rng.random()
            elif kind == "drop" and i == 0:
                level *= rng.choice([0.1, 0.5])
            noise = 0.0 if kind == "flat" else rng.gauss(0, 0.02) * level
            bump = rng.choice([0.0, 0.0, 0.05, 0.2, 1.0]) * level if kind == "bumps" else 0.0
            values.append(math.nan if kind == "nan" and i % 5 == 0 else level + noise + bump)
    return values[:length]


def test_loss_spikes_are_raised_exactly_where_the_median_and_mad_of_the_window_say() -> None:
    # The rule compares most values with a cached floor under the threshold instead of the window's median and MAD;
    # it must flag the very steps the definition flags, near the threshold and across regime changes included.
    rng = random.Random(15)
    for trial in range(150):
        window = rng.choice([3, 5, 8, 20, 50, 100])
        min_points, k = rng.randint(3, window), rng.choice([0.5, 1.0, 2.0, 3.0, 10.0])
        values = _loss_curve(rng, rng.randint(50, 400))
        rules = AlertRules({"loss_spike": {"window": window, "min_points": min_points, "k": k, "cooldown_s": 0},
                            "nonfinite_loss": False})
        raised = rules.apply([Scalars(step, 1e9 + step, {"train/loss": v}) for step, v in enumerate(values)])
        steps = [r.step for r in raised if isinstance(r, Alert)]
        assert steps == _spikes_by_definition(values, window, min_points, k), (trial, window, min_points, k)


def test_rules_turned_off_raise_nothing_but_tracker_alert_still_works(runs_dir: Path) -> None:
    config = TrackingConfig(experiment_name="alerts", log_dir=str(runs_dir), use_tensorboard=False,
                            use_wandb=False, system_monitor_interval_s=0, alerts=False)
    assert all(settings is False for settings in config.alerts.values())
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_metrics({"train/loss": math.nan, "sys/gpu0/memory_used_gb": 80.0,
                             "sys/gpu0/memory_total_gb": 80.0}, step=0)
        tracker.alert("by hand", "still raised", wait_s=0)
        tracker.alert("by hand", "and again: wait_s=0", wait_s=0)
    assert _rules_raised(tracker) == [("user", "by hand", 0), ("user", "by hand", 0)]


def test_the_same_alert_comes_back_after_its_cooldown(runs_dir: Path) -> None:
    with _tracker(runs_dir, "cooldown", nonfinite_loss={"cooldown_s": 0.2}) as tracker:
        tracker.log_metrics({"train/loss": math.nan}, step=0)
        tracker.log_metrics({"train/loss": math.nan}, step=1)  # within 0.2 s of step 0 unless the machine stalls
        time.sleep(0.3)
        tracker.log_metrics({"train/loss": math.nan}, step=2)
        tracker.log_metrics({"val/loss": math.nan}, step=2)  # another key: another alert
    raised = _rules_raised(tracker)
    assert raised[0] == ("nonfinite_loss", "train/loss", 0) and raised[-2:] == [
        ("nonfinite_loss", "train/loss", 2), ("nonfinite_loss", "val/loss", 2)]


def _wait_for_alerts(tracker: AdvancedExperimentTracker, rule: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 30.0  # a bound for a loaded machine, not a measurement
    while time.monotonic() < deadline:
        tracker.flush()
        found = [e for e in RunStore(tracker.run_dir).events("alert") if e["data"]["rule"] == rule]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {count} {rule} alert(s) within 30 s")


def test_stalled_fires_once_per_silence_and_system_samples_do_not_count(runs_dir: Path) -> None:
    with _tracker(runs_dir, "stalled", stalled={"minutes": 0.005, "cooldown_s": 0}) as tracker:  # 0.3 s
        tracker.log_metrics({"train/loss": 1.0}, step=5)
        first = time.monotonic()
        while time.monotonic() - first < 1.2:  # a silence of the loop; the system monitor goes on sampling
            tracker.log_metrics({"sys/cpu_percent": 12.0}, step=5)
            time.sleep(0.02)
        (stalled,) = _wait_for_alerts(tracker, "stalled", 1)  # one alert for the silence, however long
        assert stalled["step"] == 5 and stalled["data"]["level"] == "warn"
        assert stalled["data"]["title"] == "Stalled: nothing logged for 0.005 min"
        assert stalled["data"]["text"].startswith("nothing was logged for ")
        assert "(since step 5 at " in stalled["data"]["text"]
        tracker.log_metrics({"train/loss": 0.9}, step=6)  # the loop is back, then silent again
        second = _wait_for_alerts(tracker, "stalled", 2)[1]
        assert second["step"] == 6


def test_unknown_rules_and_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"TrackingConfig.alerts: unknown rule\(s\) \['loss_spikes'\]; expected "
                                         r"some of \['gpu_memory', 'loss_spike', "):
        TrackingConfig(experiment_name="x", alerts={"loss_spikes": {"k": 3}})
    with pytest.raises(ValueError, match=r"TrackingConfig.alerts.loss_spike: unknown setting\(s\) \['sigma'\]"):
        TrackingConfig(experiment_name="x", alerts={"loss_spike": {"sigma": 3}})
    with pytest.raises(ValueError, match=r"TrackingConfig.alerts.gpu_memory.fraction: expected a number in "
                                         r"\(0, 1\], received 95"):
        TrackingConfig(experiment_name="x", alerts={"gpu_memory": {"fraction": 95}})
    with pytest.raises(TypeError, match=r"TrackingConfig.alerts.throughput_drop.window: expected an int, "
                                        r"received float 10.5"):
        TrackingConfig(experiment_name="x", alerts={"throughput_drop": {"window": 10.5}})
    with pytest.raises(ValueError, match=r"TrackingConfig.alerts.loss_spike.min_points: expected at most window"):
        TrackingConfig(experiment_name="x", alerts={"loss_spike": {"window": 10}})
    with pytest.raises(TypeError, match=r"TrackingConfig.alerts.nonfinite_loss.keys: expected a list of key "
                                        r"patterns"):
        TrackingConfig(experiment_name="x", alerts={"nonfinite_loss": {"keys": "*loss*"}})
    (tmp_path / "c.yaml").write_text("experiment_name: x\nalerts:\n  loss_spike: {k: 6}\n  stalled: false\n")
    config = TrackingConfig.from_yaml(tmp_path / "c.yaml")
    assert config.alerts["loss_spike"] == {**DEFAULT_RULES["loss_spike"], "k": 6.0}
    assert config.alerts["stalled"] is False and config.alerts["gpu_memory"] == DEFAULT_RULES["gpu_memory"]
    assert TrackingConfig.from_dict(config.to_dict()).alerts == config.alerts  # as a run records it


def test_bad_alert_arguments_are_clear_errors(runs_dir: Path) -> None:
    with _tracker(runs_dir, "arguments") as tracker:
        with pytest.raises(ValueError, match=r"level: expected one of info, warn, error, received 'fatal'"):
            tracker.alert("t", "x", level="fatal")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"title: expected non-empty string keys, received str ''"):
            tracker.alert("", "x")
        with pytest.raises(TypeError, match=r"text: expected a str, received int"):
            tracker.alert("t", 3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"wait_s: expected a number of seconds >= 0, received -1"):
            tracker.alert("t", "x", wait_s=-1)
        tracker.alert("fine", "x", level="WARN")
    assert _rules_raised(tracker) == [("user", "fine", 0)]
