"""`TrackingConfig`: every setting of a tracked run, validated, with secrets redacted on the way out."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import secrets
import time
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union
from urllib.parse import urlsplit

from ._foreign_names import setting_hints
from .alerts import alert_settings

WandbMode = Literal["auto", "online", "offline", "disabled"]

REDACTED = "***REDACTED***"

# ---- secret redaction --------------------------------------------------------------------------------
# A key is split into words on _ - . / spaces and camel case (`hfToken` -> hf, token); it is secret when
# - a word is (or ends with) one of `_SECRET_WORDS` (`db_password`, `dbpassword`, `wandbapikey`), or two
#   neighbouring words form one (`api_key`, `accessToken`, `AWS_SECRET_ACCESS_KEY`); or
# - its last word is `key` or `token` (or ends with `token`: `hftoken`) and the word before it does not name
#   one of the many non-secret keys and tokens of ML code (`pad_token`, `cls_token`, `sort_key`, ...).
# `key`/`token` elsewhere in a key are model or data settings, so `keyframe_interval`, `key_frames`,
# `token_dim`, `num_tokens`, `tokenizer`, `author` and `monkey` stay visible.
_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "pwd", "secret", "secrets", "credential", "credentials", "auth",
    "authorization", "bearer", "cookie", "apikey", "apikeys", "accesskey", "secretkey", "privatekey",
    "accesstoken", "authtoken", "apitoken", "refreshtoken", "sessiontoken", "bearertoken", "clientsecret"})
_SECRET_ENDINGS = tuple(w for w in _SECRET_WORDS if len(w) >= 6)  # `dbpassword`, `wandbapikey`; not `...auth`
_WEAK_WORDS = frozenset({"key", "token"})
_NOT_SECRET_BEFORE_WEAK = frozenset({
    "pad", "eos", "bos", "unk", "mask", "cls", "sep", "start", "end", "stop", "special", "image", "video",
    "text", "audio", "frame", "register", "sort", "cache", "primary", "foreign", "metric", "monitor", "dict",
    "lookup", "group", "rng", "prng", "seed", "sample", "query", "num", "max", "min"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# Every secret key above contains one of these: a text without any holds no `key=value` secret.
_SECRET_HINTS = ("key", "token", "pass", "pwd", "secret", "auth", "bearer", "credential", "cookie")

# `scheme://` then everything up to whitespace, a quote or an angle bracket.
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"`<>]+""")
# `key=value`, `key: value`, `"key": "value"`, `--key=value`; the key is judged by `is_secret_key`. A quoted
# value ends at its quote. Unquoted, after `=` it ends at whitespace or `&` (query strings); after `:` at the
# end of the line or a `,;}]` (so `Authorization: Bearer abc` loses both words and a dict repr keeps its
# other entries).
_KEY = r"""(?<![\w.\-])(?P<q>["']?)(?P<key>-{0,2}[A-Za-z_][\w.\-]*)(?P=q)"""
_QUOTED = r""""[^"\n]*"|'[^'\n]*'"""
_KEY_EQUALS = re.compile(_KEY + r"""(?P<sep>[ \t]*=[ \t]*)(?P<value>""" + _QUOTED + r"""|[^\s&'"]+)""")
_KEY_COLON = re.compile(_KEY + r"""(?P<sep>[ \t]*:[ \t]*)(?P<value>""" + _QUOTED + r"""|[^\s'",;}\]][^\r\n,;}\]]*)""")
# `--api-key VALUE` inside a text (a logged command line).
_FLAG_VALUE = re.compile(r"(?<!\S)(?P<flag>-{1,2}[A-Za-z][\w.\-]*)(?P<sep>[ \t]+)(?P<value>[^\s-]\S*)")
# `Bearer abc` anywhere (`Basic` only after an `Authorization` key: "basic" is a common word).
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]+")


@functools.lru_cache(maxsize=4096)  # the same keys come back with every record and every text
def is_secret_key(key: str) -> bool:
    """True when `key` names a secret (`api_key`, `WANDB_API_KEY`, `hfToken`, `db-password`, `auth`, ...).

    `key` and `token` count only as the last word of a key, and not after words such as `pad`, `cls` or
    `sort`: `keyframe_interval`, `token_dim`, `num_tokens`, `pad_token` and `tokenizer` are not secret.
    """
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if not words:
        return False
    pairs = (a + b for a, b in zip(words, words[1:], strict=False))
    if any(w in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS) for w in words) or \
            any(p in _SECRET_WORDS for p in pairs):
        return True
    last, before = words[-1], (words[-2] if len(words) > 1 else "")
    weak = last in _WEAK_WORDS or (last.endswith("token") and len(last) > len("token"))
    return weak and before not in _NOT_SECRET_BEFORE_WEAK


