"""`alod samplers`: the acquisition functions, one line each."""

from __future__ import annotations

import click


@click.command()
def samplers():
    """List the samplers `--sampler` accepts."""
    from alod.active.samplers import SAMPLERS
    from alod.active.bandit import AUTO, AUTO_DESCRIPTION

    rows = [(name, sampler.description) for name, sampler in SAMPLERS.items()] + [(AUTO, AUTO_DESCRIPTION)]
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        click.echo(f"{name:<{width}}  {description.replace('`', '')}")
