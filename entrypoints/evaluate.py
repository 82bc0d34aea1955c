"""`alod evaluate`: mAP of a weight file or registered model on labeled images."""

from __future__ import annotations

import click

from entrypoints.options import data_option, friendly_errors, none_if_empty


@click.command()
@click.option("--weights", default=None, callback=none_if_empty, help="Checkpoint or weight file.")
@click.option("--model-uri", default=None, callback=none_if_empty, help="Or a registered model.")
@click.option("--arch", default="tiny", show_default=True, help="Architecture for a bare state dict.")
@click.option("--labels", type=click.Path(exists=True), default=None)
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None)
@data_option
@click.option("--split", default="val", show_default=True, help="Split of --data to evaluate.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--backend", type=click.Choice(["pycocotools", "faster_coco_eval"]), default="pycocotools",
              show_default=True)
@friendly_errors
def evaluate(weights, model_uri, arch, labels, images, data, split, batch_size, backend):
    """Print mAP50, mAP50-95 and per-class AP50 (COCOeval)."""
    from pathlib import Path

    from alod.engine.distributed import default_device
    from alod.engine.evaluate import evaluate as run_evaluate
    from alod.engine.infer import predict_all
    from alod.models import build_detector, detector_from_checkpoint, load_checkpoint
    from alod.steps.common import load_split

    if bool(weights) == bool(model_uri):
        raise click.UsageError("give exactly one of --weights or --model-uri")
    if model_uri:
        from alod import tracking

        tracking.setup_client()
        weights, _ = tracking.download_registered_checkpoint(model_uri)
    try:
        model = detector_from_checkpoint(load_checkpoint(Path(weights)))
    except (KeyError, ValueError):
        model = build_detector(arch, weights=weights)
    split_data = load_split(data, split, labels=labels, images=images)
    device = default_device()
    preds = predict_all(model.to(device), split_data.frames, split_data.images, device=device,
                        batch_size=batch_size, workers=0)
    click.echo(run_evaluate(split_data.frames, preds, backend=backend).as_table())
