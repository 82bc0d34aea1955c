"""`alod run`: pretrain -> rank -> cycle for several samplers and seeds, then compare."""

from __future__ import annotations

import click

from entrypoints.options import (common_train_options, csv_list, data_option, experiment_option,
                                 forecast_options, friendly_errors, none_if_empty)


@click.command(name="run")
@data_option
@click.option("--samplers", default="random,boxcount", show_default=True, callback=csv_list(str),
              help="Comma-separated; 'auto' (protocol pool) lets a bandit choose among --auto-samplers each cycle.")
@click.option("--seeds", default="0", show_default=True, callback=csv_list(int))
@common_train_options
@click.option("--min-iterations", type=int, default=0, show_default=True,
              help="At least this many SGD steps per cycle: small labeled sets train more epochs (0: just --epochs).")
@click.option("--fraction", type=float, default=0.7, show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=50, show_default=True,
              help="0: the starting weights are registered as they are and rank the pool (as a COCO model "
                   "would rank BDD100K).")
@click.option("--protocol", type=click.Choice(["batches", "pool"]), default="batches", show_default=True)
@click.option("--cycles", type=int, default=13, show_default=True)
@click.option("--per-cycle", type=int, default=1000, show_default=True)
@click.option("--batches", type=int, default=14, show_default=True)
@click.option("--batch-images", type=int, default=5000, show_default=True)
@click.option("--reset", type=click.BOOL, default=True, show_default=True)
@click.option("--weights", default=None, callback=none_if_empty,
              help="Local weight file for pretrain and every cycle (e.g. COCO-pretrained torchvision weights); default: the "
                   "architecture's shipped starting weights (tiny: `alod models weights`), else random init; "
                   "'none': random init. No downloads.")
@click.option("--nproc", type=int, default=1, show_default=True)
@forecast_options
@experiment_option
@friendly_errors
def main(**kwargs):
    """Chain every step for each sampler and seed; log a comparison."""
    from alod.steps.main import MainParams, run_main

    table_run = run_main(MainParams(**kwargs))
    click.echo(f"main run {table_run}")
