"""`alod evaluate`: mAP of a weight file, a registered model, or any detector's predictions.

The numbers are the official BDD100K evaluator's (`python -m bdd100k.eval.run -t det`):
the ground truth is read unclipped, as written (see alod.engine.evaluate).
"""

from __future__ import annotations

import json
import math

import click

from entrypoints.options import data_option, friendly_errors, none_if_empty


@click.command()
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Score a Scalabel predictions file (every label with a `score`, as `alod predict` and the "
                   "BDD100K evaluator take them) instead of running a model.")
@click.option("--weights", default=None, callback=none_if_empty, help="Checkpoint or weight file.")
@click.option("--model-uri", default=None, callback=none_if_empty, help="Or a registered model.")
@click.option("--arch", default="tiny", show_default=True, help="Architecture for a bare state dict.")
@click.option("--labels", type=click.Path(exists=True), default=None,
              help="Ground-truth labels (any format alod reads); default: the --split labels of --data.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None)
@data_option
@click.option("--split", default="val", show_default=True, help="Split of --data to evaluate.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--skip-unknown", is_flag=True, help="Skip labels of unknown categories instead of failing.")
@click.option("--backend", type=click.Choice(["pycocotools", "faster_coco_eval"]), default="pycocotools",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object (NaN as null).")
@friendly_errors
def evaluate(predictions, weights, model_uri, arch, labels, images, data, split, batch_size, skip_unknown,
             backend, as_json):
    """Print mAP50, mAP50-95 and per-class AP50 (COCOeval, as the official BDD100K evaluator).

    \b
    alod evaluate --predictions preds.json --labels det_val.json [--json]
    alod evaluate --model-uri models:/alod-detector@champion --data data/bdd100k
    """
    from pathlib import Path

    from alod.engine.evaluate import evaluate as run_evaluate

    sources = [s for s in (predictions, weights, model_uri) if s]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of --predictions, --weights or --model-uri")
    if predictions:
        from alod.data.bdd100k import load_labels, split_paths

        if labels is None:
            if data is None:
                raise click.UsageError("--predictions needs the ground truth: --labels GT.json or --data ROOT")
            labels, _ = split_paths(Path(data), split)
        gt, _ = load_labels(Path(labels), skip_unknown=skip_unknown, exact=True)
        preds, _ = load_labels(Path(predictions), skip_unknown=skip_unknown, exact=True)
        unscored = next((f.name for f in preds if len(f) and f.scores is None), None)
        if unscored is not None:
            raise click.UsageError(f"{predictions} has no scores (e.g. frame {unscored!r}): "
                                   "a predictions file gives every label a `score`")
        result = run_evaluate(gt, preds, backend=backend)
    else:
        result = run_evaluate(*_predict_split(weights, model_uri, arch, labels, images, data, split,
                                              batch_size, skip_unknown), backend=backend)
    if as_json:
        click.echo(json.dumps(_as_json(result), indent=2))
    else:
        click.echo(result.as_table())


def _load_model(weights, arch):
    from pathlib import Path

    from alod.models import build_detector, detector_from_checkpoint, load_checkpoint

    try:
        return detector_from_checkpoint(load_checkpoint(Path(weights)))
    except (KeyError, ValueError):
        return build_detector(arch, weights=weights)


def _predict_split(weights, model_uri, arch, labels, images, data, split, batch_size, skip_unknown):
    from alod.engine.distributed import default_device
    from alod.engine.infer import predict_all
    from alod.data.splits import load_split

    if model_uri:
        from alod import tracking

        tracking.setup_client()
        with tracking.registered_checkpoint(model_uri) as (path, _):
            model = _load_model(path, arch)
    else:
        model = _load_model(weights, arch)
    split_data = load_split(data, split, labels=labels, images=images, skip_unknown=skip_unknown, exact=True)
    device = default_device()
    preds = predict_all(model.to(device), split_data.frames, split_data.images, device=device,
                        batch_size=batch_size, workers=0)
    return split_data.frames, preds


def _as_json(result) -> dict:
    def num(v: float):
        return None if math.isnan(v) else v

    return {
        "mAP50": num(result.mAP50),
        "mAP50_95": num(result.mAP50_95),
        "AP50": {name: num(v) for name, v in result.ap50_per_class.items()},
        "num_images": result.num_images,
        "num_predictions": result.num_predictions,
    }
