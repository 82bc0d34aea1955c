"""`alod compare`: the sampler table and learning-curve PNG from finished cycle runs."""

from __future__ import annotations

from pathlib import Path

import click

from entrypoints.options import experiment_option, friendly_errors


@click.command()
@experiment_option
@click.option("--filter", "filter_string", default="", help="Extra MLflow search filter, e.g. tags.`alod.protocol` = 'pool'.")
@click.option("--out", type=click.Path(file_okay=False), default="compare", show_default=True)
@click.option("--target-map50", type=float, default=0.0, show_default=True,
              help="Also forecast the labeled images each sampler needs to reach this mAP50 (0: none).")
@friendly_errors
def compare(experiment, filter_string, out, target_map50):
    """Compare samplers: mAP50 per cycle, area under the curve, labels to 95 %, the learning-curve forecast."""
    from alod import tracking
    from alod.steps.main import print_forecast, write_comparison

    tracking.setup_client()
    curves = tracking.cycle_curves(experiment, filter_string)
    if curves.empty:
        raise click.ClickException(f"no cycle runs with mAP50 in experiment {experiment!r}")
    table, png = write_comparison(curves, Path(out))
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 50):
        click.echo(table.to_string(index=False))
        print_forecast(curves, target_map50 or None)
    click.echo(f"\nwrote {Path(out) / 'comparison.csv'} and {png}")
