"""`alod show`: draw predictions or ground truth on images, one PNG each."""

from __future__ import annotations

from pathlib import Path

import click

from entrypoints.options import friendly_errors


def _png_name(name: str) -> str:
    """A frame name (maybe with folders) as one flat PNG file name."""
    return str(Path(name).with_suffix(".png")).replace("\\", "/").replace("/", "__")


@click.command()
@click.argument("files", metavar="IMAGES...", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--model-uri", default=None,
              help="Registered model to predict with: models:/NAME@ALIAS or models:/NAME/VERSION.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Or a local alod checkpoint (.pt) to predict with.")
@click.option("--labels", type=click.Path(exists=True), default=None,
              help="Label file or folder (any BDD100K shape or COCO): draw its ground truth.")
@click.option("--images", "image_root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Image folder the --labels frame names are relative to.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Or a BDD100K-layout root (what `alod synth` writes) instead of --labels/--images.")
@click.option("--split", default="val", show_default=True, help="Split of --data.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Ground-truth mode: draw the first N frames of the labels.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for the PNGs.")
@click.option("--score-threshold", type=float, default=0.3, show_default=True,
              help="Predictions below this score are not drawn.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@friendly_errors
def show(files, model_uri, weights, labels, image_root, data, split, limit, out, score_threshold, batch_size):
    """Draw boxes on images and write one PNG per image into --out.

    \b
    Predictions on any images:
      alod show --model-uri models:/alod-detector@champion a.jpg b.jpg --out shown
      alod show --weights .alod/runs/<run>/cycle_004.pt a.jpg --out shown
    Ground truth of a label file (first --limit frames):
      alod show --labels det_val.json --images images/100k/val --limit 10 --out shown
      alod show --data demo-data --split train --out shown
    Both (ground truth beside predictions): add --model-uri or --weights to the
    ground-truth form.

    Class colours are the same in every alod picture; ignore regions are hatched.
    """
    from alod.data.frames import Frame

    if model_uri and weights:
        raise click.UsageError("give --model-uri or --weights, not both")
    from_labels = labels is not None or data is not None
    if files and from_labels:
        raise click.UsageError("give IMAGES (to draw predictions) or --labels/--data (ground truth), not both")
    if not files and not from_labels:
        raise click.UsageError("nothing to draw: give IMAGES with --model-uri/--weights, "
                               "or --labels with --images (or --data)")
    if files and not (model_uri or weights):
        raise click.UsageError("drawing predictions on IMAGES needs --model-uri or --weights")

    model, device, source = _load_model(model_uri, weights)
    out_dir = Path(out)
    if from_labels:
        frames, root = _labelled_frames(labels, image_root, data, split, limit)
        if model is not None:
            from alod.pictures import predictions_for
            preds = predictions_for(model, frames, root, device=device, batch_size=batch_size)
        else:
            preds = [None] * len(frames)
        paths = [None] * len(frames)
    else:
        from alod.steps.predict import predict_files

        unique = list(dict.fromkeys(str(Path(f).resolve()) for f in files))
        preds = predict_files(model, unique, device=device, batch_size=batch_size)
        frames = [Frame(p.name) for p in preds]
        paths, root = unique, None

    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for frame, pred, path in zip(frames, preds, paths):
        target = out_dir / _png_name(frame.name)
        boxes = _render(frame, pred, path, root, target, score_threshold, ground_truth=from_labels)
        click.echo(f"{target}  ({boxes})")
        written += 1
    what = ("ground truth" + (" vs predictions" if model is not None else "")) if from_labels else "predictions"
    click.echo(f"wrote {written} PNG(s) of {what}{f' ({source})' if source else ''} to {out_dir}")


def _load_model(model_uri, weights):
    if not (model_uri or weights):
        return None, None, None
    from alod.engine.distributed import default_device
    from alod.models import detector_from_checkpoint

    device = default_device()
    if weights:
        return detector_from_checkpoint(weights).to(device), device, str(weights)
    from alod import tracking

    tracking.setup_client()
    model, version = tracking.load_registered_detector(model_uri)
    return model.to(device), device, f"{version.name} v{version.version}"


def _labelled_frames(labels, image_root, data, split, limit):
    from alod.data.bdd100k import load_labels, split_paths

    if data is not None:
        if labels is not None or image_root is not None:
            raise click.UsageError("give --data or --labels/--images, not both")
        labels, image_root = split_paths(Path(data), split)
        if not Path(labels).exists():
            raise click.UsageError(f"{data} has no {split!r} labels ({labels})")
    elif image_root is None:
        raise click.UsageError("--labels needs --images DIR (the folder its frame names are relative to)")
    frames, _report = load_labels(Path(labels))
    if not frames:
        raise click.ClickException(f"{labels} holds no frames")
    return frames[:limit], Path(image_root)


def _render(frame, pred, path, root, target: Path, score_threshold: float, *, ground_truth: bool) -> str:
    """Draw one image into `target`; returns a short summary of what was drawn."""
    import numpy as np
    from PIL import Image

    from alod import plots
    from alod.pictures import read_images

    if path is not None:
        p = Path(path)
        image = read_images([type(frame)(p.name)], p.parent)[0]
    else:
        image = read_images([frame], root)[0]
    if ground_truth and pred is not None:
        h, w = image.shape[-2:]
        arr = plots.gt_vs_pred_grid([image], [frame], [pred], cols=1, cell_size=(w, h),
                                    score_threshold=score_threshold)
        kept = int((pred.scores >= score_threshold).sum())
        summary = f"{frame.num_trainable} ground-truth boxes, {kept} predicted ≥ {score_threshold:g}"
    elif ground_truth:
        ignored = int(frame.ignore.sum())
        summary = f"{frame.num_trainable} ground-truth boxes" + (f", {ignored} ignore region(s)" if ignored else "")
        arr = _with_legend(plots.draw_frame(image, frame, title=f"{frame.name}: {summary}"))
    else:
        pred = pred if pred is not None else frame
        kept = int((pred.scores >= score_threshold).sum())
        summary = f"{kept} predicted boxes ≥ {score_threshold:g}"
        arr = _with_legend(plots.draw_frame(image, pred, title=f"{pred.name}: {summary}",
                                            score_threshold=score_threshold))
    Image.fromarray(np.ascontiguousarray(arr)).save(target)
    return summary


def _with_legend(chw):
    import numpy as np

    from alod import plots

    arr = chw.permute(1, 2, 0).numpy()
    return np.concatenate([arr, plots.legend_strip(arr.shape[1])], 0)
