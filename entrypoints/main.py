"""`alod run`: pretrain -> rank -> cycle for several samplers and seeds, then compare."""

from __future__ import annotations

import click

from alod.params import MainParams
from entrypoints.options import friendly_errors, options_for


@click.command(name="run")
@options_for(MainParams)
@friendly_errors
def main(**kwargs):
    """Chain every step for each sampler and seed; log a comparison."""
    from alod.steps.main import run_main

    table_run = run_main(MainParams(**kwargs))
    click.echo(f"main run {table_run}")
