"""Labels as the official evaluator reads them: `load_labels(exact=True)` keeps every box as
written (no clipping, nothing dropped, float64), and `crowd`/`ignored` flags are read in
every spelling the toolkit takes, while values it would read by accident are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alod.data.bdd100k import load_labels
from alod.data.frames import LabelError
from alod.data.splits import load_split


def _write(tmp_path, frames, name="labels.json"):
    path = tmp_path / name
    path.write_text(json.dumps(frames))
    return path


def _car(x1, y1, x2, y2, **extra):
    return {"category": "car", "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, **extra}


FRAMES = [{"name": "a.jpg", "size": {"width": 100, "height": 50}, "labels": [
    _car(90.25, 40.5, 130.125, 60.0),  # crosses the border
    _car(120.0, 10.0, 140.0, 20.0),  # wholly outside
    _car(10.123456789012, 10.0, 20.987654321098, 20.0, score=0.300000001),
    _car(30.0, 30.0, 30.0, 30.0, score=0.3),  # one pixel
]}]


def test_exact_keeps_every_box_as_written_in_float64(tmp_path):
    frames = json.loads(json.dumps(FRAMES))
    for lab in frames[0]["labels"]:
        lab.setdefault("score", 0.5)
    path = _write(tmp_path, frames)
    clipped, report = load_labels(path)
    assert len(clipped[0]) == 3 and report.clipped == 1  # training: clipped, the outside box dropped
    exact, report = load_labels(path, exact=True)
    frame = exact[0]
    assert frame.boxes.dtype == np.float64 and frame.scores.dtype == np.float64
    assert frame.boxes.tolist() == [[90.25, 40.5, 131.125, 61.0], [120.0, 10.0, 141.0, 21.0],
                                    [10.123456789012, 10.0, 21.987654321098, 21.0], [30.0, 30.0, 31.0, 31.0]]
    # scores that float32 would merge stay apart (their order decides tied ranks)
    assert frame.scores[2] != frame.scores[3]
    assert report.clipped == 0 and not report.skipped


def test_load_split_is_exact_for_evaluation_splits_only(tmp_path):
    labels = tmp_path / "labels" / "det_20"
    labels.mkdir(parents=True)
    for split in ("train", "val"):
        (tmp_path / "images" / "100k" / split).mkdir(parents=True)
        _write(labels, [{"name": "a.jpg", "size": {"width": 100, "height": 50},
                         "labels": [_car(90.0, 40.0, 130.0, 60.0)]}], f"det_{split}.json")
    assert load_split(tmp_path, "train").frames[0].boxes.tolist() == [[90.0, 40.0, 100.0, 50.0]]
    assert load_split(tmp_path, "val").frames[0].boxes.tolist() == [[90.0, 40.0, 131.0, 61.0]]
    assert load_split(tmp_path, "val", exact=False).frames[0].boxes.tolist() == [[90.0, 40.0, 100.0, 50.0]]


@pytest.mark.parametrize("value,ignored", [
    (True, True), (False, False), (1, True), (0, False), (1.0, True), ("true", True), ("True", True),
    ("yes", True), ("on", True), ("1", True), ("t", True), ("false", False), ("no", False), ("off", False),
    ("0", False), (None, False),
])
@pytest.mark.parametrize("key", ["crowd", "ignored"])
def test_flags_read_as_the_official_toolkit_reads_them(tmp_path, key, value, ignored):
    path = _write(tmp_path, [{"name": "a.jpg", "labels": [_car(1, 1, 9, 9, attributes={key: value})]}])
    frames, _ = load_labels(path)
    assert frames[0].ignore.tolist() == [ignored]


@pytest.mark.parametrize("value", [0.5, 2, "maybe", "", [True], {"x": 1}])
def test_flag_values_the_toolkit_reads_by_accident_are_refused(tmp_path, value):
    path = _write(tmp_path, [{"name": "a.jpg", "labels": [_car(1, 1, 9, 9, attributes={"crowd": value})]}])
    with pytest.raises(LabelError, match=r"attributes\.crowd.*must be true or false"):
        load_labels(path)
