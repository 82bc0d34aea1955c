"""Each parameter is declared once (alod.params): the options, MLproject, the README
tables, what a run logs and what a resume may change all follow the declaration."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from alod import params
from alod.params import CycleParams, ImportLabelsParams, MainParams, PretrainParams, RankParams
from entrypoints import generated
from entrypoints.cli import cli

STEPS = [PretrainParams, RankParams, CycleParams, MainParams, ImportLabelsParams]


def test_generated_files_are_up_to_date() -> None:
    assert generated.stale() == [], "run `python -m entrypoints.generated` after changing alod/params.py"


def test_a_changed_declaration_makes_the_generated_files_stale(monkeypatch) -> None:
    monkeypatch.setattr(_field(CycleParams, "cycles"), "default", 7)
    assert "cycles: {type: int, default: 7}" in generated.mlproject_text()
    assert generated.stale() == ["MLproject", "README.md"]


def _field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name)


@pytest.mark.parametrize("cls", STEPS, ids=lambda c: c.__name__)
def test_every_option_has_help_and_a_known_type(cls) -> None:
    hints = params.type_hints(cls)
    for f in params.step_fields(cls, user=True):
        assert params.info(f).help, f"{cls.__name__}.{f.name} has no help"
        assert params.base_type(hints[f.name]) in (int, float, str, bool, (str,), (int,)), (f.name, hints[f.name])


def test_same_name_means_same_type_in_every_step() -> None:
    seen: dict[str, tuple] = {}
    for cls in STEPS:
        for name, hint in params.type_hints(cls).items():
            hint = params.base_type(hint)  # `str` and `str | None` agree (a default of None)
            if name in seen:
                assert seen[name][1] == hint, f"{name}: {seen[name][0]} has {seen[name][1]}, {cls.__name__} {hint}"
            seen.setdefault(name, (cls.__name__, hint))


def test_logged_and_resumable_follow_the_declarations() -> None:
    cycle = CycleParams()
    logged = set(cycle.logged_params())
    # what identifies a cycle run's results is logged; launcher-filled paths and the resume id are not
    assert {"sampler", "protocol", "cycles", "per_cycle", "epochs", "lr", "seed", "weights", "oracle"} <= logged
    assert not logged & {"run_id", "state_file", "ranking_file", "resume_run_id", "work_dir", "experiment",
                         "extra_tags", "rdzv_endpoint"}
    assert CycleParams.resumable() == {"data", "nproc", "nnodes", "rdzv_endpoint", "max_restarts", "workers",
                                       "eval_batch_size", "register", "work_dir", "experiment",
                                       "annotation_url_prefix"}
    assert "epochs" in CycleParams.defining() and "workers" not in CycleParams.defining()
    assert "nproc" not in RankParams().logged_params()  # the ranking does not depend on the sharding


def test_main_hands_each_step_its_fields_by_name() -> None:
    main = MainParams(arch="tiny", epochs=3, pretrain_epochs=0, lr=0.04, min_iterations=100, nproc=2,
                      per_cycle=25, work_dir="w", data="d", weights="none")
    cycle = main.subset_for(CycleParams, sampler="entropy", seed=4)
    assert (cycle.arch, cycle.epochs, cycle.lr, cycle.min_iterations, cycle.nproc, cycle.per_cycle,
            cycle.work_dir, cycle.data, cycle.weights, cycle.sampler, cycle.seed) == (
        "tiny", 3, 0.04, 100, 2, 25, "w", "d", "none", "entropy", 4)
    pre = main.subset_for(PretrainParams, epochs=main.pretrain_epochs, seed=4)
    assert (pre.epochs, pre.lr, pre.weights, pre.seed) == (0, 0.04, "none", 4)
    with pytest.raises(TypeError):
        main.subset_for(RankParams, no_such_field=1)


@pytest.mark.parametrize("command, cls", [("pretrain", PretrainParams), ("rank", RankParams),
                                          ("cycle", CycleParams), ("run", MainParams),
                                          ("import-labels", ImportLabelsParams)])
def test_cli_options_are_the_declared_parameters_with_their_defaults(command, cls) -> None:
    options = {p.name: p for p in cli.commands[command].params}
    for f in params.step_fields(cls, user=True):
        assert f.name in options, f"`alod {command}` lacks {f.name}"
        option = options[f.name]
        default = params.default_of(f)
        if isinstance(option, click.Argument) or f.name == "experiment":
            continue
        shown = option.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        assert shown == default, (f.name, shown, default)
    assert set(options) - {"help"} == {f.name for f in params.step_fields(cls, user=True)}


def test_declared_minimum_is_enforced_with_a_clear_message() -> None:
    result = CliRunner().invoke(cli, ["cycle", "--cycles", "0"])
    assert result.exit_code == 2 and "--cycles" in result.output and ">=1" in result.output


def test_every_shared_parameter_makes_an_argparse_argument():
    """The benchmarks' command lines take SHARED declarations as they are (a `%` in a help text would
    break argparse's --help) with their own default where they say so."""
    import argparse

    from alod.params import SHARED, argparse_kwargs

    parser = argparse.ArgumentParser()
    for name in SHARED:
        parser.add_argument("--" + name.replace("_", "-"), **argparse_kwargs(name))
    assert "proposals sampled per image" in parser.format_help()
    args = parser.parse_args(["--roi-samples", "32", "--lr", "0.04"])
    assert args.roi_samples == 32 and args.lr == 0.04 and args.weights is None and args.epochs == SHARED["epochs"][0]
    assert argparse_kwargs("workers", default=0)["default"] == 0
