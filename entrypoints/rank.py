"""`alod rank`: score the pool with a registered model and cut the ranking into batches."""

from __future__ import annotations

import click

from alod.params import RankParams
from entrypoints.options import friendly_errors, options_for


@click.command()
@options_for(RankParams)
@friendly_errors
def rank(**kwargs):
    """Rank the unlabeled pool with a model from the Model Registry."""
    from alod.steps.rank import run_rank

    run_rank(RankParams(**kwargs))
