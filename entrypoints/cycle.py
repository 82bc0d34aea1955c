"""`alod cycle`: active-learning cycles (torchrun for nproc > 1)."""

from __future__ import annotations

import click

from alod.params import CycleParams
from entrypoints.options import friendly_errors, options_for, resumed_params


@click.command()
@options_for(CycleParams)
@friendly_errors
def cycle(**kwargs):
    """Run active-learning cycles on a ranking (or the whole pool)."""
    from alod.steps.cycle import run_cycles

    run_id = run_cycles(CycleParams(**resumed_params(kwargs, CycleParams)))
    click.echo(f"cycle run {run_id}")
