"""The pictures a step logs, ready to hand to `alod.tracking` (no MLflow here).

Each helper loads the few images it needs, runs inference on those only when
no predictions are given, and returns a dict name -> picture: a numpy
``H x W x 3`` uint8 array (log with ``tracking.log_image(arr, key=name,
step=cycle)`` so the UI's slider walks through cycles) or a matplotlib
`Figure` (log with ``tracking.log_figure(fig, f"plots/...png")``).

* `fixed_val_sample`: the val images shown every cycle (chosen from the names
  only, so every run and every cycle of a dataset shows the same ones).
* `cycle_pictures`: ground truth vs prediction on that sample, per-class AP50
  bars, class histogram of the labeled boxes against the pool's.
* `selection_pictures`: contact sheet of what the sampler picked (with the
  detections that drove each score) and the pool's score histogram.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from alod import plots
from alod.active.samplers import labeled_class_counts
from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame

__all__ = ["class_counts", "cycle_pictures", "fixed_val_sample", "predictions_for", "read_images",
           "selection_pictures"]


def fixed_val_sample(frames: Sequence[Frame], n: int = 6, seed: int = 0) -> list[Frame]:
    """n frames chosen deterministically from their names (not their order).

    A seeded hash of each name orders the frames; frames with at least one
    trainable box come first (an empty road shows little), then the rest.
    The same labels give the same sample in every run, cycle and process."""
    def key(f: Frame) -> tuple[bool, bytes]:
        return (f.num_trainable == 0, hashlib.blake2b(f"{seed}:{f.name}".encode(), digest_size=8).digest())

    return sorted(frames, key=key)[:max(0, int(n))]


def read_images(frames: Sequence[Frame], image_root: str | Path) -> list[torch.Tensor]:
    """uint8 RGB [3, H, W] per frame; `ImageReadError` names a missing or corrupt file."""
    dataset = DetectionDataset(list(frames), image_root, train=False)
    return [dataset.read_image(i) for i in range(len(frames))]


def _restore_mode(model):
    """Inference helpers leave the model in eval mode; put it back as it was."""
    was_training = bool(getattr(model, "training", False))

    def restore() -> None:
        if was_training:
            model.train()
    return restore


def predictions_for(model: torch.nn.Module, frames: Sequence[Frame], image_root: str | Path, *,
                    device: str | torch.device = "cpu", batch_size: int = 8) -> list[Frame]:
    """Plain predictions for a few frames (the model's train/eval mode is kept)."""
    from alod.engine.infer import predict

    restore = _restore_mode(model)
    try:
        return list(predict(model, DetectionDataset(list(frames), image_root, train=False), device=device,
                            batch_size=batch_size))
    finally:
        restore()


def class_counts(frames: Sequence[Frame]) -> dict[int, int]:
    """Trainable ground-truth boxes per det_20 id (ignore regions excluded), every class listed."""
    counts = labeled_class_counts(frames)
    return {i: counts.get(i, 0) for i in plots.CLASS_COLORS}


def _by_name(predictions) -> Mapping[str, Frame]:
    if isinstance(predictions, Mapping):
        return predictions
    return {f.name: f for f in predictions}


def cycle_pictures(model: torch.nn.Module | None, sample: Sequence[Frame], image_root: str | Path, *,
                   device: str | torch.device = "cpu", predictions: Sequence[Frame] | Mapping[str, Frame] | None = None,
                   images: Sequence[torch.Tensor] | None = None, ap50_per_class: Mapping | None = None,
                   map50: float | None = None,
                   labeled: Sequence[Frame] | None = None, pool: Sequence[Frame] | Mapping | None = None,
                   score_threshold: float = 0.3, cols: int = 2, cell_size: tuple[int, int] = (384, 216),
                   title: str | None = None) -> dict:
    """Pictures of one cycle (or pretrain evaluation).

    sample: the ground-truth frames to show (`fixed_val_sample`), under image_root.
    predictions: predictions already made (a list or name -> Frame; e.g. the
        val predictions the step evaluated); the sample's are picked by name.
        Without them, `model` predicts the sample (a few images).
    images: the sample's images already read (`read_images`), to skip decoding.

    Returns:
      "gt_vs_pred": [H, W, 3] uint8 grid, ground truth beside predictions.
      "ap50_per_class": Figure, when `ap50_per_class` (class name -> AP) is given
          (`map50` drawn as a dashed line).
      "class_histogram": Figure, when `labeled` (frames) and `pool` (frames, or
          precomputed `class_counts`) are given.
    """
    sample = list(sample)
    if predictions is not None:
        by_name = _by_name(predictions)
        missing = [f.name for f in sample if f.name not in by_name]
        if missing:
            raise KeyError(f"no prediction for {len(missing)} sample image(s), e.g. {missing[0]!r}")
        preds = [by_name[f.name] for f in sample]
    elif model is not None:
        preds = predictions_for(model, sample, image_root, device=device)
    else:
        raise ValueError("cycle_pictures needs a model or predictions")
    imgs = list(images) if images is not None else read_images(sample, image_root)
    out: dict = {"gt_vs_pred": plots.gt_vs_pred_grid(imgs, sample, preds, cols=cols, cell_size=cell_size,
                                                     score_threshold=score_threshold)}
    if ap50_per_class is not None:
        out["ap50_per_class"] = plots.ap_bars(ap50_per_class, mean=map50,
                                              title=f"{title}: AP50 per class" if title else "AP50 per class")
    if labeled is not None and pool is not None:
        pool_counts = pool if isinstance(pool, Mapping) else class_counts(pool)
        labeled = list(labeled)
        out["class_histogram"] = plots.class_histogram(
            class_counts(labeled), pool_counts,
            title=(f"{title}: " if title else "") + f"classes of {len(labeled)} labeled images vs the pool")
    return out


def _needs_predictions(sampler: str | None) -> bool:
    from alod.active.samplers import get_sampler

    return sampler is None or get_sampler(sampler).needs_predictions  # unknown name: ValueError


def selection_pictures(picked: Sequence[str], scores: Mapping[str, float] | None, pool: Sequence[Frame],
                       image_root: str | Path, *, sampler: str | None = None, model: torch.nn.Module | None = None,
                       device: str | torch.device = "cpu", top_n: int = 8, low_n: int = 4,
                       score_threshold: float = 0.05, labeled: Collection[str] = (), seed: int = 0,
                       cycle: int | None = None, batch_size: int = 8, cols: int = 4,
                       cell_size: tuple[int, int] = (320, 180), what: str | None = None) -> dict:
    """Pictures of one selection: what was picked, and how the scores spread.

    picked: the names selected (any order; the sheet orders them by score).
    scores: name -> sampler score over the pool the sampler scored (None when
        nothing was scored, e.g. cycle 1's random pick). The `low_n`
        lowest-scored names that were not picked (and are not in `labeled`)
        are shown for contrast.
    model: the model whose detections the sampler scored. With it, the
        sampler's own inference (class probabilities, dropout passes, flip TTA
        as it needs: `alod.active.scoring.detections_for`) runs on the
        top_n + low_n images shown and the boxes that drove each score are
        drawn; without it the images carry their score only.
    what: how the pick was made, for the titles (default: "picked by <sampler>";
        e.g. "random from batch 1" for the first cycle of the batches protocol).

    Returns:
      "picked": [H, W, 3] uint8 contact sheet.
      "score_histogram": Figure of the pool's scores with the picked ones
          highlighted, when `scores` is given.
    """
    by_name = {f.name: f for f in pool}
    unknown = [n for n in picked if n not in by_name]
    if unknown:
        raise KeyError(f"{len(unknown)} picked image(s) are not in the pool, e.g. {unknown[0]!r}")
    picked_set = set(picked)

    def score_of(name: str) -> float:
        v = scores.get(name) if scores is not None else None
        return float(v) if v is not None else float("nan")

    def sort_key(name: str) -> float:
        v = score_of(name)
        return -np.inf if np.isnan(v) else v

    top = sorted(picked, key=sort_key, reverse=True)[:max(0, top_n)]
    low: list[str] = []
    if scores is not None and low_n > 0:
        skip = picked_set | set(labeled)  # (labeled images may score -1 in set-based samplers)
        finite = [(v, n) for n, v in scores.items() if n not in skip and n in by_name and np.isfinite(v)]
        low = [n for _v, n in sorted(finite)[:low_n]]
    names = top + low
    frames = [by_name[n] for n in names]
    detections = [Frame(n) for n in names]
    infer = model is not None and _needs_predictions(sampler)
    if infer and names:
        from alod.active.scoring import detections_for

        restore = _restore_mode(model)
        try:
            detections = detections_for(sampler or "boxcount", model, frames, image_root, device=device,
                                        batch_size=batch_size, seed=seed)
        finally:
            restore()
    images = read_images(frames, image_root)
    what = what or f"picked by {sampler or 'the sampler'}"
    when = f"cycle {cycle}: " if cycle is not None else ""
    if scores is None:  # a random pick: no score, no order, no detections
        shown = f"; {len(top)} shown" if len(top) < len(picked) else ""
    else:
        shown = f"; top {len(top)} by score" + ("" if infer else " (scores as ranked; detections not shown)")
    sheet = plots.picked_sheet(
        images, detections, None if scores is None else [score_of(n) for n in names], top_n=len(top),
        low_n=len(low), picked=[n in picked_set for n in names], sampler=sampler, score_threshold=score_threshold,
        cols=cols, cell_size=cell_size, title=f"{when}{len(picked)} {what}{shown}")
    out: dict = {"picked": sheet}
    if scores is not None:
        before = set(labeled) - picked_set  # labeled in earlier cycles: not part of this choice
        pool_scores = [v for n, v in scores.items() if n not in before]
        out["score_histogram"] = plots.score_histogram(
            pool_scores, picked=[score_of(n) for n in picked],
            title=f"{when}{sampler or 'sampler'} scores over the pool, {len(picked)} {what}")
    return out
