"""Detection mAP with COCOeval (bbox) over the official BDD100K COCO conversion.

Two backends compute the same numbers: pycocotools (the reference) and
faster_coco_eval (a C++ port, much faster on 10 000 validation images).

The numbers equal the official BDD100K evaluator's (`python -m bdd100k.eval.run
-t det`, scalabel's `evaluate_det`; tests/engine/test_official_evaluator.py
compares them to 1e-9) as long as the ground truth is loaded unclipped
(`load_labels(..., exact=True)`, what `load_split` does for evaluation splits):
images are numbered in name order, as the official evaluator sorts them, so
equal scores break ties the same way; and without a single detection the
official empty result is returned (0 for every class with any annotation).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from alod.data import categories
from alod.data.coco import DEFAULT_SIZE, frames_to_coco, predictions_to_coco_results
from alod.data.frames import Frame

BACKENDS = ("pycocotools", "faster_coco_eval")

__all__ = ["BACKENDS", "EvalResult", "evaluate"]


@dataclass
class EvalResult:
    """mAP over the 10 det_20 classes; NaN where there is nothing to measure."""

    mAP50: float
    mAP50_95: float
    ap50_per_class: dict[str, float] = field(default_factory=dict)  # NaN: class has no GT
    num_images: int = 0
    num_predictions: int = 0

    def as_metrics(self) -> dict[str, float]:
        """Flat metric dict: mAP50, mAP50_95, AP50.<class> (the steps log the last as val_AP50.<class>)."""
        out = {"mAP50": self.mAP50, "mAP50_95": self.mAP50_95}
        out.update({f"AP50.{name}": ap for name, ap in self.ap50_per_class.items()})
        return out

    def as_table(self) -> str:
        width = max(len(n) for n in [*self.ap50_per_class, "mAP50-95"])
        lines = [f"{'class':<{width}}  AP50", f"{'-' * width}  ------"]
        for name, ap in self.ap50_per_class.items():
            lines.append(f"{name:<{width}}  {_fmt(ap)}")
        lines.append(f"{'-' * width}  ------")
        lines.append(f"{'mAP50':<{width}}  {_fmt(self.mAP50)}")
        lines.append(f"{'mAP50-95':<{width}}  {_fmt(self.mAP50_95)}")
        lines.append(f"{self.num_images} images, {self.num_predictions} predictions")
        return "\n".join(lines)


def _fmt(v: float) -> str:
    return "   n/a" if math.isnan(v) else f"{v:6.4f}"


def evaluate(
    gt_frames: Iterable[Frame],
    predictions: Iterable[Frame] | Mapping[str, Frame],
    *,
    backend: str = "pycocotools",
    default_size: tuple[int, int] = DEFAULT_SIZE,
) -> EvalResult:
    """COCO bbox mAP of `predictions` (scored frames, matched to `gt_frames` by name).

    Ground-truth images without predictions count (their boxes are misses);
    a prediction for an image not in the ground truth is a ValueError (the
    official evaluator drops it silently; here it means the wrong label file).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    gt_frames = list(gt_frames)
    if not isinstance(predictions, Mapping):
        predictions = list(predictions)
        names = [f.name for f in predictions]
        if len(set(names)) != len(names):
            raise ValueError("predictions hold the same image more than once")
    # The official evaluator sorts the ground truth by name before numbering the images;
    # COCOeval breaks score ties by image id, so the order decides tied detections' ranks.
    gt_frames.sort(key=lambda f: f.name)
    gt = frames_to_coco(gt_frames, default_size=default_size)
    image_ids = {img["file_name"]: img["id"] for img in gt["images"]}
    if len(image_ids) != len(gt_frames):
        raise ValueError("ground truth holds the same image name more than once")
    results = predictions_to_coco_results(predictions, image_ids)

    names = list(categories.CATEGORIES)
    num_gt = np.zeros(len(names), dtype=np.int64)  # boxes to find per class
    annotated = np.zeros(len(names), dtype=bool)  # any annotation, ignore regions included
    for ann in gt["annotations"]:
        annotated[ann["category_id"] - 1] = True
        if not ann["iscrowd"]:
            num_gt[ann["category_id"] - 1] += 1
    nan = float("nan")

    if not results:
        # loadRes cannot take an empty list. The official evaluator then returns its "empty"
        # result: 0 for every class with any annotation (even only ignore regions), else NaN.
        per_class = {n: (0.0 if a else nan) for n, a in zip(names, annotated)}
        overall = 0.0 if annotated.any() else nan
        return EvalResult(overall, overall, per_class, len(gt_frames), 0)
    if not num_gt.any():  # nothing to find: AP is undefined, not zero (COCOeval: -1)
        per_class = {n: nan for n in names}
        return EvalResult(nan, nan, per_class, len(gt_frames), len(results))

    precision, stats = _run_cocoeval(gt, results, backend)
    per_class = {}
    for k, name in enumerate(names):
        p = precision[0, :, k, 0, -1]  # IoU 0.5, all recall points, area all, maxDets 100
        p = p[p > -1]
        per_class[name] = float(p.mean()) if p.size else nan
    return EvalResult(
        mAP50=_stat(stats[1]),
        mAP50_95=_stat(stats[0]),
        ap50_per_class=per_class,
        num_images=len(gt_frames),
        num_predictions=len(results),
    )


def _stat(v: float) -> float:
    # COCOeval reports -1 when no category has ground truth.
    return float("nan") if v < 0 else float(v)


def _run_cocoeval(gt: dict, results: list[dict], backend: str) -> tuple[np.ndarray, np.ndarray]:
    # Both libraries print progress to stdout; keep it out of the user's output.
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
            ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        else:
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(gt)
            coco_dt = coco_gt.loadRes(results)
            ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.eval["precision"]), np.asarray(ev.stats)
