"""`TrackingConfig`: every setting of a tracked run, validated, with secrets redacted on the way out."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

WandbMode = Literal["auto", "online", "offline", "disabled"]

REDACTED = "***REDACTED***"
# A key is secret when one of its words (split on _ - . / and camel case) is one of these.
_SECRET_WORDS = frozenset({"key", "apikey", "token", "password", "passwd", "secret", "credential", "credentials"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# `--api-key=abc`, `WANDB_API_KEY=abc`, `--token abc` on a command line.
_ARG_SECRET = re.compile(r"^(-{0,2}[A-Za-z0-9_.\-]+)=(.*)$")


def is_secret_key(key: str) -> bool:
    """True when `key` names a secret (`api_key`, `WANDB_API_KEY`, `hfToken`, `db-password`, ...)."""
    words = {w.lower() for w in _WORD_SPLIT.split(key) if w}
    return bool(words & _SECRET_WORDS)


def redact_secrets(value: Any) -> Any:
    """Return a copy of `value` with every entry whose key looks secret replaced by `REDACTED`.

    Walks dicts, lists and tuples; a string holding a URL with a password (`scheme://user:pw@host`) has the
    password removed too.
    """
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact_secrets(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_secrets(v) for v in value)
    if isinstance(value, str):
        return _redact_url_password(value)
    return value


def _redact_url_password(text: str) -> str:
    return re.sub(r"(\w+://[^:/@\s]+:)[^@\s]+(@)", rf"\g<1>{REDACTED}\g<2>", text)


def redact_argv(argv: list[str]) -> list[str]:
    """Redact secrets in a command line: `--api-key X`, `--api-key=X`, `TOKEN=X` and URL passwords."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        match = _ARG_SECRET.match(arg)
        if match and is_secret_key(match.group(1).lstrip("-")):
            out.append(f"{match.group(1)}={REDACTED}")
        elif arg.startswith("-") and is_secret_key(arg.lstrip("-")):
            out.append(arg)
            hide_next = True
        else:
            out.append(_redact_url_password(arg))
    return out


_ADJECTIVES = ("amber", "bold", "brisk", "calm", "clever", "crisp", "eager", "fuzzy", "gentle", "glad",
               "golden", "happy", "keen", "lively", "lucid", "merry", "misty", "nimble", "quiet", "rapid",
               "silent", "sunny", "swift", "vivid", "wise")
_NOUNS = ("aurora", "brook", "canyon", "comet", "delta", "ember", "falcon", "fjord", "glacier", "harbor",
          "lagoon", "meadow", "nebula", "orbit", "pixel", "prism", "quasar", "reel", "river", "shutter",
          "sparrow", "summit", "tide", "vortex", "zephyr")


