"""BDD100K frames -> COCO, following the official BDD100K conversion.

Category ids are the official det_20 ids 1..10. Our boxes are exclusive, so
``w = x2 - x1`` here equals BDD100K's ``x2_incl - x1 + 1``. Ignore regions
become ``iscrowd=1`` so COCOeval neither rewards nor penalises detections on
them; ``ignore`` is 0 on every annotation, as the official converter writes it
(loaders in the mmdetection style drop annotations with ``ignore`` set, and
would lose the regions). Every frame becomes an image, also frames without
boxes: their false positives must count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from alod.data import categories
from alod.data.bdd100k import write_json_atomic
from alod.data.frames import Frame

DEFAULT_SIZE = (1280, 720)  # every BDD100K image

__all__ = ["DEFAULT_SIZE", "coco_categories", "frames_to_coco", "predictions_to_coco_results", "write_coco"]


def coco_categories() -> list[dict]:
    return [{"id": i, "name": name, "supercategory": "none"} for i, name in categories.ID_TO_NAME.items()]


def frames_to_coco(frames: Iterable[Frame], *, default_size: tuple[int, int] = DEFAULT_SIZE) -> dict:
    """A COCO ground-truth dict; image ids are 1-based positions in `frames`."""
    images, annotations = [], []
    for image_id, frame in enumerate(frames, start=1):
        width = frame.width if frame.width is not None else default_size[0]
        height = frame.height if frame.height is not None else default_size[1]
        images.append({"id": image_id, "file_name": frame.name, "width": int(width), "height": int(height)})
        for box, label, ignore in zip(frame.boxes.tolist(), frame.labels.tolist(), frame.ignore.tolist()):
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": int(ignore),
                    "ignore": 0,
                }
            )
    # pycocotools 2.0.10's loadRes copies gt["info"]: without it evaluation raises KeyError
    return {"info": {"description": "BDD100K detection labels (alod)"}, "licenses": [],
            "type": "instances", "images": images, "annotations": annotations, "categories": coco_categories()}


def predictions_to_coco_results(
    frames_pred: Iterable[Frame] | Mapping[str, Frame], image_ids: Mapping[str, int]
) -> list[dict]:
    """COCO result entries (image_id, category_id, bbox, score) for scored frames.

    ValueError for a frame whose name is not in `image_ids` or that has boxes
    but no scores.
    """
    items = frames_pred.items() if isinstance(frames_pred, Mapping) else ((f.name, f) for f in frames_pred)
    results = []
    for name, frame in items:
        if name not in image_ids:
            raise ValueError(f"prediction for unknown image {name!r} (not in the ground truth)")
        if not len(frame):
            continue
        if frame.scores is None:
            raise ValueError(f"prediction frame {name!r} has boxes but no scores")
        image_id = image_ids[name]
        for box, label, score in zip(frame.boxes.tolist(), frame.labels.tolist(), frame.scores.tolist()):
            x1, y1, x2, y2 = box
            results.append(
                {"image_id": image_id, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    return results


def write_coco(
    frames: Iterable[Frame], path: str | os.PathLike, *, default_size: tuple[int, int] = DEFAULT_SIZE
) -> dict:
    """Write the COCO conversion atomically; returns the dict for counts."""
    coco = frames_to_coco(frames, default_size=default_size)
    write_json_atomic(coco, path)
    return coco
