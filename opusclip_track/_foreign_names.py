"""The names researchers bring from W&B, MLflow, TensorBoard and Lightning, and what to call here instead.

`tracker.log(...)` (W&B's habit) then fails with an AttributeError that names the call
to use, instead of Python's bare "has no attribute 'log'". They are not aliases: W&B's `log` also takes media
objects and MLflow's `log_param` one value, so a same-named method here would be right only some of the time.
"""

from __future__ import annotations

import difflib

FOREIGN_NAMES: dict[str, str] = {
    # W&B (`wandb.Run`)
    "log": "log_metrics({name: value, ...}, step=None) for numbers (W&B's run.log; without step, the next "
           "step); clips, images and tables: log_video, log_image, log_table",
    "finish": "close() (W&B's run.finish; close('failed') for a failed run), or `with tracker:`",
    # MLflow (`mlflow` / `MlflowClient`)
    "log_metric": "log_metrics({key: value}, step=...) (MLflow's log_metric)",
    "log_params": "log_hyperparameters(params) (MLflow's log_params)",
    "log_param": "log_hyperparameters({key: value}) (MLflow's log_param)",
    "end_run": "close() (MLflow's end_run)",
    # TensorBoard (`SummaryWriter`)
    "add_scalar": "log_metrics({tag: value}, step=global_step) (TensorBoard's add_scalar)",
    "add_scalars": "log_metrics({f'{main_tag}/{name}': value, ...}, step=global_step) (TensorBoard's add_scalars)",
    "add_image": "log_image(image, name, step=...) (TensorBoard's add_image)",
    "add_images": "log_images(images, name, step=...) (TensorBoard's add_images)",
    "add_video": "log_video(video, name, step=..., fps=...) (TensorBoard's add_video; no moviepy needed)",
    "add_histogram": "log_histogram(name, values, step=...) (TensorBoard's add_histogram)",
    "add_text": "log_text(name, text, step=...) (TensorBoard's add_text)",
    "add_figure": "log_figure(figure, name, step=...) (TensorBoard's add_figure)",
    "add_hparams": "log_hyperparameters(params, metrics) (TensorBoard's add_hparams)",
    # Lightning (`Logger`)
    "log_hyperparams": "log_hyperparameters(params) (Lightning's log_hyperparams; for a Trainer, use "
                       "opusclip_track.integrations.lightning.OpusclipLogger)",
}


def foreign_name_error(owner: str, name: str) -> AttributeError:
    """The AttributeError for `owner.name`: naming the call to use when `name` is another tool's."""
    hint = FOREIGN_NAMES.get(name)
    if hint is None:
        return AttributeError(f"{owner!r} object has no attribute {name!r}")
    return AttributeError(f"{owner} has no {name!r}: use tracker.{hint}")


# Keyword arguments of `wandb.init`, `SummaryWriter` and MLflow that a tracker setting here stands for.
FOREIGN_SETTINGS: dict[str, str] = {
    "project": "project_name (W&B's project)",
    "name": "run_name (W&B's name)",
    "entity": "wandb_entity (W&B's entity)",
    "dir": "log_dir (W&B's dir)",
    "mode": "wandb_mode (W&B's mode: 'offline', 'online', 'auto')",
    "logdir": "log_dir (TensorBoard's --logdir)",
    "tracking_uri": "mlflow_tracking_uri (MLflow's tracking URI)",
    "config": "tracker.log_hyperparameters(params) after creating the tracker (W&B's config= holds the run's "
              "hyperparameters; tracker settings are keywords here or TrackingConfig.from_dict(...))",
}


def setting_hints(unknown: list[str], known: list[str]) -> list[str]:
    """For each unknown setting that has one: what to use instead (another tool's name) or the closest field."""
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        if name in FOREIGN_SETTINGS:
            hints.append(f"{name!r}: use {FOREIGN_SETTINGS[name]}")
        elif close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
    return hints
