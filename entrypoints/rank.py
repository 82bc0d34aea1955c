"""`alod rank`: score the pool with a registered model and cut the ranking into batches."""

from __future__ import annotations

import click

from alod.tracking import CHAMPION, PRETRAINED_MODEL
from entrypoints.options import data_option, experiment_option, friendly_errors, none_if_empty


@click.command()
@data_option
@click.option("--model-uri", default=f"models:/{PRETRAINED_MODEL}@{CHAMPION}", show_default=True,
              help="Registered model to rank with (models:/NAME@ALIAS or models:/NAME/VERSION).")
@click.option("--sampler", default="boxcount", show_default=True, help="See `alod samplers`.")
@click.option("--batches", type=int, default=14, show_default=True)
@click.option("--batch-images", type=int, default=5000, show_default=True)
@click.option("--score-threshold", type=float, default=0.05, show_default=True,
              help="Detections below this score do not count (boxcount).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-batch-size", type=int, default=8, show_default=True, help="Inference batch size.")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--nproc", type=int, default=1, show_default=True,
              help="torchrun processes per node; each scores a shard of the pool (one per GPU).")
@click.option("--nnodes", type=int, default=1, show_default=True, help="Nodes (multi-node torchrun).")
@click.option("--rdzv-endpoint", default=None, callback=none_if_empty,
              help="host:port of node 0's rendezvous, for --nnodes > 1.")
@click.option("--work-dir", default=".alod", show_default=True)
@experiment_option
@friendly_errors
def rank(**kwargs):
    """Rank the unlabeled pool with a model from the Model Registry."""
    from alod.steps.rank import RankParams, run_rank

    run_rank(RankParams(**kwargs))
