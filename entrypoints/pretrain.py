"""`alod pretrain`: train on a seeded fraction of the training split and register it."""

from __future__ import annotations

import click

from entrypoints.options import (common_train_options, data_option, experiment_option,
                                 friendly_errors, none_if_empty, resumed_params, seed_option)


@click.command()
@data_option
@common_train_options
@seed_option
@click.option("--fraction", type=float, default=0.7, show_default=True,
              help="Seeded fraction of the training split to pretrain on.")
@click.option("--weights", default=None, callback=none_if_empty,
              help="Local weight file to start from (e.g. COCO-pretrained torchvision weights); default: the "
                   "architecture's shipped starting weights (tiny: `alod models weights`), else random init; "
                   "'none': random init. No downloads.")
@click.option("--eval-every", type=int, default=1, show_default=True, help="Evaluate on val every N epochs.")
@click.option("--register", type=click.BOOL, default=True, show_default=True,
              help="Register the model as alod-pretrained@champion.")
@click.option("--resume-run-id", default=None, callback=none_if_empty,
              help="Continue an interrupted pretrain run from its last epoch (its logged parameters are reused).")
@experiment_option
@friendly_errors
def pretrain(**kwargs):
    """Pretrain the ranking detector and register it as alod-pretrained."""
    from alod.steps.pretrain import PretrainParams, run_pretrain

    run_pretrain(PretrainParams(**resumed_params(kwargs, PretrainParams)))
