"""A run's settings as one flat mapping, and where runs' settings differ: the config diff that
`opusclip-track runs compare` prints and the HTML report shows.

A run's settings are its config (`RunStore.config()`, nested keys joined with dots: `train.lr`) and its
hyperparameters (every `log_hyperparameters` call, under `hparams.`: `hparams.width`), without the keys that differ
between any two runs by design (`IDENTITY_KEYS`). A hyperparameter that the config holds under the same name with
the same value is shown once, as the config's: the training recipe records itself both as the config's `train`
entry and as its hyperparameters' `train` entry, which would otherwise show every setting twice (`train.lr` and
`hparams.train.lr`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..records import HYPERPARAMETERS_EVENT
from .run_store import RunStore

IDENTITY_KEYS = ("run_name", "environment.torch_initial_seed")
"""Settings that differ between any two runs by design: the run's name and torch's initial seed."""


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1}}` -> `{"train.lr": 1}`; lists and empty mappings stay values (shown as JSON)."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            flat.update(flatten(item, name + "."))
        else:
            flat[name] = item
    return flat


def run_settings(store: RunStore) -> dict[str, Any]:
    """The run's config and hyperparameters, flattened (`train.lr`, `hparams.width`): see the module docstring."""
    settings = {k: v for k, v in flatten(store.config()).items() if k not in IDENTITY_KEYS}
    for event in store.events(HYPERPARAMETERS_EVENT):
        for key, value in flatten((event["data"] or {}).get("params") or {}).items():
            if key not in settings or _text(settings[key]) != _text(value):
                settings[f"hparams.{key}"] = value
    return settings


def setting(settings: Mapping[str, Any], key: str) -> Any:
    """The value of `key` in a run's settings, None when unset; `hparams.<name>` also finds a hyperparameter shown
    once under the config's `<name>` (so `--group-by hparams.seed` works whether or not the config has a seed)."""
    if key in settings:
        return settings[key]
    return settings.get(key.removeprefix("hparams.")) if key.startswith("hparams.") else None


@dataclass(frozen=True)
class ConfigDiff:
    """Where runs' settings differ: key -> {run: value} of the runs that set it, keys sorted.

    Attributes:
        differ: keys two runs set to different values.
        partial: keys set in some runs only, to the same value wherever set.
    """

    differ: dict[str, dict[str, Any]]
    partial: dict[str, dict[str, Any]]

    def all(self) -> dict[str, dict[str, Any]]:
        """Both, keys sorted: every key whose value is not the same in every run."""
        return dict(sorted({**self.differ, **self.partial}.items()))


def config_diff(settings: Mapping[str, Mapping[str, Any]]) -> ConfigDiff:
    """The settings whose values are not the same in every run.

    Args:
        settings: run name -> its settings (`run_settings`).
    """
    differ, partial = {}, {}
    for key in sorted({k for values in settings.values() for k in values}):
        values = {run: s[key] for run, s in settings.items() if key in s}
        if len({_text(v) for v in values.values()}) > 1:
            differ[key] = values
        elif len(values) < len(settings):
            partial[key] = values
    return ConfigDiff(differ, partial)


def _text(value: Any) -> str:
    """A value as JSON text, keys sorted: how two settings are compared."""
    return json.dumps(value, sort_keys=True, default=str)
