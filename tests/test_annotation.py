"""Export for annotators and the merge rules of imported labels: nothing lost, nothing replaced silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alod.annotation import (
    EXPORT_FILES,
    LabelImportError,
    LabelStore,
    empty_prefix_warning,
    export_batch,
    local_files_setup,
    merge_labels,
    same_labels,
)
from alod.data.bdd100k import load_labels
from alod.data.frames import Frame


def _frame(name: str, boxes=(), labels=(), ignore=None, scores=None) -> Frame:
    return Frame(name=name, boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=list(labels),
                 ignore=ignore, scores=scores)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (200, 100), (90, 90, 90)).save(root / name)
    return root


def test_export_writes_list_coco_and_label_studio_with_preannotations(images, tmp_path):
    pred = _frame("a.jpg", [[10, 20, 50, 60]], [3], scores=[0.9])
    paths = export_batch(["a.jpg", "b.jpg"], images, tmp_path / "out", predictions={"a.jpg": pred},
                         url_prefix="http://host/img/", model_version="run/cycle-1")
    assert paths["images"].read_text().split() == ["a.jpg", "b.jpg"]
    coco = json.loads(paths["coco"].read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [("a.jpg", 200, 100), ("b.jpg", 200, 100)]
    (ann,) = coco["annotations"]
    assert ann["bbox"] == [10, 20, 40, 40] and ann["category_id"] == 3 and ann["score"] == pytest.approx(0.9)
    tasks = json.loads(paths["label_studio"].read_text())
    assert [t["data"]["image"] for t in tasks] == ["http://host/img/a.jpg", "http://host/img/b.jpg"]
    (result,) = tasks[0]["predictions"][0]["result"]
    assert result["value"]["rectanglelabels"] == ["car"]
    assert [result["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([5, 20, 20, 40])
    assert "predictions" not in tasks[1]  # nothing predicted: an empty task, not an empty prediction
    assert 'name="label"' in paths["label_studio_config"].read_text()
    # what annotators send back as COCO loads as labels again (every frame kept, boxes round-trip)
    frames, _ = load_labels(paths["coco"])
    assert [f.name for f in frames] == ["a.jpg", "b.jpg"]
    assert frames[0].boxes.tolist() == [[10, 20, 50, 60]] and len(frames[1]) == 0


def test_same_labels_ignores_order_and_float_noise():
    a = _frame("x", [[0, 0, 10, 10], [5, 5, 20, 20]], [3, 1])
    b = _frame("x", [[5.2, 5, 20, 20], [0, 0, 10, 10.3]], [1, 3])
    assert same_labels(a, b)
    assert not same_labels(a, _frame("x", [[0, 0, 10, 10], [5, 5, 20, 20]], [3, 2]))
    assert not same_labels(a, _frame("x", [[0, 0, 10, 10], [5, 5, 25, 20]], [3, 1]))
    assert not same_labels(a, _frame("x", [[0, 0, 10, 10]], [3]))
    assert not same_labels(a, _frame("x", [[0, 0, 10, 10], [5, 5, 20, 20]], [3, 1], ignore=[False, True]))
    assert same_labels(_frame("e"), _frame("e"))


def test_partial_repeated_and_conflicting_imports():
    requested = {"a": 1, "b": 1, "c": 2}
    store = LabelStore()
    report = merge_labels(store, [_frame("a", [[0, 0, 9, 9]], [3])], requested)
    assert report.added == ["a"] and report.missing == {1: ["b"], 2: ["c"]}
    assert "cycle 1: 1 selected image(s) still without labels" in report.summary()

    # the same labels again (e.g. after a kill): nothing changes
    report = merge_labels(store, [_frame("a", [[0, 0, 9, 9]], [3]), _frame("b")], requested)
    assert report.identical == ["a"] and report.added == ["b"] and report.missing == {2: ["c"]}

    # a different label for an imported image is refused as a whole: b2 is not merged either
    with pytest.raises(LabelImportError, match=r"1 image\(s\).*different labels.*'a'.*nothing was imported"):
        merge_labels(store, [_frame("a", [[0, 0, 30, 30]], [3]), _frame("c")], requested)
    assert "c" not in store and store.frames["a"].boxes.tolist() == [[0, 0, 9, 9]]

    # images nobody selected are named and refused
    with pytest.raises(LabelImportError, match=r"never selected.*'zzz'"):
        merge_labels(store, [_frame("zzz"), _frame("c")], requested)
    assert "c" not in store

    report = merge_labels(store, [_frame("a", [[0, 0, 30, 30]], [3]), _frame("c")], requested, replace=True)
    assert report.replaced == ["a"] and report.added == ["c"] and report.missing == {}
    assert store.frames["a"].boxes.tolist() == [[0, 0, 30, 30]]


def test_exported_paths_match_selected_images_by_file_name():
    requested = {"a.jpg": 1, "sub/b.jpg": 1, "x/c.jpg": 1, "y/c.jpg": 1}
    store = LabelStore()
    report = merge_labels(store, [_frame("images/a.jpg"), _frame("export/b.jpg")], requested)
    assert report.renamed == {"images/a.jpg": "a.jpg", "export/b.jpg": "sub/b.jpg"}
    assert sorted(store.frames) == ["a.jpg", "sub/b.jpg"] and "matched to a selected image" in report.summary()
    with pytest.raises(LabelImportError, match="never selected.*'images/c.jpg'"):  # two selected c.jpg: ambiguous
        merge_labels(store, [_frame("images/c.jpg")], requested)
    with pytest.raises(LabelImportError, match="twice"):
        merge_labels(store, [_frame("images/a.jpg"), _frame("a.jpg")], requested)


def test_store_round_trips_ignore_regions_and_empty_frames(tmp_path):
    store = LabelStore([_frame("a", [[1, 2, 30, 40], [50, 50, 60, 70]], [3, 3], ignore=[False, True]), _frame("b")])
    back = LabelStore.load(store.save(tmp_path / "labels.json"))
    assert sorted(back.frames) == ["a", "b"]
    assert same_labels(back.frames["a"], store.frames["a"]) and len(back.frames["b"]) == 0


def test_task_urls_are_url_encoded_and_names_kept(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    names = ["a b.jpg", "c#1+%.jpg", "sub/ü.jpg"]
    (root / "sub").mkdir()
    for name in names:
        Image.new("RGB", (20, 10)).save(root / name)
    paths = export_batch(names, root, tmp_path / "out", url_prefix="/data/local-files/?d=images/")
    tasks = json.loads(paths["label_studio"].read_text())
    assert [t["data"]["image"] for t in tasks] == [
        "/data/local-files/?d=images/a%20b.jpg", "/data/local-files/?d=images/c%231%2B%25.jpg",
        "/data/local-files/?d=images/sub/%C3%BC.jpg"]
    assert [t["data"]["name"] for t in tasks] == names  # what import-labels matches on
    assert sorted(p.name for p in paths.values()) == sorted(EXPORT_FILES)


def test_local_files_setup_and_the_empty_prefix_warning(tmp_path):
    images = tmp_path / "bdd100k" / "images" / "100k" / "train"
    images.mkdir(parents=True)
    setup = local_files_setup(images, tmp_path / "bdd100k")
    assert setup == {"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                     "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path / "bdd100k"),
                     "storage_path": str(images), "url_prefix": "/data/local-files/?d=images/100k/train/"}
    # images outside the data root (explicit paths): their parent is the document root
    assert local_files_setup(images, tmp_path / "elsewhere")["url_prefix"] == "/data/local-files/?d=train/"
    warning = empty_prefix_warning(images, tmp_path / "bdd100k")
    assert warning.startswith("warning: annotation_url_prefix is empty")
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={tmp_path / 'bdd100k'}" in warning
    assert "--annotation-url-prefix '/data/local-files/?d=images/100k/train/'" in warning
