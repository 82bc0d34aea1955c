"""The official BDD100K -> COCO conversion."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from alod.data import categories
from alod.data.bdd100k import load_labels
from alod.data.coco import frames_to_coco, predictions_to_coco_results, write_coco
from alod.data.frames import Frame

OPENMT = "vis4d__openmt_detect_annotation__train_12305469.json"
IGNORE = "bdd100k__example_ignore_annotation__boxtrack_otherperson.json"


def test_official_categories_and_images():
    coco = frames_to_coco([Frame("a.jpg"), Frame("b.jpg", width=640, height=480)])
    assert [(c["id"], c["name"]) for c in coco["categories"]] == list(categories.ID_TO_NAME.items())
    assert coco["categories"][0] == {"id": 1, "name": "pedestrian", "supercategory": "none"}
    assert coco["categories"][-1]["name"] == "traffic sign"
    # Every frame is an image, also empty ones; size defaults to 1280x720.
    assert coco["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 1280, "height": 720},
        {"id": 2, "file_name": "b.jpg", "width": 640, "height": 480},
    ]
    assert coco["annotations"] == []
    assert frames_to_coco([Frame("a.jpg")], default_size=(10, 20))["images"][0]["width"] == 10
    # COCO's top-level keys; pycocotools 2.0.10's loadRes fails without "info"
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(coco)


def test_bbox_plus_one_by_hand(bdd_fixtures):
    # First label of the fixture: box2d x1 671.856564, y1 258.524817, x2 688.731553,
    # y2 290.587294 (inclusive) -> official COCO bbox [x1, y1, x2-x1+1, y2-y1+1].
    frames, _ = load_labels(bdd_fixtures / OPENMT)
    coco = frames_to_coco(frames)
    ann = coco["annotations"][0]
    np.testing.assert_allclose(ann["bbox"], [671.856564, 258.524817, 17.874989, 33.062477], rtol=1e-6)
    assert ann["area"] == pytest.approx(17.874989 * 33.062477, rel=1e-5)
    assert (ann["id"], ann["image_id"], ann["category_id"], ann["iscrowd"], ann["ignore"]) == (1, 1, 9, 0, 0)
    assert len(coco["annotations"]) == 10


def test_ignore_regions_are_crowd(bdd_fixtures):
    frames, _ = load_labels(bdd_fixtures / IGNORE)
    coco = frames_to_coco(frames)
    assert [(a["category_id"], a["iscrowd"], a["ignore"]) for a in coco["annotations"]] == [(1, 1, 0), (1, 0, 0)]
    assert len(coco["images"]) == 2  # the frame with "labels": null is kept


def test_write_coco_reads_back_and_loads_in_pycocotools(tmp_path, bdd_fixtures):
    frames, _ = load_labels(bdd_fixtures / IGNORE)
    path = tmp_path / "coco.json"
    write_coco(frames, path)
    back, report = load_labels(path)
    for a, b in zip(frames, back, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.ignore, b.ignore)
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(path))
    assert len(api.getImgIds()) == 2 and len(api.getAnnIds()) == 2
    assert len(api.getAnnIds(iscrowd=True)) == 1
    assert json.loads(path.read_text())["type"] == "instances"


def test_predictions_to_results():
    pred = Frame("a.jpg", boxes=[[1, 2, 11, 22]], labels=[3], scores=[0.5])
    (res,) = predictions_to_coco_results([pred, Frame("b.jpg")], {"a.jpg": 7, "b.jpg": 8})
    assert res == {"image_id": 7, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}
    assert predictions_to_coco_results({"a.jpg": pred}, {"a.jpg": 1})[0]["image_id"] == 1
    with pytest.raises(ValueError, match="unknown image"):
        predictions_to_coco_results([pred], {"b.jpg": 1})
    with pytest.raises(ValueError, match="no scores"):
        predictions_to_coco_results([Frame("a.jpg", boxes=[[0, 0, 1, 1]], labels=[1])], {"a.jpg": 1})
