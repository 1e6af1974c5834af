"""TrackingConfig: defaults, validation naming the field, YAML round trip, secret redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from opusclip_track import TrackingConfig
from opusclip_track.config import REDACTED, is_secret_key, redact_argv, redact_secrets


def test_defaults_follow_the_original_api() -> None:
    cfg = TrackingConfig(experiment_name="vgen")
    assert (cfg.project_name, cfg.use_tensorboard, cfg.use_wandb, cfg.log_frequency, cfg.save_frequency) == \
        ("video-opusclip", True, True, 100, 1000)
    assert (cfg.log_dir, cfg.checkpoint_dir, cfg.wandb_mode, cfg.flush_interval_s) == \
        ("runs", "checkpoints", "auto", 1.0)
    assert cfg.tags == [] and TrackingConfig(experiment_name="x", tags=None).tags == []  # type: ignore[arg-type]


def test_generated_run_names_are_readable_and_unique() -> None:
    names = {TrackingConfig(experiment_name="my exp").run_name for _ in range(50)}
    assert len(names) == 50
    assert all(n is not None and n.startswith("my-exp-") and " " not in n for n in names)


def test_yaml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("experiment_name: sweep-a\nlearning_rate: 0.0003\ntags: [a, b]\nwandb_mode: offline\n")
    cfg = TrackingConfig.from_yaml(path)
    assert (cfg.learning_rate, cfg.tags, cfg.wandb_mode) == (0.0003, ["a", "b"], "offline")
    again = TrackingConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize(("data", "error", "words"), [
    ({"experiment_name": "x", "learning_rat": 0.1}, ValueError, ["unknown field", "learning_rat"]),
    ({"experiment_name": "x", "batch_size": "32"}, TypeError, ["batch_size", "int", "str"]),
    ({"experiment_name": "x", "use_wandb": "yes"}, TypeError, ["use_wandb", "bool"]),
    ({"experiment_name": "x", "log_frequency": 1.5}, TypeError, ["log_frequency", "float"]),
    ({"experiment_name": "x", "tags": ["a", 3]}, TypeError, ["tags"]),
    ({"experiment_name": "x", "wandb_mode": "cloud"}, ValueError, ["wandb_mode", "'cloud'"]),
    ({"experiment_name": "x", "flush_interval_s": 0}, ValueError, ["flush_interval_s", "positive"]),
    ({"experiment_name": "x", "run_name": "a/b"}, ValueError, ["run_name", "'a/b'"]),
    ({"experiment_name": ""}, ValueError, ["experiment_name"]),
])
def test_bad_fields_are_named(data: dict, error: type, words: list[str]) -> None:
    with pytest.raises(error) as info:
        TrackingConfig.from_dict(data)
    for word in words:
        assert word in str(info.value)


def test_secret_detection_and_redaction() -> None:
    for key in ("api_key", "WANDB_API_KEY", "hfToken", "db-password", "client_secret", "apikey"):
        assert is_secret_key(key), key
    for key in ("keyframes", "monkey", "tokenizer_name", "learning_rate", "num_tokens"):
        assert not is_secret_key(key), key
    data = {"api_key": "s1", "nested": {"token": "s2", "keep": 1}, "url": "postgresql://u:s3@host/db",
            "list": [{"password": "s4"}]}
    clean = redact_secrets(data)
    assert "s1" not in str(clean) and "s2" not in str(clean) and "s3" not in str(clean) and "s4" not in str(clean)
    assert clean["nested"]["keep"] == 1 and clean["nested"]["token"] == REDACTED
    cfg = TrackingConfig(experiment_name="x", extra={"wandb_api_key": "s5"})
    assert cfg.to_dict()["extra"]["wandb_api_key"] == REDACTED
    assert cfg.to_dict(redact=False)["extra"]["wandb_api_key"] == "s5"


def test_command_line_redaction() -> None:
    argv = ["train.py", "--api-key", "s1", "--token=s2", "WANDB_API_KEY=s3", "--lr", "0.1",
            "--db", "postgresql://me:s4@localhost/x"]
    clean = redact_argv(argv)
    assert not any(s in " ".join(clean) for s in ("s1", "s2", "s3", "s4"))
    assert clean[:2] == ["train.py", "--api-key"] and "--lr" in clean and "0.1" in clean
