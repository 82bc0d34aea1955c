"""The `alod` command group: every subcommand lives in its own module."""

from __future__ import annotations

import click

from entrypoints.build_weights import build_weights
from entrypoints.compare import compare
from entrypoints.cycle import cycle
from entrypoints.data_cmd import data
from entrypoints.evaluate import evaluate
from entrypoints.import_labels import import_labels
from entrypoints.main import main
from entrypoints.models_cmd import models
from entrypoints.predict import predict
from entrypoints.pretrain import pretrain
from entrypoints.rank import rank
from entrypoints.samplers_cmd import samplers
from entrypoints.show import show
from entrypoints.synth import synth


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Active learning for object detection, tracked with MLflow."""


for command in (data, synth, evaluate, pretrain, rank, cycle, import_labels, main, compare, predict, models, samplers, show,
                build_weights):
    cli.add_command(command)

if __name__ == "__main__":
    cli()
