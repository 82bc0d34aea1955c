"""`alod pretrain`: train on a seeded fraction of the training split and register it."""

from __future__ import annotations

import click

from alod.params import PretrainParams
from entrypoints.options import friendly_errors, options_for, resumed_params


@click.command()
@options_for(PretrainParams)
@friendly_errors
def pretrain(**kwargs):
    """Pretrain the ranking detector and register it as alod-pretrained."""
    from alod.steps.pretrain import run_pretrain

    run_pretrain(PretrainParams(**resumed_params(kwargs, PretrainParams)))