def generate_run_name(prefix: str = "") -> str:
    """A readable, unique run name: `<prefix>-<adjective>-<noun>-<yyyymmdd-hhmmss>-<4 hex>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    words = f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}"
    name = f"{words}-{stamp}-{secrets.token_hex(2)}"
    return f"{_slug(prefix)}-{name}" if prefix else name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


@dataclass
class TrackingConfig:
    """Settings of one tracked run.

    The first block mirrors the original API; the rest is what a real run needs. Build it directly,
    from a dict (`from_dict`) or a YAML file (`from_yaml`); unknown keys and wrong types raise errors
    naming the field.

    Example:
        >>> cfg = TrackingConfig(experiment_name="vgen-baseline", use_wandb=False, tags=["baseline"])
        >>> cfg.run_name.startswith("vgen-baseline-")
        True
    """

    experiment_name: str
    project_name: str = "video-opusclip"
    use_tensorboard: bool = True
    use_wandb: bool = True
    log_frequency: int = 100
    save_frequency: int = 1000
    max_epochs: int = 100
    learning_rate: float = 1e-3
    batch_size: int = 32
    device: str = "cpu"
    tags: list[str] = field(default_factory=list)
    notes: str = ""

    run_name: str | None = None
    """Generated (readable and unique) when not given."""
    group: str | None = None
    log_dir: str = "runs"
    checkpoint_dir: str = "checkpoints"
    wandb_mode: WandbMode = "auto"
    """"auto": online when an API key is configured (WANDB_API_KEY or a netrc entry), else offline."""
    wandb_entity: str | None = None
    flush_interval_s: float = 1.0
    """How often the worker wakes to write what was handed over; also the loss window after SIGKILL."""
    max_queue_bytes: int = 256 * 1024 * 1024
    """Memory bound of records waiting for the worker; past it the caller waits (nothing is dropped)."""
    seed: int | None = None
    resume: bool | str = False
    """True: continue the newest run of this experiment; a string: continue that run name."""
    checkpoint_keep_last: int = 3
    checkpoint_keep_best: int = 1
    checkpoint_monitor: str | None = None
    """Metric key ranking checkpoints for `best` (e.g. "val/loss"); None: no best tracking."""
    checkpoint_mode: Literal["min", "max"] = "min"
    async_checkpoint: bool = True
    """Save checkpoints in the background: the call only copies the state to CPU memory."""
    system_monitor_interval_s: float = 10.0
    """Seconds between system samples (CPU, memory, GPU); 0 turns the monitor off."""
    backends: list[str] = field(default_factory=list)
    """More backends by registry name (`opusclip_track.backends.REGISTRY`), beside TensorBoard and W&B."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form user settings stored with the run (secret-looking keys are redacted)."""

    def __post_init__(self) -> None:
        if self.tags is None:  # the original API defaulted tags to None
            self.tags = []
        _check_types(self)
        self._check_values()
        if self.run_name is None:
            self.run_name = generate_run_name(self.experiment_name)

    def _check_values(self) -> None:
        if not self.experiment_name.strip():
            raise ValueError("TrackingConfig.experiment_name: expected a non-empty string, received ''")
        positive = {"log_frequency": self.log_frequency, "save_frequency": self.save_frequency,
                    "checkpoint_keep_last": self.checkpoint_keep_last,
                    "checkpoint_keep_best": self.checkpoint_keep_best,
                    "max_epochs": self.max_epochs, "batch_size": self.batch_size,
                    "flush_interval_s": self.flush_interval_s, "max_queue_bytes": self.max_queue_bytes}
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"TrackingConfig.{name}: expected a positive number, received {value!r}")
        if self.system_monitor_interval_s < 0:
            raise ValueError("TrackingConfig.system_monitor_interval_s: expected >= 0 (0 = off), "
                             f"received {self.system_monitor_interval_s!r}")
        if self.checkpoint_mode not in ("min", "max"):
            raise ValueError("TrackingConfig.checkpoint_mode: expected 'min' or 'max', "
                             f"received {self.checkpoint_mode!r}")
        modes = typing.get_args(WandbMode)
        if self.wandb_mode not in modes:
            raise ValueError(f"TrackingConfig.wandb_mode: expected one of {modes}, received {self.wandb_mode!r}")
        if self.run_name is not None and (not self.run_name or _slug(self.run_name) != self.run_name):
            raise ValueError("TrackingConfig.run_name: expected letters, digits, '_', '.', '-' only, "
                             f"received {self.run_name!r}")

    # ---- construction and export ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackingConfig:
        """Build from a dict; an unknown key raises `KeyError`-like `ValueError` naming it."""
        if not isinstance(data, dict):
            raise TypeError(f"TrackingConfig.from_dict: expected a dict, received {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrackingConfig: unknown field(s) {unknown}; expected some of {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrackingConfig:
        """Build from a YAML mapping file (the same keys as the dataclass fields)."""
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"TrackingConfig.from_yaml: expected a mapping in {path}, "
                             f"received {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """All fields as plain data; secret-looking values are redacted unless `redact=False`."""
        data = dataclasses.asdict(self)
        return redact_secrets(data) if redact else data

    # ---- derived paths ----------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """`<log_dir>/<run_name>`: TensorBoard event files, the local store, media and W&B files."""
        return Path(self.log_dir) / str(self.run_name)


# ---- type checking of fields, so that a YAML typo fails at construction with the field's name -----
def _check_types(cfg: TrackingConfig) -> None:
    hints = typing.get_type_hints(TrackingConfig)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _matches(value, hints[f.name]):
            raise TypeError(f"TrackingConfig.{f.name}: expected {_describe(hints[f.name])}, "
                            f"received {type(value).__name__} {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is Literal:  # the type is checked here, the value in _check_values (a ValueError)
        return isinstance(value, type(typing.get_args(hint)[0]))
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is float:  # an int is a fine float; a bool is not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint)).replace("typing.", "")
