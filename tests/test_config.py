"""TrackingConfig: defaults, validation naming the field, YAML round trip, secret redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from opusclip_track import TrackingConfig
from opusclip_track.config import (
    REDACTED,
    SEED_API_FIELDS,
    is_secret_key,
    redact_argv,
    redact_secrets,
    redact_text,
)


def test_defaults_follow_the_original_api() -> None:
    cfg = TrackingConfig(experiment_name="vgen")
    assert (cfg.project_name, cfg.use_tensorboard, cfg.use_wandb) == ("video-opusclip", True, True)
    assert (cfg.log_dir, cfg.checkpoint_dir, cfg.wandb_mode, cfg.flush_interval_s, cfg.mlflow_tracking_uri) == \
        ("runs", "checkpoints", "auto", 1.0, None)
    assert cfg.tags == [] and TrackingConfig(experiment_name="x", tags=None).tags == []  # type: ignore[arg-type]


def test_recipe_fields_of_the_original_api_are_unset_and_not_recorded_unless_set() -> None:
    """The tracker does not train: a learning rate it was not given must not appear in the run's config."""
    cfg = TrackingConfig(experiment_name="vgen")
    assert all(getattr(cfg, name) is None for name in SEED_API_FIELDS)
    assert not set(SEED_API_FIELDS) & set(cfg.to_dict())
    assert TrackingConfig.from_dict(cfg.to_dict()) == cfg
    given = TrackingConfig(experiment_name="vgen", learning_rate=0.5, batch_size=16, device="cpu")
    recorded = given.to_dict()
    assert (recorded["learning_rate"], recorded["batch_size"], recorded["device"]) == (0.5, 16, "cpu")
    assert "max_epochs" not in recorded and "log_frequency" not in recorded


def test_generated_run_names_are_readable_and_unique() -> None:
    names = {TrackingConfig(experiment_name="my exp").run_name for _ in range(50)}
    assert len(names) == 50
    assert all(n is not None and n.startswith("my-exp-") and " " not in n for n in names)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("field", "value"), [
    ("flush_interval_s", INF), ("flush_interval_s", NAN), ("flush_interval_s", 0.0), ("flush_interval_s", -1.0),
    ("flush_interval_s", 1e-9), ("flush_interval_s", 1e12), ("system_monitor_interval_s", NAN),
    ("system_monitor_interval_s", INF), ("system_monitor_interval_s", -10.0), ("system_monitor_interval_s", 1e-6),
    ("max_queue_bytes", 0), ("max_queue_bytes", -1), ("checkpoint_keep_last", 0), ("checkpoint_keep_best", -2),
    ("learning_rate", NAN), ("learning_rate", INF), ("learning_rate", 0.0), ("learning_rate", -1e-3),
    ("batch_size", 0), ("max_epochs", -1), ("log_frequency", 0), ("save_frequency", 0),
])
def test_unusable_numbers_are_config_errors_naming_the_field(field: str, value: float) -> None:
    """inf as flush interval killed both workers (nothing stored); NaN busy-spun a core."""
    with pytest.raises(ValueError, match=rf"TrackingConfig\.{field}: expected .*received {value!r}"):
        TrackingConfig(experiment_name="x", **{field: value})


@pytest.mark.parametrize("field", ["flush_interval_s", "system_monitor_interval_s", "max_queue_bytes",
                                   "learning_rate", "batch_size", "checkpoint_keep_last"])
def test_bools_are_not_numbers(field: str) -> None:
    with pytest.raises(TypeError, match=rf"TrackingConfig\.{field}: expected .*received bool True"):
        TrackingConfig(experiment_name="x", **{field: True})


def test_usable_numbers_at_the_edges_are_accepted() -> None:
    cfg = TrackingConfig(experiment_name="x", flush_interval_s=0.001, system_monitor_interval_s=0,
                         max_queue_bytes=1, learning_rate=1e-8, batch_size=1)
    assert (cfg.flush_interval_s, cfg.system_monitor_interval_s) == (0.001, 0)
    assert TrackingConfig(experiment_name="x", flush_interval_s=86_400, system_monitor_interval_s=0.01)


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
    ({"experiment_name": "x", "flush_interval_s": 0}, ValueError, ["flush_interval_s", "received 0"]),
    ({"experiment_name": "x", "mlflow_tracking_uri": " "}, ValueError, ["mlflow_tracking_uri", "' '"]),
    ({"experiment_name": "x", "mlflow_tracking_uri": 5}, TypeError, ["mlflow_tracking_uri", "str", "int"]),
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


# Each key a user measured leaking, and the researcher's keys that must stay visible.
SECRET_KEYS = ("api_key", "WANDB_API_KEY", "hfToken", "HF_TOKEN", "db-password", "client_secret", "apikey",
               "accesstoken", "accessToken", "secretkey", "passphrase", "auth", "authorization", "pwd", "bearer",
               "AWS_SECRET_ACCESS_KEY", "x-api-key", "token", "key", "github_token", "dbpassword")
