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
    """Detector architectures `--arch` accepts (and which ones alod ships starting weights for)."""
    from alod.models import ARCHITECTURES
    from alod.starting_weights import shipped_weights

    for name in ARCHITECTURES:
        path = shipped_weights(name)
        click.echo(name + (f"  (starting weights: {path})" if path else ""))


@models.command("weights")
@friendly_errors
def weights():
    """The starting weights alod ships: file, digest, how they were made and what they reach."""
    from alod.starting_weights import SHIPPED, file_digest, provenance

    for arch, path in SHIPPED.items():
        if not path.is_file():
            click.echo(f"{arch}: {path} is missing (rebuild it with `alod build-weights --arch {arch}`)")
            continue
        info = provenance(path)
        click.echo(f"{arch}: {path}")
        click.echo(f"  size {path.stat().st_size / 1e6:.1f} MB, sha256 {file_digest(path)[:16]}")
        if not info:
            click.echo("  no provenance recorded in the file")
            continue
        s = info.get("settings", {})
        click.echo(f"  rebuild: {info.get('command')}")
        click.echo(f"  trained on {s.get('images')} synthetic source images (data seed {s.get('data_seed')}), "
                   f"{s.get('epochs')} epochs, {info.get('train_seconds', 0) / 60:.1f} min on {info.get('machine')}"
                   f" ({info.get('built')})")
        click.echo(f"  val mAP50: source {info.get('source_val_mAP50', float('nan')):.4f}, "
                   f"target {info.get('target_val_mAP50', float('nan')):.4f}")
        click.echo(f"  source domain: {info.get('source_domain')}")
        click.echo("  used by default for --arch tiny in pretrain, cycle and run; --weights FILE overrides, "
                   "--weights none trains from random init")
