"""COCO mAP on hand-made cases and on the real fixtures; both backends agree."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alod.data.bdd100k import load_labels
from alod.data.frames import Frame
from alod.engine.evaluate import EvalResult, evaluate

UNITEST = "bdd100k__unitest_val_bdd__cleaned_ca5618b.json"
CAR, PED = 3, 1


def gt(name, boxes, labels, ignore=None):
    return Frame(name, boxes=boxes, labels=labels, ignore=ignore)


def pred(name, boxes, labels, scores):
    return Frame(name, boxes=boxes, labels=labels, scores=scores)


def perfect(frames):
    return [pred(f.name, f.boxes[~f.ignore], f.labels[~f.ignore], np.ones(f.num_trainable)) for f in frames]


@pytest.fixture(scope="module")
def fixture_frames(bdd_fixtures):
    return load_labels(bdd_fixtures / UNITEST)[0]


def test_perfect_predictions(fixture_frames):
    r = evaluate(fixture_frames, perfect(fixture_frames))
    assert r.mAP50 == 1.0 and r.mAP50_95 == 1.0
    assert r.ap50_per_class["car"] == 1.0
    assert math.isnan(r.ap50_per_class["pedestrian"])  # no GT pedestrian
    assert (r.num_images, r.num_predictions) == (1, 34)


def test_empty_predictions(fixture_frames):
    for preds in ([], {}, [Frame(fixture_frames[0].name)]):
        r = evaluate(fixture_frames, preds)
        assert r.mAP50 == 0.0 and r.mAP50_95 == 0.0 and r.num_predictions == 0
        assert r.ap50_per_class["car"] == 0.0 and math.isnan(r.ap50_per_class["bus"])


def test_crowd_region_detections_are_not_false_positives():
    box = [[10, 10, 50, 50]]
    frames = [gt("a.jpg", box, [CAR]), gt("crowd.jpg", [[100, 100, 300, 300]], [CAR], [True])]
    good = pred("a.jpg", box, [CAR], [0.5])
    # A more confident detection inside the crowd region: ignored, so AP stays 1.
    inside = pred("crowd.jpg", [[120, 120, 200, 200]], [CAR], [0.9])
    assert evaluate(frames, [good, inside]).mAP50 == pytest.approx(1.0)
    # The same detection outside the region is a false positive ranked first.
    outside = pred("crowd.jpg", [[400, 400, 450, 450]], [CAR], [0.9])
    assert evaluate(frames, [good, outside]).mAP50 < 1.0


def test_missing_class_counts_zero_and_mean():
    frames = [gt("a.jpg", [[10, 10, 50, 50], [60, 60, 90, 120]], [CAR, PED])]
    r = evaluate(frames, [pred("a.jpg", [[10, 10, 50, 50]], [CAR], [0.8])])
    assert r.ap50_per_class["car"] == pytest.approx(1.0) and r.ap50_per_class["pedestrian"] == 0.0
    assert r.mAP50 == pytest.approx(0.5)
    assert r.as_metrics()["AP50.pedestrian"] == 0.0


def test_image_without_predictions_counts_as_misses():
    box = [[10, 10, 50, 50]]
    frames = [gt("a.jpg", box, [CAR]), gt("b.jpg", box, [CAR])]
    r = evaluate(frames, {"a.jpg": pred("a.jpg", box, [CAR], [0.7])})
    assert r.num_images == 2
    assert r.mAP50 == pytest.approx(0.5, abs=0.01)  # recall stops at 0.5


def test_no_ground_truth_boxes_is_nan():
    frames = [gt("a.jpg", [[0, 0, 10, 10]], [CAR], [True]), Frame("b.jpg")]
    r = evaluate(frames, [pred("b.jpg", [[0, 0, 5, 5]], [CAR], [0.9])])
    assert math.isnan(r.mAP50) and math.isnan(r.mAP50_95)
    assert all(math.isnan(v) for v in r.ap50_per_class.values())


def test_bad_predictions_raise():
    frames = [gt("a.jpg", [[0, 0, 10, 10]], [CAR])]
    with pytest.raises(ValueError, match="unknown image"):
        evaluate(frames, [pred("zzz.jpg", [[0, 0, 5, 5]], [CAR], [0.9])])
    with pytest.raises(ValueError, match="backend"):
        evaluate(frames, [], backend="nope")
    with pytest.raises(ValueError, match="more than once"):
        evaluate(frames, [Frame("a.jpg"), Frame("a.jpg")])


def test_as_table(fixture_frames):
    table = evaluate(fixture_frames, perfect(fixture_frames)).as_table()
    assert "traffic light" in table and "mAP50" in table and "n/a" in table
    assert isinstance(EvalResult(0.0, 0.0).as_table(), str)


def _noisy(frames, seed):
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        n = len(f) + 5
        boxes = np.concatenate([f.boxes, rng.uniform(0, 600, (5, 4))])
        boxes = boxes + rng.normal(0, 4, boxes.shape)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.random(n) < 0.8, np.concatenate([f.labels, rng.integers(1, 11, 5)]), rng.integers(1, 11, n))
        out.append(pred(f.name, boxes, labels, rng.random(n)))
    return out


def test_faster_coco_eval_equals_pycocotools(bdd_fixtures):
    pytest.importorskip("faster_coco_eval")
    frames = []
    for name in ["bdd100k__example_ignore_annotation__boxtrack_otherperson.json", UNITEST,
                 "vis4d__openmt_detect_annotation__train_12305469.json"]:
        frames += load_labels(bdd_fixtures / name)[0]
    for seed in range(3):
        preds = _noisy(frames, seed)
        a = evaluate(frames, preds, backend="pycocotools")
        b = evaluate(frames, preds, backend="faster_coco_eval")
        assert 0 < a.mAP50 < 1
        for key, va in a.as_metrics().items():
            vb = b.as_metrics()[key]
            assert (math.isnan(va) and math.isnan(vb)) or abs(va - vb) <= 1e-9, key