VISIBLE_KEYS = ("author", "authors", "keyframes", "keyframe_interval", "key_frames", "monkey", "tokenizer",
                "tokenizer_name", "num_tokens", "max_tokens", "token_dim", "key_dim", "pad_token", "cls_token",
                "mask_token", "sort_key", "learning_rate", "batch_size")


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_redacted(key: str) -> None:
    assert is_secret_key(key)
    assert redact_secrets({key: "s3cr3t"}) == {key: REDACTED}
    assert "s3cr3t" not in redact_text(f"{key}=s3cr3t") and "s3cr3t" not in redact_text(f'"{key}": "s3cr3t"')


@pytest.mark.parametrize("key", VISIBLE_KEYS)
def test_a_researchers_keys_stay_visible(key: str) -> None:
    assert not is_secret_key(key)
    assert redact_secrets({key: 8}) == {key: 8}
    assert redact_text(f"{key}=8, {key}: 8") == f"{key}=8, {key}: 8"


@pytest.mark.parametrize(("text", "secret", "kept"), [
    ("redis://:PW1@cache:6379/0", "PW1", "redis://:***REDACTED***@cache:6379/0"),
    ("https://b:AA@BB@h/path?q=1", "AA@BB", "https://b:***REDACTED***@h/path?q=1"),
    ("store at postgresql://me:pa:ss@db/x, then", "pa:ss", "postgresql://me:***REDACTED***@db/x,"),
    ("GET https://h/x?access_token=TK1&page=2", "TK1", "&page=2"),
    ("Authorization: Bearer abc.DEF-1", "abc.DEF-1", "Authorization: ***REDACTED***"),
    ("Authorization: Basic dXNlcjpwYXNz\nnext line", "dXNlcjpwYXNz", "next line"),
    ("curl -H 'X-Token: Bearer TK2' url", "TK2", "curl -H"),
    ('{"api_key": "AK1", "lr": 0.1}', "AK1", '"lr": 0.1}'),
    ("{'password': 123456, 'lr': 0.1}", "123456", "'lr': 0.1}"),
    ("password: my secret phrase\nlr: 0.1", "my secret phrase", "\nlr: 0.1"),
    ("WANDB_API_KEY=AK2 python train.py", "AK2", "python train.py"),
    ("python train.py --api-key AK3 --password=PW2 --token TK3 --lr 0.1", "AK3", "--lr 0.1"),
    ("python train.py --api-key AK3 --password=PW2 --token TK3 --lr 0.1", "PW2", "--password="),
    ("python train.py --api-key AK3 --password=PW2 --token TK3 --lr 0.1", "TK3", "--token"),
    ("git remote https://ghp_Ab12cd34ef56@github.com/org/repo.git", "ghp_Ab12cd34ef56", "@github.com/org/repo.git"),
    ("pull https://hf_abcdefgh@huggingface.co/m", "hf_abcdefgh", "@huggingface.co/m"),
    ("clone https://a1b2c3d4e5f6a7b8c9d0e1f2@git.example.org/x", "a1b2c3d4e5f6a7b8c9d0e1f2", "@git.example.org/x"),
])
def test_free_text_loses_its_secrets_and_keeps_the_rest(text: str, secret: str, kept: str) -> None:
    clean = redact_text(text)
    assert secret not in clean and REDACTED in clean
    assert kept in clean


@pytest.mark.parametrize("text", [
    "postgresql://user@host:5432/db",  # a user name alone is not a secret
    "ssh://git@github.com/org/repo.git, https://deploy-user@gitlab.com/x, https://oauth2@host/y",
    "see https://medium.com/@user/post, mail a@b.com",
    "  (key): Linear(in_features=64, out_features=64, bias=True)",  # an attention module's repr
    "step 12:30, ratio 3:4, lr=0.1, Basic usage: run it",
    "pad_token: <pad>, token_dim: 64, keyframe_interval=8, tokenizer=bpe, author: me",
])
def test_free_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_notes_are_redacted_and_the_mlflow_uri_password_is_not_recorded() -> None:
    cfg = TrackingConfig(experiment_name="x", notes="cache redis://:PW9@h, token=TK9; lr sweep",
                         mlflow_tracking_uri="https://u:MP@1@mlflow.example:5000")
    assert "PW9" not in cfg.notes and "TK9" not in cfg.notes and "lr sweep" in cfg.notes
    assert cfg.mlflow_tracking_uri == "https://u:MP@1@mlflow.example:5000"  # the backend needs it as given
    assert "MP@1" not in str(cfg.to_dict()) and "mlflow.example:5000" in cfg.to_dict()["mlflow_tracking_uri"]


def test_command_line_flags() -> None:
    argv = ["train.py", "--api-key", "K1", "--password=P1", "--token", "K2", "--auth", "K3", "-p", "8080",
            "--use-token", "--lr", "0.1", "--cache", "redis://:P2@h", "--notes", "secret=P3"]
    clean = redact_argv(argv)
    assert not any(s in " ".join(clean) for s in ("K1", "P1", "K2", "K3", "P2", "P3"))
    assert clean[clean.index("-p") + 1] == "8080"  # a short -p is a port or a patience as often as a password
    assert clean[clean.index("--use-token") + 1] == "--lr"  # a flag after a boolean flag is not a value
