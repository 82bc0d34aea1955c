"""Label files as the annotation tools wrote them, without the tools running.

tests/fixtures/labelstudio/ holds what a real Label Studio (see
test_label_studio.py, which records them) exported after annotating alod's
tasks: copied predictions, a deleted, an added and a relabeled box, an image
annotated as empty and one skipped. tests/fixtures/cvat/cvat_coco_1.0.zip is a
CVAT "COCO 1.0" task export written by datumaro, CVAT's exporter (see
make_coco_export.py there); cvat_for_images_1.1.zip is the same task as "CVAT for
images 1.1" XML, written by datumaro's CVAT writer (make_xml_export.py). Variants of these files, edited the way users and
tools produce them, check every refusal names file, frame and field.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from alod import annotation_formats
from alod.annotation import LabelImportError, LabelStore, merge_labels
from alod.annotation_formats import (
    CVAT_COCO,
    CVAT_XML,
    LABEL_STUDIO_COCO,
    LABEL_STUDIO_JSON,
    LABEL_STUDIO_JSON_MIN,
    Archive,
    Reader,
    SelectedNames,
    ToolExport,
    read_export,
    register,
)
from alod.data import categories
from alod.data.bdd100k import load_document
from alod.data.frames import LabelError

FIXTURES = Path(__file__).parent / "fixtures"
LS = FIXTURES / "labelstudio"
CVAT_ZIP = FIXTURES / "cvat" / "cvat_coco_1.0.zip"
CVAT_XML_ZIP = FIXTURES / "cvat" / "cvat_for_images_1.1.zip"
EXPECTED = json.loads((LS / "expected.json").read_text())
SELECTED = EXPECTED["selected"]


def _rows(frame) -> list:
    return sorted((categories.ID_TO_NAME[int(c)], *b) for c, b in zip(frame.labels, frame.boxes.tolist()))


def assert_boxes(frames, expected: dict, tol: float = 0.01) -> None:
    got = {f.name: f for f in frames}
    assert sorted(got) == sorted(expected)
    for name, boxes in expected.items():
        rows, want = _rows(got[name]), sorted(tuple(b) for b in boxes)
        assert [r[0] for r in rows] == [w[0] for w in want], name
        if rows:
            assert np.abs(np.array([r[1:] for r in rows]) - np.array([w[1:] for w in want])).max() <= tol, name


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _zip(tmp_path: Path, name: str, members: dict[str, bytes | str]) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, content in members.items():
            zf.writestr(member, content)
    return path


# --- what Label Studio wrote --------------------------------------------------------------


def test_label_studio_json_export():
    found = read_export(LS / "export-json.json", SELECTED)
    assert found.format == LABEL_STUDIO_JSON
    assert_boxes(found.frames, EXPECTED["boxes"])
    assert [len(f) for f in found.frames if f.name == EXPECTED["empty"]] == [0]
    # skipped: no label, it stays missing; predictions (every task has 100) never count
    assert found.not_annotated == [EXPECTED["skipped"]] and found.cancelled == 1
    assert all(f.width and f.height for f in found.frames if len(f))


def test_label_studio_json_after_the_skipped_image_was_annotated():
    found = read_export(LS / "export-json-final.json", SELECTED)
    assert_boxes(found.frames, {**EXPECTED["boxes"], EXPECTED["skipped"]: EXPECTED["late_boxes"]})
    assert found.not_annotated == [] and found.cancelled == 1  # the skip is still in the file


def test_label_studio_json_min_export():
    """Before: read as frames without labels, every box lost without a word."""
    found = read_export(LS / "export-json_min.json", SELECTED)
    assert found.format == LABEL_STUDIO_JSON_MIN
    assert_boxes(found.frames, EXPECTED["boxes"])
    assert found.not_annotated == []  # Label Studio leaves skipped tasks out of JSON-MIN


@pytest.mark.parametrize("as_zip", [True, False])
def test_label_studio_coco_export_zip_and_result_json(tmp_path, as_zip):
    path = LS / "export-coco_zip.zip"
    if not as_zip:
        path = tmp_path / "result.json"
        path.write_bytes(zipfile.ZipFile(LS / "export-coco_zip.zip").read("result.json"))
    found = read_export(path, SELECTED)
    assert found.format == LABEL_STUDIO_COCO
    assert_boxes(found.frames, EXPECTED["boxes"])
    # local files serving: every file_name is ../<folder>/images/100k/train/<name>
    assert found.renamed and all(k.startswith("../") and k.endswith("/images/100k/train/" + v)
                                 for k, v in found.renamed.items())


def test_label_studio_coco_without_the_selection_stays_refused():
    with pytest.raises(LabelError, match=r"file_name.*ends in no selected image's name"):
        read_export(LS / "export-coco_zip.zip", ["some-other.jpg"])


def test_json_min_row_without_annotation_is_not_annotated(tmp_path):
    rows = json.loads((LS / "export-json_min.json").read_text())
    rows.append({"image": "/data/local-files/?d=x.jpg", "name": EXPECTED["skipped"], "id": 99,
                 "annotator": None, "annotation_id": None, "created_at": None, "updated_at": None,
                 "lead_time": None})  # what "export all tasks" writes for an unannotated task
    found = read_export(_write(tmp_path, "min.json", rows), SELECTED)
    assert found.not_annotated == [EXPECTED["skipped"]] and len(found.frames) == len(EXPECTED["boxes"])


# --- Label Studio files edited into what users send -----------------------------------------


def _tasks() -> list[dict]:
    return json.loads((LS / "export-json.json").read_text())


def _annotated(tasks: list[dict]) -> dict:
    return next(t for t in tasks if t["data"]["name"] != EXPECTED["empty"]
                and any(a["result"] for a in t["annotations"]))


def test_rotated_box_refused_naming_task_and_field(tmp_path):
    tasks = _tasks()
    task = _annotated(tasks)
    task["annotations"][0]["result"][1]["value"]["rotation"] = 12.5
    with pytest.raises(LabelError) as e:
        read_export(_write(tmp_path, "rot.json", tasks), SELECTED)
    msg = str(e.value)
    assert f"frame 'task {task['id']} ({task['data']['name']})'" in msg and "label 1" in msg
    assert "annotations[0].result[1].value.rotation" in msg and "rotated box (12.5 degrees)" in msg


def test_two_annotations_of_one_task(tmp_path):
    tasks = _tasks()
    task = _annotated(tasks)
    second = copy.deepcopy(task["annotations"][0])
    second["id"] = 777
    second["result"] = second["result"][:1]
    task["annotations"].append(second)
    with pytest.raises(LabelError, match=r"task \d+ .*2 annotations with different boxes \(annotation \d+, "
                                         r"annotation 777\)"):
        read_export(_write(tmp_path, "two.json", tasks), SELECTED)
    # the one marked ground truth wins
    second["ground_truth"] = True
    found = read_export(_write(tmp_path, "gt.json", tasks), SELECTED)
    (frame,) = [f for f in found.frames if f.name == task["data"]["name"]]
    assert len(frame) == 1
    # two identical annotations agree: no question to ask
    second["ground_truth"] = False
    second["result"] = task["annotations"][0]["result"]
    found = read_export(_write(tmp_path, "same.json", tasks), SELECTED)
    assert_boxes(found.frames, EXPECTED["boxes"])
    # a cancelled second annotation is no label
    second["result"], second["was_cancelled"] = [], True
    found = read_export(_write(tmp_path, "cancelled.json", tasks), SELECTED)
    assert_boxes(found.frames, EXPECTED["boxes"])
    assert found.cancelled == 2


def test_json_min_two_rows_of_one_task_disagreeing(tmp_path):
    rows = json.loads((LS / "export-json_min.json").read_text())
    row = next(r for r in rows if r.get("label"))
    other = copy.deepcopy(row)
    other["annotation_id"], other["label"] = 778, other["label"][:1]
    with pytest.raises(LabelError, match=r"2 annotations with different boxes .*annotation 778"):
        read_export(_write(tmp_path, "min.json", rows + [other]), SELECTED)


def test_tasks_without_names_predictions_only_and_other_shapes(tmp_path):
    tasks = _tasks()
    del tasks[0]["data"]["name"]
    with pytest.raises(LabelError, match=r"frame 'task \d+', field 'data.name'.*importing alod's label_studio.json"):
        read_export(_write(tmp_path, "noname.json", tasks), SELECTED)
    # alod's own export, sent back by mistake: predictions are never labels
    own = [{"data": t["data"], "predictions": [{"result": []}]} for t in _tasks()]
    with pytest.raises(LabelError, match="without any annotations.*predictions are never labels"):
        read_export(_write(tmp_path, "own.json", own), SELECTED)
    tasks = _tasks()
    result = _annotated(tasks)["annotations"][0]["result"]
    result[0] = {**result[0], "type": "polygonlabels", "value": {"points": [[1, 1], [2, 2], [1, 3]],
                                                                 "polygonlabels": ["car"]}}
    with pytest.raises(LabelError, match=r"result\[0\].type.*'polygonlabels' result is not a labeled box"):
        read_export(_write(tmp_path, "poly.json", tasks), SELECTED)
    tasks = _tasks()
    _annotated(tasks)["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["unicorn"]
    with pytest.raises(LabelError, match="unknown category 'unicorn'"):
        read_export(_write(tmp_path, "unicorn.json", tasks), SELECTED)


def test_task_imported_twice(tmp_path):
    tasks = _tasks()
    twin = copy.deepcopy(_annotated(tasks))
    twin["id"] = 4242
    with pytest.raises(LabelError, match=r"task 4242 .*is also task \d+.*imported twice"):
        read_export(_write(tmp_path, "twice.json", tasks + [twin]), SELECTED)


def test_coco_with_a_task_annotated_twice_explains_itself(tmp_path):
    doc = json.loads(zipfile.ZipFile(LS / "export-coco_zip.zip").read("result.json"))
    doc["images"].append({**doc["images"][0], "id": 99})
    with pytest.raises(LabelError, match=r"image ids 0, 99 are all this image: Label Studio writes one COCO image "
                                         r"per annotation, so a task annotated twice"):
        read_export(_zip(tmp_path, "twice.zip", {"result.json": json.dumps(doc)}), SELECTED)


def test_tool_file_names_onto_selected_images():
    names = SelectedNames(["a.jpg", "x/c.jpg", "y/c.jpg", "deep/er/d.jpg"])
    assert names.match("a.jpg") == "a.jpg"
    assert names.match("images/0af3c9d1__a.jpg") == "a.jpg"  # Label Studio upload / COCO_WITH_IMAGES
    assert names.match("../data/images/100k/train/a.jpg") == "a.jpg"  # local files
    assert names.match("../data/images/x/c.jpg") == "x/c.jpg"  # the path picks one of two c.jpg
    assert names.match("images/c.jpg") is None and len(names.candidates("images/c.jpg")) == 2
    assert names.match("er/d.jpg") == "deep/er/d.jpg"
    assert names.match("/abs/a.jpg") is None and names.match("C:\\x\\a.jpg") is None
    assert names.match("images/0af3c9d__a.jpg") is None  # 7 hex digits: not Label Studio's prefix
    assert names.match("b.jpg") is None


# --- CVAT ----------------------------------------------------------------------------------

CVAT_BOXES = {  # as make_coco_export.py drew them, with datumaro's rounding to 0.01
    "cvat-0001.jpg": [("car", 100.25, 200.5, 401.0, 350.62), ("pedestrian", 700.0, 310.5, 740.5, 400.75)],
    "cvat-0002.jpg": [("traffic light", 1001.5, 20.0, 1013.75, 50.75)],
    "sub/cvat-0003.jpg": [("truck", 0.0, 400.0, 500.5, 700.0), ("bus", 640.12, 300.0, 840.12, 420.5)],
}


def test_cvat_coco_zip():
    found = read_export(CVAT_ZIP, list(CVAT_BOXES) + ["cvat-0004.jpg"])
    assert found.format == CVAT_COCO
    assert_boxes(found.frames, CVAT_BOXES)
    assert found.not_annotated == ["cvat-0004.jpg"]  # listed by CVAT, never annotated: not "nothing there"
    assert {(f.width, f.height) for f in found.frames} == {(1280, 720)}


def test_cvat_frames_matched_onto_selected_paths():
    selected = ["images/100k/train/cvat-0001.jpg", "cvat-0002.jpg", "a/sub/cvat-0003.jpg", "cvat-0004.jpg"]
    found = read_export(CVAT_ZIP, selected)
    assert sorted(f.name for f in found.frames) == sorted(selected[:3])
    assert found.renamed == {"cvat-0001.jpg": selected[0], "sub/cvat-0003.jpg": selected[2]}


def test_cvat_rotated_box_refused(tmp_path):
    doc = json.loads(zipfile.ZipFile(CVAT_ZIP).read("annotations/instances_default.json"))
    doc["annotations"][2]["attributes"]["rotation"] = 30.0
    path = _zip(tmp_path, "rot.zip", {"annotations/instances_default.json": json.dumps(doc)})
    with pytest.raises(LabelError, match=r"instances_default.json, frame 'cvat-0002.jpg', label 2, field "
                                         r"'attributes.rotation': rotated box \(30 degrees\)"):
        read_export(path, list(CVAT_BOXES))
    # the JSON alone, unzipped, is still CVAT's (datumaro's signature), unannotated frames included
    plain = _write(tmp_path, "instances_default.json", json.loads(
        zipfile.ZipFile(CVAT_ZIP).read("annotations/instances_default.json")))
    assert read_export(plain, list(CVAT_BOXES)).not_annotated == ["cvat-0004.jpg"]


# --- CVAT for images 1.1 (XML) ----------------------------------------------------------


def _cvat_xml(images: str, head: str = '<?xml version="1.0" encoding="utf-8"?>') -> str:
    return f"{head}\n<annotations>\n  <version>1.1</version>\n{images}\n</annotations>\n"


def test_cvat_xml_zip_gives_the_labels_of_the_same_tasks_coco_export(tmp_path):
    selected = list(CVAT_BOXES) + ["cvat-0004.jpg"]
    found = read_export(CVAT_XML_ZIP, selected)
    assert found.format == CVAT_XML
    assert_boxes(found.frames, CVAT_BOXES)
    coco = {f.name: f for f in read_export(CVAT_ZIP, selected).frames}
    for frame in found.frames:  # CVAT's COCO writes [xtl, ytl, xbr-xtl, ybr-ytl]: the same boxes either way
        assert np.abs(frame.boxes - coco[frame.name].boxes).max() <= 0.01 and (frame.labels == coco[frame.name].labels).all()
    assert found.not_annotated == ["cvat-0004.jpg"]  # listed by CVAT, never annotated: stays missing
    # the polyline and the point of cvat-0001 are no boxes: counted and named, never silently dropped
    assert found.skipped_boxes == 2
    assert found.report.skipped == {"CVAT polyline (not a box)": 1, "CVAT points (not a box)": 1}
    # annotations.xml on its own, unzipped, reads the same
    plain = tmp_path / "annotations.xml"
    plain.write_bytes(zipfile.ZipFile(CVAT_XML_ZIP).read("annotations.xml"))
    again = read_export(plain, selected)
    assert again.format == CVAT_XML and [f.name for f in again.frames] == [f.name for f in found.frames]
    # and selected images in folders are matched by their names, as for the COCO export
    paths = ["images/100k/train/cvat-0001.jpg", "cvat-0002.jpg", "a/sub/cvat-0003.jpg", "cvat-0004.jpg"]
    assert read_export(CVAT_XML_ZIP, paths).renamed == {"cvat-0001.jpg": paths[0], "sub/cvat-0003.jpg": paths[2]}


def test_cvat_xml_polygons_masks_and_ellipses_count_as_their_bounding_box(tmp_path):
    # the attributes CVAT's dumper writes for each shape (cvat/apps/dataset_manager/formats/cvat.py)
    path = tmp_path / "annotations.xml"
    path.write_text(_cvat_xml(
        '  <image id="0" name="a.jpg" width="1280" height="720">\n'
        '    <polygon label="car" source="manual" occluded="1" points="10.00,20.00;50.00,25.00;30.00,60.00" z_order="0"/>\n'
        '    <mask label="bus" source="manual" occluded="0" rle="3, 4, 2" left="100" top="200" width="30" height="10" z_order="0"/>\n'
        '    <ellipse label="pedestrian" source="manual" occluded="0" cx="300.00" cy="400.00" rx="20.00" ry="50.00" z_order="0"/>\n'
        '    <tag label="car" source="manual"/>\n'
        '  </image>'))
    found = read_export(path, ["a.jpg"])
    assert_boxes(found.frames, {"a.jpg": [("car", 10, 20, 50, 60), ("bus", 100, 200, 130, 210),
                                          ("pedestrian", 280, 350, 320, 450)]})
    assert found.report.skipped == {"CVAT tag (not a box)": 1}


@pytest.mark.parametrize("images, message", [
    ('<image id="0" name="a.jpg" width="1280" height="720"><box label="car" xtl="1" ytl="2" xbr="30" ybr="40" '
     'rotation="15.00"/></image>', r"frame 'a.jpg', label 0, field 'rotation': rotated box \(15.00 degrees\)"),
    ('<image id="0" name="a.jpg" width="1280" height="720"><box label="car" xtl="1" ytl="2" xbr="30" ybr="40"/>'
     '<box label="car" xtl="abc" ytl="2" xbr="30" ybr="40"/></image>',
     r"frame 'a.jpg', label 1, field 'xtl': <box> needs a finite number, got 'abc'"),
    ('<image id="0" name="a.jpg" width="1280" height="720"><box label="car" xtl="50" ytl="2" xbr="10" ybr="40"/>'
     '</image>', r"frame 'a.jpg', label 0, field 'xbr': xbr 10 is below xtl 50: an inverted box"),
    ('<image id="0" name="a.jpg" width="1280" height="720"><box xtl="1" ytl="2" xbr="30" ybr="40"/></image>',
     r"frame 'a.jpg', label 0, field 'label': <box> without a label"),
    ('<image id="0" name="a.jpg" width="1280" height="720"><polygon label="car" points="1,2;3"/></image>',
     r"frame 'a.jpg', label 0, field 'points': <polygon> needs points"),
    ('<image id="0" name="a.jpg" width="wide" height="720"/>', r"frame 'a.jpg', field 'width'"),
    ('<image id="7" width="1280" height="720"/>', r"field 'name': missing"),
    ('<image id="0" name="a.jpg" width="1280" height="720"><box label="Sign" xtl="1" ytl="2" xbr="30" ybr="40"/>'
     '</image>', r"frame 'a.jpg', label 0, field 'category': unknown category 'Sign'"),
    ('<track id="0" label="car"><box frame="0" outside="0" xtl="1" ytl="2" xbr="3" ybr="4"/></track>',
     r"CVAT for video 1.1.*export the task as 'CVAT for images 1.1'"),
    ('<meta><task><size>0</size></task></meta>', r"no <image> in it"),
])
def test_cvat_xml_refusals_name_the_file_the_frame_and_the_field(tmp_path, images, message):
    path = tmp_path / "annotations.xml"
    path.write_text(_cvat_xml(images))
    with pytest.raises(LabelError, match=message) as e:
        read_export(path, ["a.jpg"])
    assert str(path) in str(e.value)


def test_cvat_xml_that_is_broken_or_declares_entities_is_refused_before_parsing(tmp_path):
    broken = _zip(tmp_path, "task.zip", {"annotations.xml": _cvat_xml('<image id="0" name="a.jpg"')})
    with pytest.raises(LabelError, match=r"task.zip!annotations.xml: invalid XML at line \d+, column \d+"):
        read_export(broken, ["a.jpg"])
    bomb = tmp_path / "annotations.xml"
    bomb.write_text('<?xml version="1.0"?>\n<!DOCTYPE annotations [<!ENTITY a "aaaaaaaaaa">'
                    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<annotations><image id="0" name="&b;" '
                    'width="1" height="1"/></annotations>')
    with pytest.raises(LabelError, match="DOCTYPE or ENTITY declaration: alod reads no DTD"):
        read_export(bomb, ["a.jpg"])


# --- formats alod does not read are named ---------------------------------------------------


@pytest.mark.parametrize("members, resembles", [
    ({"obj.names": "car\n", "obj_train_data/a.txt": "0 0.5 0.5 0.1 0.1\n"}, "YOLO 1.1"),
    ({"classes.txt": "car\n", "labels/a.txt": "0 0.5 0.5 0.1 0.1\n", "notes.json": "{}"}, "Label Studio YOLO"),
    ({"Annotations/a.xml": "<annotation/>", "ImageSets/Main/default.txt": "a\n"}, "Pascal VOC"),
    ({"annotations/default.json": "{}"}, "Datumaro"),
    ({"readme.txt": "hello"}, "does not know this zip's layout"),
])
def test_unknown_zips_are_refused_saying_what_they_resemble(tmp_path, members, resembles):
    with pytest.raises(LabelError, match=resembles):
        read_export(_zip(tmp_path, "export.zip", members), SELECTED)


@pytest.mark.parametrize("text, resembles", [
    ("image,id,label,annotator,annotation_id,created_at\nx.jpg,1,[],1,1,now\n", "Label Studio CSV / TSV"),
    ('<?xml version="1.0"?>\n<annotation><folder>VOC2012</folder></annotation>', "Pascal VOC"),
    ("<View><Image name='image' value='$image'/></View>", "labeling config, not labels"),
])
def test_unknown_text_files_are_refused_saying_what_they_resemble(tmp_path, text, resembles):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(LabelError, match=resembles):
        read_export(path, SELECTED)


def test_a_zip_is_read_in_memory_and_corrupt_members_are_named(tmp_path):
    path = _zip(tmp_path, "bad.zip", {"result.json": b"\xff\xfe not json"})
    with pytest.raises(LabelError, match=r"bad.zip!result.json: not UTF-8 text"):
        read_export(path, SELECTED)
    good = tmp_path / "copy.zip"
    good.write_bytes((LS / "export-coco_zip.zip").read_bytes())
    read_export(good, SELECTED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "copy.zip"]  # nothing extracted


def test_bdd_and_plain_coco_files_keep_their_path_checks(tmp_path):
    bdd = _write(tmp_path, "bdd.json", [{"name": "../a.jpg", "labels": []}])
    with pytest.raises(LabelError, match=r"frame '../a.jpg', field 'name': frame name escapes the image root"):
        read_export(bdd, ["a.jpg"])
    coco = _write(tmp_path, "coco.json", {"images": [{"id": 1, "file_name": "../x/a.jpg"}], "annotations": [],
                                          "categories": []})
    with pytest.raises(LabelError, match="escapes the image root"):
        read_export(coco, ["a.jpg"])


# --- the summary a user reads -------------------------------------------------------------


def test_merge_summary_counts_empty_and_not_annotated():
    found = read_export(LS / "export-json.json", SELECTED)
    requested = {n: 1 for n in SELECTED}
    report = merge_labels(LabelStore(), found.frames, requested)
    report.format, report.not_annotated, report.cancelled = found.format, found.not_annotated, found.cancelled
    text = report.summary()
    assert text.startswith("read as Label Studio JSON\n5 image(s) added")
    assert f"1 image(s) came back with no boxes (annotated as nothing there): {EXPECTED['empty']!r}" in text
    assert (f"1 image(s) in the file were not annotated (1 annotation(s) skipped in Label Studio): they stay "
            f"without labels, e.g. {EXPECTED['skipped']!r}") in text
    assert report.missing == {1: [EXPECTED["skipped"]]}


def test_conflict_hint_is_a_working_option():
    store = LabelStore()
    found = read_export(LS / "export-json.json", SELECTED)
    merge_labels(store, found.frames, {n: 1 for n in SELECTED})
    changed = [f for f in read_export(CVAT_ZIP, list(CVAT_BOXES)).frames][:1]
    changed[0].name = found.frames[0].name
    with pytest.raises(LabelImportError, match=r"pass --replace true to overwrite"):
        merge_labels(store, changed, {n: 1 for n in SELECTED})


def test_json_min_frames_go_through_the_same_checks(tmp_path):
    rows = json.loads((LS / "export-json_min.json").read_text())
    row = next(r for r in rows if r.get("label"))
    row["label"][0]["width"] = "wide"
    with pytest.raises(LabelError, match=r"field 'label\[0\].width': must be a finite number"):
        read_export(_write(tmp_path, "min.json", rows), SELECTED)



# --- the registry of formats ---------------------------------------------------------------

TOY = "Toy JSON"


def _toy_reader() -> Reader:
    """A made-up tool writing {"toy_boxes": {image: [[class, x1, y1, x2, y2], ...]}}, alone or zipped as toy.json."""

    def sniff(source) -> bool:
        if isinstance(source, Archive):
            return "toy.json" in source.names
        return isinstance(source.data, dict) and "toy_boxes" in source.data

    def parse(source, selected: SelectedNames) -> ToolExport:
        doc = source.document("toy.json") if isinstance(source, Archive) else source
        frames = [{"name": selected.match(name) or name,
                   "labels": [{"category": c, "box2d": dict(zip(("x1", "y1", "x2", "y2"), xyxy))} for c, *xyxy in rows]}
                  for name, rows in doc.data["toy_boxes"].items()]
        return ToolExport(frames=load_document(frames, doc.where)[0], format=TOY)

    return Reader(TOY, sniff, parse, zip_layout="toy.json")


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setattr(annotation_formats, "READERS", list(annotation_formats.READERS))
    return register(_toy_reader())


def test_a_registered_reader_is_sniffed_and_used(tmp_path, toy_registered):
    toy = {"toy_boxes": {"images/0af3c9d1__a.jpg": [["car", 10, 20, 30, 40]], "b.jpg": []}}
    for path in (_write(tmp_path, "toy-export.json", toy), _zip(tmp_path, "toy.zip", {"toy.json": json.dumps(toy)})):
        found = read_export(path, ["a.jpg", "b.jpg"])
        assert found.format == TOY
        assert {f.name: _rows(f) for f in found.frames} == {"a.jpg": [("car", 10.0, 20.0, 31.0, 41.0)], "b.jpg": []}
    # the formats registered before it keep their files
    assert read_export(LS / "export-json.json", SELECTED).format == LABEL_STUDIO_JSON
    assert read_export(CVAT_ZIP, list(CVAT_BOXES)).format == CVAT_COCO
    with pytest.raises(ValueError, match="registered already"):
        register(_toy_reader())


def test_the_refusal_of_an_unknown_format_names_every_registered_format(tmp_path, toy_registered):
    names = [r.name for r in annotation_formats.READERS]
    assert TOY in names and LABEL_STUDIO_JSON_MIN in names and CVAT_COCO in names
    with pytest.raises(LabelError) as e:
        read_export(_zip(tmp_path, "export.zip", {"readme.txt": "hello"}), SELECTED)
    message = str(e.value)
    assert all(name in message for name in names), message
    assert "a Toy JSON zip holds toy.json" in message and "a Label Studio COCO zip holds result.json" in message
    text = tmp_path / "labels.txt"
    text.write_text("<View><Image name='image' value='$image'/></View>")
    with pytest.raises(LabelError) as e:
        read_export(text, SELECTED)
    assert "labeling config, not labels" in str(e.value) and all(name in str(e.value) for name in names)


def test_the_import_summary_says_why_shapes_were_skipped():
    from alod.annotation import ImportReport

    found = read_export(CVAT_XML_ZIP, list(CVAT_BOXES) + ["cvat-0004.jpg"])
    text = ImportReport(skipped_boxes=found.skipped_boxes, skipped_reasons=dict(found.report.skipped)).summary()
    assert "2 box(es) or shape(s) skipped while loading (CVAT points (not a box): 1, CVAT polyline (not a box): 1)" \
        in text
