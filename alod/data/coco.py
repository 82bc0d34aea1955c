"""COCO detection documents: read into frames, and BDD100K frames written as COCO.

Reading (`read_coco`, called by `alod.data.bdd100k.load_labels` /
`load_document` for a document `is_coco_document` recognises): categories are
matched by name onto det_20, ``bbox`` ``[x, y, w, h]`` becomes an exclusive
xyxy box, ``iscrowd`` / ``ignore`` make an ignore region; every image is a
frame, with or without annotations; every defect is reported to the parser,
located by file, frame, label index and field.

Writing follows the official BDD100K conversion. Category ids are the
official det_20 ids 1..10. Our boxes are exclusive, so
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
from typing import Any

from alod.data import categories
from alod.data.frames import Frame
from alod.data.label_parser import LabelParser, RawFrame, is_number, is_positive_int, json_kind
from alod.fileio import write_json_atomic

DEFAULT_SIZE = (1280, 720)  # every BDD100K image

__all__ = ["DEFAULT_SIZE", "coco_categories", "frames_to_coco", "is_coco_document", "predictions_to_coco_results",
           "read_coco", "write_coco"]


# --- reading ------------------------------------------------------------------------


def is_coco_document(data: Any) -> bool:
    """A COCO object: `images` with `annotations` or `categories` (either may be left out)."""
    return isinstance(data, dict) and "images" in data and ("annotations" in data or "categories" in data)


def read_coco(parser: LabelParser, data: dict, file: str) -> None:
    """The images of a COCO document into `parser`'s frames; problems go to its report."""
    images = data.get("images")
    anns = data.get("annotations") or []
    cats = data.get("categories") or []
    for key, val in (("images", images), ("annotations", anns), ("categories", cats)):
        if not isinstance(val, list):
            parser.problem(file, None, None, key, f"expected a list, got {json_kind(val)}")
            return

    cat_names: dict[int, str] = {}
    for k, cat in enumerate(cats):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            parser.problem(file, None, None, f"categories[{k}]", "expected {id: int, name: str}")
            continue
        cat_names[cat["id"]] = cat["name"]

    by_id: dict[int, RawFrame | None] = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            parser.problem(file, f"#{i}", None, None, f"image is not a JSON object ({json_kind(img)})")
            continue
        img_id = img.get("id")
        if not isinstance(img_id, int) or isinstance(img_id, bool):
            parser.problem(file, f"#{i}", None, "id", f"image id must be an integer, got {img_id!r}")
            continue
        if img_id in by_id:
            parser.problem(file, f"#{i}", None, "id", f"duplicate image id {img_id}")
            continue
        name = parser.register_name(img.get("file_name"), file, i)
        if name is None:
            by_id[img_id] = None  # reported; its annotations are still checked
            continue
        raw = RawFrame(name=name, file=file)
        w, h = img.get("width"), img.get("height")
        if is_positive_int(w) and is_positive_int(h):
            raw.width, raw.height = int(w), int(h)
        by_id[img_id] = raw
        parser.frames.append(raw)

    per_image: dict[int, int] = {}
    for a, ann in enumerate(anns):
        if not isinstance(ann, dict):
            parser.problem(file, None, a, None, f"annotation #{a} is not a JSON object")
            continue
        img_id = ann.get("image_id")
        if img_id not in by_id:
            parser.problem(file, None, a, "image_id", f"annotation #{a} refers to unknown image id {img_id!r}")
            continue
        raw = by_id[img_id]
        where = raw.name if raw is not None else f"image id {img_id}"
        # label index = position among this image's annotations, like Scalabel labels
        j = per_image.get(img_id, 0)
        per_image[img_id] = j + 1
        ok = True
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            parser.problem(file, where, j, "bbox", f"expected [x, y, w, h], got {bbox!r}")
            ok = False
        else:
            for c, v in zip(("x", "y", "w", "h"), bbox):
                if not is_number(v):
                    parser.problem(file, where, j, f"bbox.{c}", f"must be a finite number, got {v!r}")
                    ok = False
            if ok and (bbox[2] < 0 or bbox[3] < 0):
                parser.problem(file, where, j, "bbox", f"negative width or height: {bbox!r}")
                ok = False
        score = parser.score(ann, file, where, j)
        if score is False:
            ok = False
        cid = ann.get("category_id")
        if cid not in cat_names:
            parser.problem(file, where, j, "category_id", f"category id {cid!r} not in 'categories'")
            continue
        resolved = parser.category(cat_names[cid], file, where, j, "category_id")
        if resolved is None or resolved is False or not ok or raw is None:
            continue
        cat_id, ignore, raw_name = resolved
        ignore = ignore or bool(ann.get("iscrowd")) or bool(ann.get("ignore"))
        x, y, w, h = (float(v) for v in bbox)
        parser.add(raw, j, (x, y, x + w, y + h), cat_id, ignore, score, raw_name)


# --- writing ------------------------------------------------------------------------


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