def redact_text(text: str) -> str:
    """Return `text` with the secrets it contains replaced by `REDACTED`.

    Removes URL passwords (`scheme://user:pass@host`, also `redis://:pass@host` and passwords that contain
    `@`: the user part ends at the last `@` of the host part, as `urllib.parse` reads it), the values of
    `key=value` and `key: value` pairs whose key looks secret (see `is_secret_key`; quoted JSON keys too),
    `--api-key VALUE` flags and `Bearer` tokens.

    Example:
        >>> redact_text("cache at redis://:hunter2@db:6379, api_key=abc lr=0.1")
        'cache at redis://:***REDACTED***@db:6379, api_key=***REDACTED*** lr=0.1'
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, received {type(text).__name__}")
    if "://" in text:
        text = _URL.sub(lambda m: _redact_url(m.group(0)), text)
    lowered = text.lower()
    # Substring tests first: 9 KB of text without a hint costs 0.1 ms instead of 1.5-3 ms for the scans below.
    if any(hint in lowered for hint in _SECRET_HINTS):
        text = _BEARER.sub(rf"\g<1>\g<2>{REDACTED}", text)
        for pattern in (_KEY_EQUALS, _KEY_COLON, _FLAG_VALUE):
            text = pattern.sub(_redact_pair, text)
    return text


def _redact_url(url: str) -> str:
    """`url` with the password of its user part replaced (the user name is kept), and a user name that is
    itself a token (`https://ghp_...@github.com`, git's way of passing a token) replaced."""
    scheme, _, rest = url.partition("://")
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # e.g. an unclosed IPv6 bracket: take the host part as urllib would have
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return url
    if ":" not in userinfo:
        if not _TOKEN_USER.fullmatch(userinfo):
            return url
        return f"{scheme}://{REDACTED}@{host}{rest[len(netloc):]}"
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{REDACTED}@{host}{rest[len(netloc):]}"


# A user name that is a token: a known token prefix (GitHub, GitLab, Hugging Face, OpenAI-style, Slack), or 20+
# characters of letters, digits, `_` and `-` with a digit among them (user names such as `git`, `oauth2` or
# `deploy-user` stay).
_TOKEN_USER = re.compile(r"(?:gh[pousr]_|github_pat_|glpat-|hf_|sk-|xox[abpr]-)[\w-]+"
                         r"|(?=[\w-]*\d)[\w-]{20,}")


def _redact_pair(match: re.Match[str]) -> str:
    key = match.group("key") if "key" in match.groupdict() else match.group("flag")
    if not is_secret_key(key.lstrip("-")):
        return match.group(0)
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') and value[-1:] == value[0] and len(value) > 1 else ""
    return match.group(0)[: match.start("value") - match.start(0)] + f"{quote}{REDACTED}{quote}"


def redact_secrets(value: Any) -> Any:
    """Return a copy of `value` with every entry whose key looks secret replaced by `REDACTED`.

    Walks dicts, lists and tuples; every string is passed through `redact_text` (URL passwords,
    `key=value` secrets).
    """
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact_secrets(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_secrets(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """Redact secrets in a command line: `--api-key X`, `--api-key=X`, `TOKEN=X`, URL passwords.

    The value after a secret flag is hidden unless it is itself a long option (`--use-token --lr 0.1`).
    A short `-p` is not treated as a password: in training scripts it is as often a port or a patience.

    Example:
        >>> redact_argv(["train.py", "--api-key", "abc", "--password=pw", "--lr", "0.1"])
        ['train.py', '--api-key', '***REDACTED***', '--password=***REDACTED***', '--lr', '0.1']
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
        elif arg.startswith("-") and "=" not in arg and is_secret_key(arg.lstrip("-")):
            out.append(arg)
            hide_next = True
            continue
        else:
            out.append(redact_text(arg))
        hide_next = False
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
    return f"{slug(prefix)}-{name}" if prefix else name


def slug(text: str) -> str:
    """`text` as a safe run or file name: letters, digits, `_`, `.`, `-`; other runs of characters become `-`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


# The fields of the original API that describe a training recipe. The tracker does not train, so it cannot
# know them: they stay None unless the user sets them, and an unset one is not recorded in the run config
# (a recipe such as `models.training.train` records the values it really used).
SEED_API_FIELDS = ("log_frequency", "save_frequency", "max_epochs", "learning_rate", "batch_size", "device")
# Longest wait a duration setting may ask for: beyond `threading.TIMEOUT_MAX` (about 292 years) a wait raises
# OverflowError in the worker; anything above a day is a typo.
_MAX_INTERVAL_S = 86_400.0
_MIN_FLUSH_INTERVAL_S = 0.001  # below 1 ms the worker wakes faster than it writes a batch: a busy loop
_MIN_MONITOR_INTERVAL_S = 0.01


@dataclass
class TrackingConfig:
    """Settings of one tracked run.

    The first block mirrors the original API; the rest is what a real run needs. Build it directly,
    from a dict (`from_dict`) or a YAML file (`from_yaml`); unknown keys, wrong types and unusable numbers
    (NaN, inf, out of range) raise errors naming the field.

    The recipe fields of the original API (`log_frequency`, `save_frequency`, `max_epochs`, `learning_rate`,
    `batch_size`, `device`) default to None, "not set": the tracker does not train, so it records them only
    when set. `models.training.train` applies the ones that are set and records what it really used.

    Example:
        >>> cfg = TrackingConfig(experiment_name="vgen-baseline", use_wandb=False, tags=["baseline"])
        >>> cfg.run_name.startswith("vgen-baseline-")
        True
    """

    experiment_name: str
    project_name: str = "video-opusclip"
    use_tensorboard: bool = True
    use_wandb: bool = True
    log_frequency: int | None = None
    """Steps between logged training metrics; None: not set (the recipe decides)."""
    save_frequency: int | None = None
    """Steps between checkpoints; None: not set (the recipe decides)."""
    max_epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    device: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    """Free text shown with the run; secrets in it (URL passwords, `token=...`) are redacted when the config
    is built, since it goes to every backend as it is."""

    run_name: str | None = None
    """Generated (readable and unique) when not given."""
    group: str | None = None
    log_dir: str = "runs"
    checkpoint_dir: str = "checkpoints"
    wandb_mode: WandbMode = "auto"
    """"auto": online when an API key is configured (WANDB_API_KEY or a netrc entry), else offline."""
    wandb_entity: str | None = None
    mlflow_tracking_uri: str | None = None
    """Where the `mlflow` backend writes (`http://host:5000`, `sqlite:///mlflow.db`, ...); None:
    `$MLFLOW_TRACKING_URI` when set, else a local SQLite store under the run directory. A password in it
    is redacted in the recorded config."""
    flush_interval_s: float = 1.0
    """How often the worker wakes to write what was handed over (1 ms to 1 day); also the loss window after
    SIGKILL."""
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
    """Seconds between system samples (CPU, memory, GPU), 0.01 s to 1 day; 0 turns the monitor off."""
    alerts: dict[str, Any] | bool = True
    """The alert rules (`opusclip_track.alerts`), all on by default: a dict of rule -> False (off) or its settings
    (`{"loss_spike": {"k": 6}, "stalled": {"minutes": 10}, "gpu_memory": False}`), or False for none. Rules are
    `nonfinite_loss`, `loss_spike`, `throughput_drop`, `gpu_memory`, `stalled`. After construction it holds every
    rule's full settings (as the run records them)."""
    backends: list[str] = field(default_factory=list)
    """More backends by registry name (`opusclip_track.backends.REGISTRY`), beside TensorBoard and W&B."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form user settings stored with the run (secret-looking keys are redacted)."""

    def __post_init__(self) -> None:
        if self.tags is None:  # the original API defaulted tags to None
            self.tags = []
        _check_types(self)
        self._check_values()
        self.alerts = alert_settings(self.alerts)
        self.notes = redact_text(self.notes)
        if self.run_name is None:
            self.use_generated_run_name(generate_run_name(self.experiment_name))

    # ---- the run name -----------------------------------------------------------------------------
    @property
    def run_name_generated(self) -> bool:
        """True while `run_name` is one this config generated (not given): under a multi-process launch the
        ranks must agree on it (the tracker takes rank 0's, see `opusclip_track.distributed`)."""
        return self.run_name is not None and self.run_name == self.__dict__.get("_generated_run_name")

    def use_generated_run_name(self, name: str) -> None:
        """Set `run_name` to a generated `name` (rank 0's, on the other ranks), still counted as generated."""
        self.run_name = name
        self.__dict__["_generated_run_name"] = name  # not a field: to_dict, from_dict and repr never see it

    def _check_values(self) -> None:
        if not self.experiment_name.strip():
            raise ValueError("TrackingConfig.experiment_name: expected a non-empty string, received ''")
        counts = {"log_frequency": self.log_frequency, "save_frequency": self.save_frequency,
                  "max_epochs": self.max_epochs, "batch_size": self.batch_size,
                  "checkpoint_keep_last": self.checkpoint_keep_last,
                  "checkpoint_keep_best": self.checkpoint_keep_best, "max_queue_bytes": self.max_queue_bytes}
        for name, count in counts.items():
            if count is not None and count < 1:
                raise ValueError(f"TrackingConfig.{name}: expected an int >= 1, received {count!r}")
        if self.learning_rate is not None and not 0 < self.learning_rate < math.inf:
            raise ValueError(f"TrackingConfig.learning_rate: expected a finite number > 0, "
                             f"received {self.learning_rate!r}")
        _check_interval("flush_interval_s", self.flush_interval_s, _MIN_FLUSH_INTERVAL_S)
        if self.system_monitor_interval_s != 0:
            _check_interval("system_monitor_interval_s", self.system_monitor_interval_s, _MIN_MONITOR_INTERVAL_S,
                            "0 (off) or ")
        for name in ("device", "mlflow_tracking_uri"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"TrackingConfig.{name}: expected None or a non-empty string, received {value!r}")
        if self.checkpoint_mode not in ("min", "max"):
            raise ValueError("TrackingConfig.checkpoint_mode: expected 'min' or 'max', "
                             f"received {self.checkpoint_mode!r}")
        modes = typing.get_args(WandbMode)
        if self.wandb_mode not in modes:
            raise ValueError(f"TrackingConfig.wandb_mode: expected one of {modes}, received {self.wandb_mode!r}")
        if self.run_name is not None and (not self.run_name or slug(self.run_name) != self.run_name):
            raise ValueError("TrackingConfig.run_name: expected letters, digits, '_', '.', '-' only, "
                             f"received {self.run_name!r}")

    # ---- construction and export ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackingConfig:
        """Build from a dict; an unknown key raises `KeyError`-like `ValueError` naming it."""
        if not isinstance(data, dict):
            raise TypeError(f"TrackingConfig.from_dict: expected a dict, received {type(data).__name__}")
        if message := cls.unknown_fields_message(data):
            raise ValueError(message)
        return cls(**data)

    @classmethod
    def unknown_fields_message(cls, names: Iterable[str]) -> str | None:
        """None when every name is a field; else one line naming the unknown ones, what to use instead of
        another tool's name (W&B's `project`: `project_name`) or the closest field, and the fields."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [name for name in names if name not in known]
        if not unknown:
            return None
        hints = setting_hints(unknown, known)
        return (f"TrackingConfig: unknown field(s) {unknown}" + (f" ({'; '.join(hints)})" if hints else "")
                + f"; expected some of {sorted(known)}")

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
        """The fields as plain data (what the run records as its config).

        Recipe fields of the original API that are not set (None, see `SEED_API_FIELDS`) are left out, so
        no backend shows a value the run did not use. Secret-looking values are redacted unless
        `redact=False`.
        """
        data = {k: v for k, v in dataclasses.asdict(self).items() if not (k in SEED_API_FIELDS and v is None)}
        return redact_secrets(data) if redact else data

    # ---- derived paths ----------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """`<log_dir>/<run_name>`: TensorBoard event files, the local store, media and W&B files."""
        return Path(self.log_dir) / str(self.run_name)


def _check_interval(name: str, value: float, low: float, also: str = "") -> None:
    """A duration in seconds the worker waits on: finite, >= `low`, <= one day (`also`: other accepted)."""
    if not low <= value <= _MAX_INTERVAL_S:  # False for NaN too
        raise ValueError(f"TrackingConfig.{name}: expected {also}a number of seconds in [{low:g}, "
                         f"{_MAX_INTERVAL_S:g}], received {value!r}")


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
