"""`alod models`: the detector architectures and the registered versions."""

from __future__ import annotations

import click

from entrypoints.options import friendly_errors


@click.group()
def models():
    """Detector architectures and registered model versions."""


@models.command("list")
@click.option("--name", "names", multiple=True, help="Registered model(s); default alod-pretrained and alod-detector.")
@friendly_errors
def list_versions(names):
    """Registered versions with their aliases, sampler, cycle and mAP50 tags."""
    from alod import tracking

    tracking.setup_client()
    names = names or (tracking.PRETRAINED_MODEL, tracking.DETECTOR_MODEL)
    rows = tracking.registered_versions(names)
    if not rows:
        click.echo(f"no registered versions of {', '.join(names)} at {tracking.tracking_uri()}")
        return
    header = ("model", "version", "aliases", "sampler", "protocol", "cycle", "mAP50", "run_id")
    click.echo("  ".join(f"{h:<14}" for h in header))
    for row in rows:
        click.echo("  ".join(f"{str(row.get(h, '')):<14}" for h in header))


@models.command("archs")
def archs():
    """Detector architectures `--arch` accepts."""
    from alod.models import ARCHITECTURES

    for name in ARCHITECTURES:
        click.echo(name)
