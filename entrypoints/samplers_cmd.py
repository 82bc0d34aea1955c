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
    click.echo(f"{'auto':<{width}}  cycle --protocol pool: a bandit (EXP3, after Hsu & Lin's 'Active learning by "
               "learning') chooses each cycle among --auto-samplers by the mAP50 gain each brought")
