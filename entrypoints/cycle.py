"""`alod cycle`: active-learning cycles (torchrun for nproc > 1)."""

from __future__ import annotations

import click

from entrypoints.options import (common_train_options, data_option, experiment_option, forecast_options,
                                 friendly_errors, none_if_empty, resumed_params, seed_option)


@click.command()
@data_option
@click.option("--ranking", default=None, callback=none_if_empty,
              help="A rank run id or a ranking.parquet path (protocol batches).")
@click.option("--sampler", default=None, callback=none_if_empty,
              help="Sampler for protocol pool (default: the ranking's sampler, else boxcount); 'auto': a bandit "
                   "chooses among --auto-samplers every cycle.")
@click.option("--protocol", type=click.Choice(["batches", "pool"]), default="batches", show_default=True)
@click.option("--cycles", type=int, default=13, show_default=True)
@click.option("--per-cycle", type=int, default=1000, show_default=True, help="Images unveiled per cycle.")
@click.option("--budget-boxes", type=int, default=0, show_default=True,
              help="Count the budget in boxes: each cycle labels images in selection order until this many "
                   "boxes (at most --per-cycle images); 0: count in images.")
@common_train_options
@click.option("--min-iterations", type=int, default=0, show_default=True,
              help="At least this many SGD steps per cycle: small labeled sets train more epochs (0: just --epochs).")
@seed_option
@click.option("--reset", type=click.BOOL, default=True, show_default=True,
              help="Re-initialise the detector every cycle (false: warm-start).")
@click.option("--weights", default=None, callback=none_if_empty,
              help="Local weight file every cycle starts from (e.g. COCO-pretrained torchvision weights); default: the "
                   "architecture's shipped starting weights (tiny: `alod models weights`), else random init; "
                   "'none': random init. No downloads.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes per node for torchrun (one per GPU; gloo on CPU).")
@click.option("--nnodes", type=int, default=1, show_default=True, help="Nodes (multi-node torchrun).")
@click.option("--rdzv-endpoint", default=None, callback=none_if_empty,
              help="host:port of node 0's rendezvous, for --nnodes > 1.")
@click.option("--max-restarts", type=int, default=0, show_default=True,
              help="Elastic restarts: a failed worker restarts and the cycle resumes from its checkpoint.")
@click.option("--eval-batch-size", type=int, default=8, show_default=True)
@click.option("--score-threshold", type=float, default=0.05, show_default=True)
@click.option("--oracle", type=click.Choice(["simulated", "files"]), default="simulated", show_default=True,
              help="simulated: unveil the ground truth; files: export each batch for annotators and wait "
                   "for `alod import-labels`.")
@click.option("--preannotation-threshold", type=float, default=0.5, show_default=True,
              help="files oracle: predictions scoring at least this become pre-annotations.")
@click.option("--annotation-url-prefix", default="", show_default=True,
              help="files oracle: URL prefix of the (URL-encoded) image names in Label Studio tasks, where the "
                   "labeling page loads them from: e.g. https://host/bdd100k/images/100k/train/, or with Label "
                   "Studio's local files serving and the BDD100K layout '/data/local-files/?d=images/100k/train/' "
                   "(README: Label Studio). Empty: bare names, with a warning.")
@forecast_options
@click.option("--register", type=click.BOOL, default=True, show_default=True,
              help="Register the final model as a version of alod-detector.")
@click.option("--resume-run-id", default=None, callback=none_if_empty,
              help="Resume an interrupted cycle run from its last completed cycle.")
@experiment_option
@friendly_errors
def cycle(**kwargs):
    """Run active-learning cycles on a ranking (or the whole pool)."""
    from alod.steps.cycle import CycleParams, run_cycles

    run_id = run_cycles(CycleParams(**resumed_params(kwargs, CycleParams)))
    click.echo(f"cycle run {run_id}")
