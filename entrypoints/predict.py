"""`alod predict`: Scalabel-format predictions from a registered model."""

from __future__ import annotations

from pathlib import Path

import click

from alod.names import CHAMPION, DETECTOR_MODEL
from entrypoints.options import friendly_errors


@click.command()
@click.option("--model-uri", default=f"models:/{DETECTOR_MODEL}@{CHAMPION}", show_default=True)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Predictions JSON to write.")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Keep boxes scoring at least this. 0 keeps every box the detector outputs: the file an "
                   "evaluation needs (`alod evaluate --predictions`, the official BDD100K evaluator), equal to "
                   "alod's own mAP. A higher cut is for looking at boxes, and lowers mAP.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@friendly_errors
def predict(model_uri, images, out, score_threshold, batch_size):
    """Predict boxes for IMAGES and write them in Scalabel format (BDD100K evaluator input).

    \b
    alod predict images/100k/val/*.jpg --out preds.json
    alod evaluate --predictions preds.json --labels labels/det_20/det_val.json
    """
    from alod import tracking
    from alod.data.bdd100k import save_frames
    from alod.engine.distributed import default_device
    from alod.models import detector_from_checkpoint
    from alod.steps.predict import predict_files

    tracking.setup_client()
    with tracking.registered_checkpoint(model_uri) as (ckpt, version):
        model = detector_from_checkpoint(ckpt)
    device = default_device()
    model = model.to(device)
    preds = predict_files(model, images, device=device, batch_size=batch_size)
    kept = [f.scoring_at_least(score_threshold) for f in preds]
    save_frames(kept, Path(out), scores=True)
    click.echo(f"{version.name} v{version.version}: {sum(len(f) for f in kept)} boxes "
               f"in {len(kept)} image(s) -> {out}")
