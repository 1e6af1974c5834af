"""No secret reaches a file: a real run (store, TensorBoard, W&B offline, a checkpoint) is grepped byte by byte.

The run gets every secret form a user reported leaking, through every way in: the config (`extra`, notes),
hyperparameters, a config update, free text, a checkpoint's `extra`, the command line and the environment.
Then every file under the run directory and the checkpoint directory, binary files included (SQLite, event
files, the `.wandb` log, W&B's debug logs and metadata, the checkpoint's zip), is searched for each secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from opusclip_track import RunStore
from opusclip_track.config import REDACTED

REPO = Path(__file__).resolve().parents[1]
# A string that must show up in every file that records the run: proof the grep looks where the data is.
VISIBLE = "visible-marker-7f3a"

# name -> the secret string; each appears once below, in the form a user reported leaking.
SECRETS = {
    "accesstoken": "s3cret-accesstoken-01", "secretkey": "s3cret-secretkey-02", "passphrase": "s3cret-pass-03",
    "auth": "s3cret-auth-04", "authorization": "s3cret-authz-05", "pwd": "s3cret-pwd-06",
    "bearer": "s3cret-bearer-07", "redis_url": "s3cret-redis-08", "at_url": "atpw-09a@atpw-09b",
    "notes_url": "s3cret-notes-10", "notes_key": "s3cret-notes-11", "hparam_url": "s3cret-hparam-12",
    "hparam_nested": "s3cret-client-13", "update": "s3cret-hf-14", "text_password": "s3cret-text-15",
    "text_bearer": "s3cret-text-16", "text_url": "textpw-17a@textpw-17b", "argv_api_key": "s3cret-argv-18",
    "argv_password": "s3cret-argv-19", "argv_token": "s3cret-argv-20", "argv_url": "argvpw-21a@argvpw-21b",
    "checkpoint_key": "s3cret-ckpt-22", "checkpoint_url": "s3cret-ckpt-23", "env_key": "s3cret-env-24",
}

SCRIPT = textwrap.dedent('''
    import json
    import torch
    from opusclip_track import AdvancedExperimentTracker, TrackingConfig

    S = json.loads(open("secrets.json").read())  # not on the command line: argv is recorded too
    config = TrackingConfig(
        experiment_name="secrets", run_name="leaky", wandb_mode="offline", system_monitor_interval_s=0.0,
        notes=f"cache redis://:{S['notes_url']}@cache:6379 api_key={S['notes_key']} {S['visible']}",
        extra={"accesstoken": S["accesstoken"], "secretkey": S["secretkey"], "passphrase": S["passphrase"],
               "auth": S["auth"], "authorization": S["authorization"], "pwd": S["pwd"], "bearer": S["bearer"],
               "cache": f"redis://:{S['redis_url']}@cache:6379/0", "remote": f"https://b:{S['at_url']}@host/x",
               "token_dim": 64, "label": S["visible"]})
    model = torch.nn.Linear(2, 2)
    with AdvancedExperimentTracker(config) as tracker:
        tracker.log_hyperparameters({"db": f"redis://:{S['hparam_url']}@h", "lr": 0.1,
                                     "nested": {"client_secret": S["hparam_nested"]}, "label": S["visible"]})
        tracker.update_config({"hf_token": S["update"], "label2": S["visible"]})
        tracker.log_text("setup", f"password: {S['text_password']}\\nAuthorization: Bearer {S['text_bearer']}\\n"
                                  f"mirror https://u:{S['text_url']}@mirror/x {S['visible']}", step=1)
        tracker.log_metrics({"train/loss": 1.0}, step=1)
        tracker.save_checkpoint(model, None, None, epoch=0, step=1, metrics={"train/loss": 1.0},
                                extra={"wandb_api_key": S["checkpoint_key"], "label": S["visible"],
                                       "source": f"https://b:{S['checkpoint_url']}@h/x"})
''')


def test_no_secret_reaches_any_file_of_the_run_or_its_checkpoints(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    (tmp_path / "secrets.json").write_text(json.dumps({**SECRETS, "visible": VISIBLE}))
    argv = ["--api-key", SECRETS["argv_api_key"],
            f"--password={SECRETS['argv_password']}", "--token", SECRETS["argv_token"],
            "--mirror", f"https://u:{SECRETS['argv_url']}@mirror/x", "--label", VISIBLE]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_API_KEY": SECRETS["env_key"]}
    done = subprocess.run([sys.executable, str(script), *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    files = [p for root in (tmp_path / "runs" / "leaky", tmp_path / "checkpoints" / "leaky")
             for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
    contents = {p.relative_to(tmp_path): p.read_bytes() for p in files}
    names = {p.name for p in contents}
    assert "run.db" in names and any(n.endswith(".wandb") for n in names) and any(n.endswith(".pt") for n in names)
    assert any(n.startswith("events.out.tfevents") for n in names)
    # The grep looks where the data is: the visible marker is in the store, TensorBoard, W&B and the checkpoint.
    for kind in ("run.db", ".wandb", "events.out.tfevents", ".pt"):
        assert any(VISIBLE.encode() in data for path, data in contents.items() if kind in path.name), kind
    command = RunStore(tmp_path / "runs" / "leaky").config()["environment"]["command"]
    assert command[1:4] == ["--api-key", REDACTED, f"--password={REDACTED}"] and VISIBLE in command  # recorded
    # A password holding `@` must go whole: no half of it may be left behind either.
    needles = {name: [secret, *secret.split("@")] if "@" in secret else [secret] for name, secret in SECRETS.items()}
    leaks = [f"{name} ({needle!r}) in {path}" for path, data in contents.items()
             for name, found in needles.items() for needle in found if needle.encode() in data]
    assert not leaks, "secrets found in files:\n" + "\n".join(leaks)
