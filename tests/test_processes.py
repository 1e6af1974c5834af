"""The tracker across processes, with real ones: forked children, a second process on the same run, a script
that dies of an uncaught exception, and SIGKILL (what it loses, measured as the age of the lost records)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opusclip_track import AdvancedExperimentTracker, RunLockedError, RunStore, TrackingConfig

REPO = Path(__file__).resolve().parents[1]


def run_script(path: Path, body: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    path.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n" + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout)


def test_a_forked_child_neither_logs_into_nor_closes_the_parents_run(runs_dir: Path, tmp_path: Path) -> None:
    proc = run_script(tmp_path / "forks.py", f"""
        import json, multiprocessing, os, sys
        import torch
        from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig

        tracker = AdvancedExperimentTracker(TrackingConfig(experiment_name="fork", log_dir={str(runs_dir)!r},
                                                           use_wandb=False, flush_interval_s=0.05))
        tracker.log_metrics({{"loss": 0.0}}, step=0)
        tracker.flush()
        errors = {str(tmp_path)!r}
        status = {{}}

        def child(tag):  # tries to log, then exits the way each kind of child does
            try:
                tracker.log_metrics({{"loss": 99.0}}, step=99)
            except RuntimeError as exc:
                open(os.path.join(errors, tag + ".txt"), "w").write(str(exc))

        pid = os.fork()
        if pid == 0:
            child("os_fork")
            sys.exit(0)  # runs the child's atexit handlers
        os.waitpid(pid, 0)
        status["os_fork"] = RunStore(tracker.run_dir).meta()["status"]

        process = multiprocessing.get_context("fork").Process(target=child, args=("multiprocessing",))
        process.start()
        process.join()
        status["multiprocessing"] = RunStore(tracker.run_dir).meta()["status"]

        class Steps(torch.utils.data.Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                return torch.tensor(float(i))

        loader = torch.utils.data.DataLoader(Steps(), batch_size=2, num_workers=2, multiprocessing_context="fork")
        for i, batch in enumerate(loader):
            tracker.log_metrics({{"batch_sum": batch.sum()}}, step=1 + i)
        del loader
        status["dataloader"] = RunStore(tracker.run_dir).meta()["status"]

        tracker.log_metrics({{"loss": 2.0}}, step=5)
        tracker.close()
        print(json.dumps(status))
        print(tracker.run_dir)
    """)
    assert proc.returncode == 0, proc.stderr
    status_line, run_dir = proc.stdout.strip().splitlines()[-2:]
    assert json.loads(status_line) == {"os_fork": "running", "multiprocessing": "running", "dataloader": "running"}
    for tag in ("os_fork", "multiprocessing"):
        message = (tmp_path / f"{tag}.txt").read_text()
        assert "fork" in message and "belongs to process" in message and "log from the parent" in message
    store = RunStore(Path(run_dir))
    assert store.meta()["status"] == "finished"
    assert [s for s, _, _ in store.history("loss")] == [0, 5], "nothing from the children"
    assert [v for _, _, v in store.history("batch_sum")] == [1.0, 5.0, 9.0, 13.0]


def test_a_second_process_cannot_open_a_run_that_is_open(runs_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from opusclip_track import AdvancedExperimentTracker, TrackingConfig
        tracker = AdvancedExperimentTracker(TrackingConfig(experiment_name="shared", run_name="shared",
                                                           log_dir={str(runs_dir)!r}, use_wandb=False))
        tracker.log_metrics({{"loss": 1.0}}, step=0)
        tracker.flush()
        print("ready", flush=True)
        time.sleep(120)
    """))
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        config = {"experiment_name": "shared", "log_dir": str(runs_dir), "use_wandb": False}
        with pytest.raises(RunLockedError) as info:
            AdvancedExperimentTracker(TrackingConfig(run_name="shared", **config))  # type: ignore[arg-type]
        assert "'shared'" in str(info.value) and f"process {holder.pid}" in str(info.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with AdvancedExperimentTracker(TrackingConfig(resume="shared", **config)) as resumed:  # type: ignore[arg-type]
        resumed.log_metrics({"loss": 2.0})
        with pytest.raises(RunLockedError, match="this process"):
            AdvancedExperimentTracker(TrackingConfig(run_name="shared", **config))  # type: ignore[arg-type]
    with AdvancedExperimentTracker(TrackingConfig(resume="shared", **config)) as again:  # type: ignore[arg-type]
        again.log_metrics({"loss": 3.0})
    assert [v for _, _, v in RunStore(runs_dir / "shared").history("loss")] == [1.0, 2.0, 3.0]


def test_a_script_that_dies_of_an_uncaught_exception_is_recorded_as_failed(runs_dir: Path, tmp_path: Path) -> None:
    proc = run_script(tmp_path / "dies.py", f"""
        from opusclip_track import AdvancedExperimentTracker, TrackingConfig
        tracker = AdvancedExperimentTracker(TrackingConfig(experiment_name="dies", log_dir={str(runs_dir)!r},
                                                           use_wandb=False, flush_interval_s=30))
        for step in range(5):
            tracker.log_metrics({{"loss": float(step)}}, step=step)
        print(tracker.run_dir, flush=True)
        raise ValueError("bad batch at step 4")
    """)
    assert proc.returncode == 1 and "ValueError: bad batch at step 4" in proc.stderr, "the traceback is still shown"
    store = RunStore(Path(proc.stdout.strip()))
    meta = store.meta()
    assert meta["status"] == "failed" and meta["error"] == "ValueError: bad batch at step 4"
    assert len(store.history("loss")) == 5


# ---- SIGKILL: what is lost, as the age of the lost records -------------------------------------------------
def sigkill_trials(runs_dir: Path, script: Path, *, trials: int, interval_s: float, seed: int = 0,
                   pace_s: float = 0.001) -> list[dict]:
    """Run `trials` forked children that each log a scalar every `pace_s` for a random 0.5-2 s and then
    SIGKILL themselves. Returns, per trial, how many records were logged, how many the store lacks,
    and the age of the oldest one it lacks (seconds between its log call and the kill)."""
    proc = run_script(script, f"""
        import json, os, random, signal, time
        from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig

        random.seed({seed})
        results = []
        for trial in range({trials}):
            duration = random.uniform(0.5, 2.0)
            times_file = os.path.join({str(runs_dir)!r}, f"times{{trial}}.json")
            pid = os.fork()
            if pid == 0:
                tracker = AdvancedExperimentTracker(TrackingConfig(
                    experiment_name="killed", run_name=f"killed-{{trial}}", log_dir={str(runs_dir)!r},
                    use_wandb=False, use_tensorboard=False, flush_interval_s={interval_s},
                    system_monitor_interval_s=0))
                times = []
                end = time.time() + duration
                while time.time() < end:
                    times.append(time.time())
                    tracker.log_metrics({{"x": 1.0}}, step=len(times) - 1)
                    time.sleep({pace_s})
                slowest = tracker.health["slowest_batch_s"]
                killed_at = time.time()
                with open(times_file, "w") as fh:
                    json.dump({{"times": times, "killed_at": killed_at, "slowest_batch_s": slowest}}, fh)
                os.kill(os.getpid(), signal.SIGKILL)
            _, wait_status = os.waitpid(pid, 0)
            assert os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL
            with open(times_file) as fh:
                logged = json.load(fh)
            store = RunStore(os.path.join({str(runs_dir)!r}, f"killed-{{trial}}"))
            stored = {{step for step, _, _ in store.history("x")}}
            lost = [logged["killed_at"] - t for step, t in enumerate(logged["times"]) if step not in stored]
            results.append({{"logged": len(logged["times"]), "lost": len(lost), "oldest_lost_s": max(lost, default=0.0),
                             "slowest_batch_s": logged["slowest_batch_s"]}})
        print(json.dumps(results))
    """, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_sigkill_loses_only_records_younger_than_the_flush_interval_plus_one_batch(runs_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """README: a SIGKILL loses at most the records logged in the last `flush_interval_s` plus the worker's
    time for one batch (`health["slowest_batch_s"]`, read in the child just before the kill, so the batch in
    flight at the kill is not in it), give or take the wake-up latency of a thread on a loaded machine: 0.2 s
    are allowed for both."""
    interval = 0.25
    results = sigkill_trials(runs_dir, tmp_path / "trials.py", trials=6, interval_s=interval)
    assert all(r["logged"] > 100 for r in results)
    assert sum(r["lost"] for r in results) > 0, "the kills do land while records are in flight"
    for r in results:
        assert r["oldest_lost_s"] <= interval + r["slowest_batch_s"] + 0.2, results
