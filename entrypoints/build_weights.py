"""`alod build-weights`: rebuild the shipped starting weights of the tiny detector."""

from __future__ import annotations

import dataclasses

import click

from entrypoints.options import friendly_errors

_HELP = {
    "arch": "Detector architecture.",
    "images": "Source-domain training images to synthesize.",
    "val": "Source and target val images (each) the quality is measured on.",
    "epochs": "Training epochs from random init.",
    "batch_size": "Images per step.",
    "lr": "Learning rate for a total batch of 16, scaled linearly.",
    "data_seed": "Seed of the synthetic source corpus (and of the target val split).",
    "seed": "Seed of the initial weights and the shuffling.",
    "workers": "DataLoader workers (and synthesis processes).",
    "threads": "torch threads (0: torch's default).",
}


def _settings_options(f):
    from alod.params import BuildSettings

    for field in reversed(dataclasses.fields(BuildSettings)):
        f = click.option(f"--{field.name.replace('_', '-')}", field.name, type=type(field.default),
                         default=field.default, show_default=True, help=_HELP[field.name])(f)
    return f


@click.command(name="build-weights")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the weights (default: the file alod ships for --arch).")
@_settings_options
@friendly_errors
def build_weights(out, **settings):
    """Train the starting weights on the synthetic source domain (what `--arch tiny` starts from).

    Synthesizes the source corpus in a temporary folder, trains from random init
    on the CPU, measures val mAP50 on the source and on the target domain, and
    writes the weights with their provenance inside (and beside, as .json).
    """
    from alod.starting_weights import SHIPPED, BuildSettings, build_starting_weights

    s = BuildSettings(**settings)
    if out is None:
        if s.arch not in SHIPPED:
            raise click.UsageError(f"alod ships no starting weights for {s.arch!r}: give --out")
        out = SHIPPED[s.arch]
    record = build_starting_weights(out, s)
    click.echo(f"wrote {out} ({record['sha256'][:12]}) in {record['total_seconds'] / 60:.1f} min: "
               f"source val mAP50 {record['source_val_mAP50']:.4f}, target val mAP50 "
               f"{record['target_val_mAP50']:.4f}")
