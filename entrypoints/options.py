"""Options and error handling shared by the alod commands."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import click
from click.core import ParameterSource

from alod import params


# MLproject's default for `data`; `alod` itself has none (it also takes explicit label paths).
MLPROJECT_DATA_DEFAULT = params.SHARED["data"][1]["mlproject_default"]


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


def _help(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def make_option(name: str, hint, default, spec: params.ParamInfo) -> Callable:
    """The click option (or argument) of one declared parameter: type, default and help from its declaration."""
    kind = params.base_type(hint)
    if spec.argument:
        return click.argument(name, type=click.Path(exists=True, path_type=Path) if spec.mlproject_type == "path"
                              else kind)
    kwargs: dict = {"help": _help(spec.help), "show_default": spec.shown_default or True, "default": default}
    if isinstance(kind, tuple):  # tuple[int, ...]: a comma-separated list
        kwargs.update(default=",".join(map(str, default)), callback=csv_list(kind[0]))
    elif spec.choices:
        kwargs["type"] = click.Choice(list(spec.choices))
    elif kind is bool:
        kwargs["type"] = click.BOOL
    elif kind in (int, float):
        kwargs["type"] = (kind if spec.minimum is None else
                          click.IntRange(min=spec.minimum) if kind is int else click.FloatRange(min=spec.minimum))
    elif spec.directory:
        kwargs["type"] = click.Path(file_okay=False)
    if default is None and not isinstance(kind, tuple):
        kwargs.update(callback=none_if_empty, show_default=spec.shown_default or False)
    if spec.env_default:  # e.g. MLflow's own variable picks the experiment when the option is left out
        kwargs["default"] = lambda: os.environ.get(spec.env_default, default)
    return click.option(params.option_name(name, spec), name, **kwargs)


def options_for(params_cls: type) -> Callable:
    """Decorate a click command with an option per parameter of `params_cls` a person sets (in field order)."""
    hints = params.type_hints(params_cls)
    fields = params.step_fields(params_cls, user=True)

    def decorate(command: Callable) -> Callable:
        for f in reversed(fields):
            command = make_option(f.name, hints[f.name], params.default_of(f), params.info(f))(command)
        return command
    return decorate


def shared_option(name: str) -> Callable:
    """The option of a parameter declared in alod.params.SHARED, for commands that are not steps."""
    default, spec = params.SHARED[name]
    return make_option(name, str | None if default is None else type(default), default, params.ParamInfo(**spec))


data_option = shared_option("data")
experiment_option = shared_option("experiment")


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
    # the values that mean "not chosen": the declared default, and what MLproject passes for it
    defaults = {f.name: (params.default_of(f), params.info(f).mlproject_default)
                for f in params.step_fields(params_cls, user=True)}
    return with_logged_params(kwargs, explicit, params_cls, defaults)

