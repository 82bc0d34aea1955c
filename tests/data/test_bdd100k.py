"""Reading, validating and writing BDD100K labels, on the real fixtures and on bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from alod.data.bdd100k import (
    MISSING_IMAGE,
    NO_BOX2D,
    OUTSIDE_IMAGE,
    check_labels,
    dataset_digest,
    load_labels,
    resolve_image_path,
    save_frames,
    split_paths,
)
from alod.data.frames import Frame, LabelError

UNITEST = [
    "bdd100k__unitest_val_bdd__rawexport_33ddd27.json",
    "bdd100k__unitest_val_bdd__cleaned_ca5618b.json",
]
OPENMT = "vis4d__openmt_detect_annotation__train_12305469.json"
VIST_DUMP = "vis4d__vist_detect_annotation__scalabel_dataset_dump__train_12305469.json"
VIST_COCO = "vis4d__vist_detect_annotation_coco__legacy_bdd100k2coco__train_12305469.json"
MIXED = "vis4d__pl_detect_labels_annotation__det20_plus_insseg__train_913b47b8.json"
IGNORE = "bdd100k__example_ignore_annotation__boxtrack_otherperson.json"
SCALABEL_DET = "scalabel__scalabel_det__val_b1c66a42.json"


def write(tmp_path: Path, content, name: str = "labels.json") -> Path:
    path = tmp_path / name
    if isinstance(content, (bytes, str)):
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    else:
        path.write_text(json.dumps(content))
    return path


def frame(name="a.jpg", labels=None, **extra):
    return {"name": name, "labels": labels if labels is not None else [], **extra}


def car(x1=10, y1=20, x2=30, y2=40, **extra):
    return {"category": "car", "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, **extra}


def problems(path, **kw):
    _, report = check_labels(path, **kw)
    return report.problems


# --- real fixtures ---------------------------------------------------------------


def test_every_fixture_loads(bdd_fixtures):
    files = sorted(bdd_fixtures.glob("*.json"))
    assert len(files) == 8
    for f in files:
        frames, report = load_labels(f)
        assert report.ok and frames, f.name
        assert report.frames == len(frames)
        assert report.boxes == sum(fr.num_trainable for fr in frames)


@pytest.mark.parametrize("name", UNITEST)
def test_unitest_val_counts(bdd_fixtures, name):
    frames, report = load_labels(bdd_fixtures / name)
    assert [f.name for f in frames] == ["b1c66a42-6f7d68ca.jpg"]
    assert report.boxes_per_category == Counter(
        {"car": 19, "traffic light": 7, "traffic sign": 6, "rider": 1, "motorcycle": 1}
    )
    assert not report.skipped and not report.ignored_per_category and not report.warnings
    f = frames[0]
    assert f.boxes.dtype == np.float32 and f.labels.dtype == np.int64 and f.scores is None
    # First label: box2d x1 1000.698742, y1 281.992415, x2 1040.626872, y2 326.91156 (inclusive).
    np.testing.assert_allclose(f.boxes[0], [1000.698742, 281.992415, 1041.626872, 327.91156], rtol=1e-6)
    assert f.labels[0] == 10
    assert f.attributes == {} or "weather" in f.attributes


def test_raw_export_equals_cleaned(bdd_fixtures):
    (a,), _ = load_labels(bdd_fixtures / UNITEST[0])
    (b,), _ = load_labels(bdd_fixtures / UNITEST[1])
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_scalabel_det_is_first_four_of_unitest(bdd_fixtures):
    (small,), report = load_labels(bdd_fixtures / SCALABEL_DET)
    (full,), _ = load_labels(bdd_fixtures / UNITEST[1])
    assert report.boxes_per_category == Counter({"traffic sign": 4})
    np.testing.assert_array_equal(small.boxes, full.boxes[:4])
    assert small.attributes == {"weather": "overcast", "timeofday": "daytime", "scene": "city street"}


def test_openmt_and_scalabel_dump_agree(bdd_fixtures):
    (a,), report = load_labels(bdd_fixtures / OPENMT)
    (b,), _ = load_labels(bdd_fixtures / VIST_DUMP)
    assert report.boxes_per_category == Counter({"traffic light": 3, "traffic sign": 4, "car": 2, "bus": 1})
    assert a.name == b.name == "12305469-7a4947e7.jpg"
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_ignore_fixture(bdd_fixtures):
    frames, report = load_labels(bdd_fixtures / IGNORE)
    assert [len(f) for f in frames] == [2, 0]  # second frame has "labels": null
    first = frames[0]
    assert first.labels.tolist() == [1, 1]  # other person and person -> pedestrian
    assert first.ignore.tolist() == [True, False]
    assert first.num_trainable == 1
    assert report.ignored_per_category == Counter({"other person": 1})
    assert report.boxes_per_category == Counter({"pedestrian": 1})
    assert frames[1].boxes.shape == (0, 4)


def test_mixed_det20_insseg(bdd_fixtures):
    # Every label of this file has box2d, the 4 instance-segmentation cars as well
    # (they also carry poly2d), so nothing is skipped.
    raw = json.loads((bdd_fixtures / MIXED).read_text())
    no_box = sum(1 for lab in raw[0]["labels"] if not lab.get("box2d"))
    assert no_box == 0
    (f,), report = load_labels(bdd_fixtures / MIXED)
    assert report.skipped[NO_BOX2D] == 0
    assert report.boxes_per_category == Counter({"traffic light": 5, "traffic sign": 1, "car": 4})
    assert len(f) == len(raw[0]["labels"]) == 10


def test_coco_legacy_matches_scalabel_within_plus_one(bdd_fixtures):
    (coco,), report = load_labels(bdd_fixtures / VIST_COCO)
    (scal,), _ = load_labels(bdd_fixtures / OPENMT)
    assert coco.name == scal.name
    assert (coco.width, coco.height) == (1280, 720)
    np.testing.assert_array_equal(coco.labels, scal.labels)
    np.testing.assert_allclose(coco.boxes[:, :2], scal.boxes[:, :2], atol=1e-4)
    # The legacy converter wrote w = x2 - x1 (no +1): its boxes are one pixel short.
    np.testing.assert_allclose(scal.boxes[:, 2:] - coco.boxes[:, 2:], 1.0, atol=1e-4)
    assert report.boxes_per_category == Counter({"traffic light": 3, "traffic sign": 4, "car": 2, "bus": 1})


# --- shapes --------------------------------------------------------------------


def test_labels_missing_or_null_are_empty_frames(tmp_path):
    path = write(tmp_path, [{"name": "a.jpg"}, {"name": "b.jpg", "labels": None}, frame("c.jpg", [car()])])
    frames, report = load_labels(path)
    assert [len(f) for f in frames] == [0, 0, 1]
    assert report.frames == 3


def test_scalabel_dump_shape(tmp_path):
    path = write(tmp_path, {"frames": [frame("a.jpg", [car()])], "groups": None, "config": None})
    (f,), _ = load_labels(path)
    np.testing.assert_array_equal(f.boxes, [[10, 20, 31, 41]])
    assert f.labels.tolist() == [3]


def test_labels_without_box2d_are_skipped(tmp_path):
    labels = [
        {"category": "lane", "poly2d": [{"vertices": [[0, 0], [1, 1]]}]},
        {"category": "drivable area", "poly2d": [], "box2d": None},
        car(),
    ]
    (f,), report = load_labels(write(tmp_path, [frame("a.jpg", labels)]))
    assert len(f) == 1
    assert report.skipped[NO_BOX2D] == 2


def test_2018_per_image_folder(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    for stem, objs in [("img1", [car(category="person"), car(category="motor")]), ("img2", [])]:
        objs = objs + [{"category": "lane/single white", "poly2d": [[0, 0, "L"]]}]
        (folder / f"{stem}.json").write_text(
            json.dumps({"name": stem, "attributes": {"weather": "clear"}, "frames": [{"timestamp": 10000, "objects": objs}]})
        )
    frames, report = load_labels(folder)
    assert [f.name for f in frames] == ["img1.jpg", "img2.jpg"]
    assert frames[0].labels.tolist() == [1, 7]
    assert frames[0].attributes == {"weather": "clear"}
    assert report.skipped[NO_BOX2D] == 2
    assert len(report.files) == 2


def test_coco_shape_with_crowd_and_empty_image(tmp_path):
    coco = {
        "images": [
            {"id": 5, "file_name": "a.jpg", "width": 100, "height": 50},
            {"id": 6, "file_name": "b.jpg", "width": 100, "height": 50},
        ],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 3, "bbox": [10, 10, 20, 5], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 1, "bbox": [90, 40, 30, 30], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "pedestrian"}],
    }
    frames, report = load_labels(write(tmp_path, coco))
    a, b = frames
    np.testing.assert_array_equal(a.boxes, [[10, 10, 30, 15], [90, 40, 100, 50]])  # clipped to 100x50
    assert a.ignore.tolist() == [False, True]
    assert len(b) == 0 and (b.width, b.height) == (100, 50)
    assert report.ignored_per_category == Counter({"pedestrian": 1})


# --- clipping and skips ----------------------------------------------------------


def test_clip_and_zero_area(tmp_path):
    labels = [car(-5, -5, 2000, 800), car(1300, 10, 1310, 20), car(5, 5, 5, 5)]
    (f,), report = load_labels(write(tmp_path, [frame("a.jpg", labels)]), image_size=(1280, 720))
    # x1 == x2 inclusive is a one-pixel box, kept; the box right of the image is dropped.
    np.testing.assert_array_equal(f.boxes, [[0, 0, 1280, 720], [5, 5, 6, 6]])
    assert (f.width, f.height) == (1280, 720)
    assert report.skipped[OUTSIDE_IMAGE] == 1 and report.clipped == 1
    (w,) = report.warnings  # the clipped box kept 57 % of its area: no warning
    assert (w.frame, w.label_index) == ("a.jpg", 1) and OUTSIDE_IMAGE in w.message


def test_no_clipping_without_size(tmp_path):
    (f,), _ = load_labels(write(tmp_path, [frame("a.jpg", [car(1300, 10, 1310, 20)])]))
    np.testing.assert_array_equal(f.boxes, [[1300, 10, 1311, 21]])
    assert f.width is None


def test_skip_unknown(tmp_path):
    labels = [car(category="dog"), car(category="dog"), car()]
    (f,), report = load_labels(write(tmp_path, [frame("a.jpg", labels)]), skip_unknown=True)
    assert len(f) == 1
    assert report.skipped["unknown category 'dog'"] == 2
    assert report.warnings and "dog" in report.warnings[0].message


# --- malformed input -------------------------------------------------------------


def test_truncated_json(tmp_path):
    path = write(tmp_path, '[{"name": "a.jpg",\n "labels": [')
    (p,) = problems(path)
    assert "invalid JSON at line 2" in p.message and p.file == str(path)
    with pytest.raises(LabelError) as exc:
        load_labels(path)
    assert exc.value.problems == [p]


def test_not_utf8(tmp_path):
    (p,) = problems(write(tmp_path, b'[{"name": "\xff.jpg"}]'))
    assert "not UTF-8" in p.message


@pytest.mark.parametrize("content", ['"hello"', "42", '{"foo": []}', "null"])
def test_wrong_top_level_type(tmp_path, content):
    (p,) = problems(write(tmp_path, content))
    assert "wrong top-level type" in p.message


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", '"12"', "null", "true"])
def test_non_finite_or_non_number_coordinate(tmp_path, value):
    text = '[{"name": "a.jpg", "labels": [{"category": "car", "box2d": {"x1": 1, "y1": 2, "x2": %s, "y2": 4}}]}]'
    (p,) = problems(write(tmp_path, text % value))
    assert (p.frame, p.label_index, p.field) == ("a.jpg", 0, "box2d.x2")
    assert "finite number" in p.message


def test_missing_coordinate(tmp_path):
    label = {"category": "car", "box2d": {"x1": 1, "y1": 2, "x2": 3}}
    (p,) = problems(write(tmp_path, [frame("a.jpg", [car(), label])]))
    assert (p.frame, p.label_index, p.field) == ("a.jpg", 1, "box2d.y2")
    assert "missing" in p.message


def test_inverted_box_is_a_problem(tmp_path):
    (p, q) = problems(write(tmp_path, [frame("a.jpg", [car(x1=30, x2=10), car(y1=40, y2=20)])]))
    assert (p.label_index, p.field) == (0, "box2d.x2") and "inverted" in p.message
    assert (q.label_index, q.field) == (1, "box2d.y2")


def test_unknown_categories_listed_by_name(tmp_path):
    frames = [
        frame("a.jpg", [car(), car(category="dog"), car(category="cat")]),
        frame("b.jpg", [car(category="dog")]),
    ]
    probs = problems(write(tmp_path, frames))
    by_name = {p.message.split("'")[1]: p for p in probs}
    assert set(by_name) == {"dog", "cat"}
    dog = by_name["dog"]
    assert (dog.frame, dog.label_index, dog.field) == ("a.jpg", 1, "category")
    assert "2 label(s)" in dog.message and "1 label(s)" in by_name["cat"].message


def test_duplicate_names_name_both(tmp_path):
    (p,) = problems(write(tmp_path, [frame("a.jpg"), frame("b.jpg"), frame("a.jpg")]))
    assert p.field == "name" and "frame #0" in p.message and "frame #2" in p.message


@pytest.mark.parametrize("name", ["../escape.jpg", "/abs.jpg", "sub/../../x.jpg", "C:\\x.jpg"])
def test_unsafe_frame_names(tmp_path, name):
    (p,) = problems(write(tmp_path, [frame(name)]))
    assert p.field == "name" and ("absolute" in p.message or ".." in p.message)


@pytest.mark.parametrize("bad", [{"labels": []}, {"name": 3}, {"name": ""}])
def test_frame_without_string_name(tmp_path, bad):
    (p,) = problems(write(tmp_path, [frame("ok.jpg"), bad]))
    assert (p.frame, p.field) == ("#1", "name")


def test_all_problems_in_one_pass(tmp_path):
    frames = [
        frame("a.jpg", [car(x1="1"), car(x1=9, x2=1), car(category="dog"), "not a label"]),
        frame("../b.jpg", [car(y2=float("nan"))]),
        frame("a.jpg"),
        {"labels": [car()]},
    ]
    probs = problems(write(tmp_path, json.dumps(frames)))
    # x1 string, inverted, unknown 'dog', non-object label, '..' name, NaN, duplicate, no name
    assert len(probs) == 8, "\n".join(map(str, probs))
    with pytest.raises(LabelError, match="8 problem"):
        load_labels(tmp_path / "labels.json")


def test_missing_path(tmp_path):
    (p,) = problems(tmp_path / "nope.json")
    assert "no such file" in p.message


# --- images ----------------------------------------------------------------------


def _image(path: Path, size=(100, 50)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def test_check_with_images(tmp_path):
    images = tmp_path / "images"
    _image(images / "a.jpg", (100, 50))
    labels = write(tmp_path, [frame("a.jpg", [car(90, 40, 200, 200)]), frame("missing.jpg")])
    frames, report = check_labels(labels, images=images, image_size=(1280, 720))
    (p,) = report.problems
    assert (p.frame, p.field) == ("missing.jpg", "name") and p.message.startswith(MISSING_IMAGE)
    a = frames[0]
    assert (a.width, a.height) == (100, 50)  # the header wins over image_size
    np.testing.assert_array_equal(a.boxes, [[90, 40, 100, 50]])


def test_resolve_image_path(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    assert resolve_image_path(root, "a/b.jpg") == root / "a" / "b.jpg"
    for bad in ["/etc/passwd", "../x.jpg", "a/../../x.jpg"]:
        with pytest.raises(ValueError, match="frame name"):
            resolve_image_path(root, bad)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="outside the image root"):
        resolve_image_path(root, "link/x.jpg")


# --- writing ---------------------------------------------------------------------


def test_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (6, 2))
    wh = rng.uniform(1, 200, (6, 2))
    frames = [
        Frame(
            "a.jpg",
            boxes=np.hstack([xy, xy + wh]),
            labels=rng.integers(1, 11, 6),
            ignore=[False, True, False, False, True, False],
            width=1280,
            height=720,
            attributes={"weather": "clear"},
        ),
        Frame("b.jpg"),
    ]
    path = tmp_path / "out" / "det.json"
    save_frames(frames, path)
    loaded, report = load_labels(path)
    assert report.ok and not report.warnings
    for want, got in zip(frames, loaded, strict=True):
        assert got.name == want.name
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.ignore, want.ignore)
        assert got.scores is None
        assert (got.width, got.height, got.attributes) == (want.width, want.height, want.attributes)
    assert not list(path.parent.glob(".*tmp"))  # no temp file left behind


def test_round_trip_predictions_with_scores(tmp_path):
    # A predicted box may be narrower than a pixel: inclusive x2 < x1 must still load.
    pred = Frame("a.jpg", boxes=[[10.0, 10.0, 10.5, 30.0], [1, 2, 50, 60]], labels=[3, 1], scores=[0.9, 0.25])
    path = tmp_path / "pred.json"
    save_frames([pred, Frame("b.jpg", scores=np.zeros(0))], path, scores=True)
    doc = json.loads(path.read_text())
    assert set(doc[0]["labels"][0]) >= {"category", "score", "box2d"}
    (a, b), _ = load_labels(path)
    np.testing.assert_array_equal(a.boxes, pred.boxes)
    np.testing.assert_array_equal(a.scores, pred.scores)
    assert b.scores is not None and len(b.scores) == 0


def test_missing_score_in_prediction_file(tmp_path):
    labels = [car(score=0.5), car()]
    (p,) = problems(write(tmp_path, [frame("a.jpg", labels)]))
    assert (p.label_index, p.field) == (1, "score")


def test_save_without_scores_refuses_scoreless_predictions(tmp_path):
    with pytest.raises(ValueError, match="no scores"):
        save_frames([Frame("a.jpg", boxes=[[0, 0, 1, 1]], labels=[1])], tmp_path / "p.json", scores=True)


# --- layout and digest -----------------------------------------------------------


def test_split_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="det_val.json"):
        split_paths(tmp_path, "val")
    legacy = tmp_path / "labels" / "bdd100k_labels_images_val.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("[]")
    with pytest.raises(FileNotFoundError, match="images"):
        split_paths(tmp_path, "val")
    (tmp_path / "images" / "100k" / "val").mkdir(parents=True)
    assert split_paths(tmp_path, "val") == (legacy, tmp_path / "images" / "100k" / "val")
    det = tmp_path / "labels" / "det_20" / "det_val.json"
    det.parent.mkdir()
    det.write_text("[]")
    assert split_paths(tmp_path, "val")[0] == det  # det_20 preferred


def test_dataset_digest(tmp_path, bdd_fixtures):
    a = bdd_fixtures / UNITEST[0]
    b = bdd_fixtures / UNITEST[1]
    d = dataset_digest([a, b])
    assert len(d) == 12 and d == dataset_digest([str(a), str(b)])
    assert d != dataset_digest([b, a]) != dataset_digest(a)
    copy = tmp_path / "x.json"
    copy.write_bytes(a.read_bytes())
    assert dataset_digest(copy) == dataset_digest(a)
