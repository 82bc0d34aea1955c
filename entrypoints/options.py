"""Options and error handling shared by the alod commands."""

from __future__ import annotations

import functools
import os

import click
from click.core import ParameterSource

from alod.tracking import DEFAULT_EXPERIMENT


# MLproject's default for `data`; `alod` itself has none (it also takes explicit label paths).
MLPROJECT_DATA_DEFAULT = "data/bdd100k"


def none_if_empty(_ctx, _param, value):
    # MLproject passes optional parameters as empty strings.
    return value or None


def csv_list(cast):
    def convert(_ctx, param, value):
        if isinstance(value, (list, tuple)):
            return tuple(value)
        try:
            return tuple(cast(v.strip()) for v in str(value).split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}", param=param)
    return convert


def data_option(f):
    return click.option("--data", type=click.Path(file_okay=False), default=None,
                        callback=none_if_empty,
                        help="BDD100K-layout root: images/100k/{split}, labels/det_20/det_{split}.json "
                             "(what `alod synth` writes).")(f)


def experiment_option(f):
    return click.option("--experiment-name", "experiment", default=lambda: os.environ.get(
        "MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT), show_default="alod or $MLFLOW_EXPERIMENT_NAME",
        help="MLflow experiment to log to.")(f)


def common_train_options(f):
    for opt in reversed([
        click.option("--arch", default="fasterrcnn_resnet50_fpn", show_default=True,
                     help="Detector: see `alod models archs`; `tiny` for CPU work."),
        click.option("--epochs", type=int, default=50, show_default=True),
        click.option("--batch-size", type=int, default=4, show_default=True, help="Images per process."),
        click.option("--lr", type=float, default=0.02, show_default=True,
                     help="Learning rate for a total batch of 16, scaled linearly (torchvision's rule)."),
        click.option("--workers", type=int, default=2, show_default=True, help="DataLoader workers."),
        click.option("--work-dir", default=".alod", show_default=True,
                     help="Local folder for checkpoints and state, written before upload."),
    ]):
        f = opt(f)
    return f


def seed_option(f):
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Seeds data subsets, selection and initial weights.")(f)


def friendly_errors(f):
    """Bad input ends with a one-paragraph error and exit 1, never a traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, FileNotFoundError, PermissionError, RuntimeError, KeyError) as e:
            if os.environ.get("ALOD_DEBUG"):
                raise
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
    return wrapper


def resumed_params(kwargs: dict, params_cls: type) -> dict:
    """With --resume-run-id, the run's logged parameters replace every option left at
    its default (or given equal to it, as `mlflow run` does); a contradicting choice is an error."""
    if not kwargs.get("resume_run_id"):
        return kwargs
    from alod.steps.common import with_logged_params

    ctx = click.get_current_context()
    explicit = {name for name in kwargs
                if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    defaults = {}
    for param in ctx.command.params:
        default = param.get_default(ctx)
        defaults[param.name] = (param.callback(ctx, param, default) if param.callback else default,)
    defaults["data"] += (MLPROJECT_DATA_DEFAULT,)  # what `mlflow run` passes when -P data is left out
    return with_logged_params(kwargs, explicit, params_cls, defaults)


def forecast_options(f):
    """The learning-curve forecast, the stopping rule and `--sampler auto`'s arms (cycle and run)."""
    for opt in reversed([
        click.option("--auto-samplers", default="random,entropy,boxcount", show_default=True,
                     help="--sampler auto (protocol pool): the samplers a bandit (EXP3, after Hsu & Lin's "
                          "'Active learning by learning') chooses among each cycle, by the mAP50 gain each brought."),
        click.option("--target-map50", type=float, default=0.0, show_default=True,
                     help="Forecast the labeled images (and boxes) needed to reach this val mAP50 (0: no target)."),
        click.option("--stop-when-flat", type=click.BOOL, default=False, show_default=True,
                     help="End the run early once the stopping rule fires (the forecast gain per 1000 further "
                          "labels is below --stop-min-gain); the rule is printed every cycle either way."),
        click.option("--stop-min-gain", type=float, default=0.01, show_default=True,
                     help="Stopping rule threshold: forecast val mAP50 gain per 1000 further labeled images."),
    ]):
        f = opt(f)
    return f

