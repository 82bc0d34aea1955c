"""`alod samplers`: the acquisition functions, one line each."""

from __future__ import annotations

import click


@click.command()
def samplers():
    """List the samplers `--sampler` accepts."""
    from alod.active.samplers import SAMPLERS

    width = max(map(len, SAMPLERS))
    for name, sampler in SAMPLERS.items():
        click.echo(f"{name:<{width}}  {sampler.description}")
