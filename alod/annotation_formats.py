"""Label files as annotation tools write them: Label Studio (JSON, JSON-MIN, COCO) and CVAT (COCO 1.0, CVAT for
images 1.1).

`read_export` looks at the content (never the file name) and returns the
labels of the images that were annotated, plus the images the file lists but
nobody annotated: those stay missing, they never become "nothing there".

Each format is a registered `Reader` (a name, a `sniff` of a parsed JSON
`Document` or of a zip's `Archive`, a `parse`): `read_export` hands the file,
or the zip, to the first reader whose sniff says yes; another format is one
`register(Reader(...))` line at the bottom of this module. The formats alod
recognises only to refuse them by name are rows of the `_*_LOOKALIKES` tables.

- **Label Studio JSON** (tasks with `annotations`): the image is the task's
  `data.name` (alod puts it there when it exports tasks); boxes are the
  `rectanglelabels` results, percentages times `original_width` /
  `original_height`. `predictions` are never labels. A cancelled (skipped)
  annotation is no label. Two live annotations of one task: the one marked
  ground truth wins; if none or several are, they must agree, otherwise the
  task is refused by id. A rotated box is refused.
- **Label Studio JSON-MIN**: one row per live annotation (Label Studio leaves
  cancelled ones out); a row without `annotation_id` is a task nobody
  annotated. The same rules for boxes and for several rows of one task.
- **Label Studio COCO** (the downloaded zip holding `result.json`, or that
  file): one image per annotation, so a task annotated twice appears as two
  images with the same `file_name` and is refused with a hint. Label Studio
  writes `file_name` as `images/<8 hex>__<name>` or, for local files, as a
  relative path like `../<folder>/images/100k/train/<name>`: a file name that
  ends in exactly one selected image's name is that image (see
  `match_selected`); anything else stays refused, with the usual path checks.
- **CVAT COCO 1.0** (the downloaded zip, `annotations/instances_<subset>.json`
  as written by datumaro): every frame of the task is listed; frames without
  annotations are not annotated (CVAT cannot say "nothing there" in COCO). A
  box with a `rotation` attribute other than 0 is refused.
- **CVAT for images 1.1** (XML, `annotations.xml` alone or in the downloaded zip): one `<image>` per frame
  of the task, annotated or not (the same rule: a frame without shapes is not annotated). `<box>` is
  xtl/ytl/xbr/ybr in pixels (what CVAT's COCO writes as [xtl, ytl, xbr-xtl, ybr-ytl], so both exports give
  the same boxes); `<polygon>`, `<mask>` and `<ellipse>` count as their bounding box; polylines, points,
  cuboids, skeletons and tags are not boxes: counted as skipped, never silently. A rotated box is refused;
  so is CVAT for video 1.1 (tracks name frames by number, not images) and any XML with a DOCTYPE (alod
  reads no DTD: no entity expansion).
- Anything else goes to `alod.data.bdd100k` (BDD100K / Scalabel JSON, a folder
  of per-image files, plain COCO) unchanged; a file that resembles another
  tool's format alod does not read (YOLO, Pascal VOC, Label Studio CSV, ...)
  is refused saying so.

A zip is read in memory, never extracted.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from alod.data.bdd100k import load_document, load_labels
from alod.data.coco import is_coco_document
from alod.data.frames import Frame, LabelError, LoadReport, Problem
from alod.data.label_parser import is_number

LABEL_STUDIO_JSON = "Label Studio JSON"
LABEL_STUDIO_JSON_MIN = "Label Studio JSON-MIN"
LABEL_STUDIO_COCO = "Label Studio COCO"
CVAT_COCO = "CVAT COCO 1.0"
CVAT_XML = "CVAT for images 1.1"
COCO = "COCO"
SCALABEL = "BDD100K / Scalabel JSON"

MAX_ZIP_MEMBER = 1 << 30  # bytes: a label file larger than this in a zip is refused, not read
ROTATION_TOLERANCE = 1e-6  # degrees
# Label Studio prefixes uploaded / downloaded files with 8 hex digits of a hash.
_TOOL_PREFIX = re.compile(r"^[0-9a-f]{8}__")
_CVAT_COCO_MEMBER = re.compile(r"^(?:.*/)?annotations/instances_[^/]+\.json$")
_JSON_MIN_KEYS = frozenset({"annotation_id", "annotator", "lead_time"})
_LS_TASK_KEYS = frozenset({"annotations", "predictions", "completions", "drafts"})


@dataclass
class ToolExport:
    """What a label file holds, as far as alod can use it."""

    frames: list[Frame]  # the annotated images (a frame without boxes: annotated, nothing there)
    format: str
    skipped_boxes: int = 0  # dropped while loading (zero area, outside the image)
    not_annotated: list[str] = field(default_factory=list)  # listed in the file, never labeled: stay missing
    cancelled: int = 0  # Label Studio annotations the annotator skipped (no label)
    renamed: dict[str, str] = field(default_factory=dict)  # tool's file name -> selected image
    report: LoadReport | None = None


# --- names -------------------------------------------------------------------


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


class SelectedNames:
    """Match the file names annotation tools write onto the selected images."""

    def __init__(self, selected: Iterable[str]):
        self.names = set(selected)
        self.by_base: dict[str, list[str]] = {}
        for name in self.names:
            parts = _parts(name)
            if parts:
                self.by_base.setdefault(parts[-1], []).append(name)

    def candidates(self, name: str) -> list[str]:
        """Selected images `name` may stand for: itself; else those it ends in (whole path
        parts, the last one possibly behind a Label Studio `<8 hex>__` prefix); else those
        whose file name is its file name."""
        if name in self.names:
            return [name]
        if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
            return []
        parts = _parts(name)
        if not parts:
            return []
        lasts = {parts[-1], _TOOL_PREFIX.sub("", parts[-1], count=1)}
        pool = sorted({n for last in lasts for n in self.by_base.get(last, [])})
        ending = [n for n in pool if _ends_with(parts, _parts(n))]
        return ending or pool

    def match(self, name: str) -> str | None:
        found = self.candidates(name)
        return found[0] if len(found) == 1 else None


def _ends_with(parts: list[str], tail: list[str]) -> bool:
    if len(tail) > len(parts):
        return False
    head = parts[len(parts) - len(tail):]
    last_ok = head[-1] == tail[-1] or _TOOL_PREFIX.sub("", head[-1], count=1) == tail[-1]
    return head[:-1] == tail[:-1] and last_ok


def match_selected(name: str, selected: Iterable[str]) -> str | None:
    """The one selected image `name` stands for (see `SelectedNames.candidates`), else None."""
    return SelectedNames(selected).match(name)


# --- what a reader is handed ------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A parsed JSON document and where it came from (for sniffing and for messages)."""

    data: Any
    where: str  # the file, or <zip>!<member>
    member: str | None = None  # its path inside the zip it was read from


@dataclass(frozen=True)
class Archive:
    """An open zip's member names; a member is read only when asked for, in memory."""

    file: str
    names: list[str]
    zf: zipfile.ZipFile

    def document(self, member: str) -> Document:
        data, where = _zip_json(self.zf, self.file, member)
        return Document(data, where, member)

    def xml_document(self, member: str) -> Document:
        raw, where = _zip_bytes(self.zf, self.file, member)
        return Document(_parse_xml(raw, where), where, member)


@dataclass(frozen=True)
class Reader:
    """One label format: `sniff` says whether a document or a zip looks like it, `parse` reads it."""

    name: str  # ToolExport.format; how the errors list what alod reads
    sniff: Callable[[Document | Archive], bool]
    parse: Callable[[Document | Archive, SelectedNames], ToolExport]  # only called after sniff said yes
    zip_layout: str | None = None  # what this format's zip holds, for the error about a zip nobody reads


# Sniffed in order, the first reader that says yes parses: specific formats before the general ones
# (Label Studio's and CVAT's COCO before plain COCO). Filled by `register` below the readers.
READERS: list[Reader] = []


def register(reader: Reader) -> Reader:
    """Add a format; `read_export` sniffs it after the ones registered before it."""
    if any(r.name == reader.name for r in READERS):
        raise ValueError(f"a label format named {reader.name!r} is registered already")
    READERS.append(reader)
    return reader


def supported_formats() -> str:
    """The registered formats, in words: what an error tells the user to export."""
    names = [r.name for r in READERS]
    if len(names) < 2:
        return "".join(names) or "nothing"
    return ", ".join(names[:-1]) + " or " + names[-1]


def _sniff(source: Document | Archive) -> Reader | None:
    return next((r for r in READERS if r.sniff(source)), None)


# Formats alod does not read, recognised to refuse them by name: (what it looks like, test); first match wins.
# Text files are tested on (their first 4 KiB, first line), zips on (member paths, member file names), lower-cased.
_TEXT_LOOKALIKES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("a Pascal VOC XML file", lambda head, first: head.startswith("<") and "<annotation" in head),
    ("a Label Studio labeling config, not labels", lambda head, first: head.startswith("<") and "<View" in head),
    ("an XML file", lambda head, first: head.startswith("<")),
    ("a Label Studio CSV / TSV export", lambda head, first: ("annotation_id" in first or "annotator" in first)
     and ("," in first or "\t" in first)),
    ("a YOLO label file",
     lambda head, first: re.match(r"^\d+ [-\d.]+ [-\d.]+ [-\d.]+ [-\d.]+\s*$", first) is not None),
]
_ZIP_LOOKALIKES: list[tuple[str, Callable[[list[str], set[str]], bool]]] = [
    ("a YOLO 1.1 export (CVAT)", lambda paths, bases: "obj.names" in bases or "obj.data" in bases),
    ("an Ultralytics YOLO export", lambda paths, bases: "data.yaml" in bases),
    ("a Label Studio YOLO export", lambda paths, bases: "classes.txt" in bases
     and any(n.endswith(".txt") and "labels/" in n for n in paths)),
    ("a Pascal VOC export", lambda paths, bases: any((n.startswith("annotations/") or "/annotations/" in n)
                                                     and n.endswith(".xml") for n in paths)),
    ("a Datumaro export (CVAT's 'Datumaro 1.0')",
     lambda paths, bases: any(re.match(r"^(?:.*/)?annotations/[^/]+\.json$", n) for n in paths)),
    ("a CSV / TSV export", lambda paths, bases: any(n.endswith((".csv", ".tsv")) for n in paths)),
]
_DOCUMENT_LOOKALIKES: list[tuple[str, Callable[[Any], bool]]] = [
    ("a Datumaro export (CVAT's 'Datumaro 1.0')",
     lambda data: isinstance(data, dict) and {"items", "categories"} <= data.keys()),
]


def _resembles(lookalikes: list[tuple[str, Callable[..., bool]]], *seen: Any) -> str | None:
    return next((what for what, test in lookalikes if test(*seen)), None)


def _not_read(where: str, resembles: str) -> LabelError:
    return LabelError([Problem(where, None, None, None, f"this looks like {resembles}, which alod does not read; "
                               f"export {supported_formats()}")])


# --- entry point ---------------------------------------------------------------


def read_export(path: str | Path, selected: Collection[str] = ()) -> ToolExport:
    """Labels from `path` in any registered format; `LabelError` naming file, frame and field.

    `selected`: the images asked for, to match tool-written COCO file names onto.
    """
    path = Path(path)
    if path.is_dir() or not path.exists():
        return _loaded(*load_labels(path))  # a folder of per-image files; or the loader words what is missing
    if zipfile.is_zipfile(path):
        return _read_zip(path, SelectedNames(selected))
    try:
        raw = path.read_bytes()
    except OSError:
        return _loaded(*load_labels(path))  # the loader words the error
    data = _parse_json(raw)
    if data is _NOT_JSON:
        head = raw[:4096].decode("utf-8", "replace").lstrip("\ufeff").lstrip()
        root = _parse_xml(raw, str(path)) if _looks_cvat_xml(head) else None
        if root is not None and root.tag == "annotations":
            return read_document(Document(root, str(path)), SelectedNames(selected))
        resembles = _resembles(_TEXT_LOOKALIKES, head, head.splitlines()[0] if head else "")
        if resembles:
            raise _not_read(str(path), resembles)
        return _loaded(*load_labels(path))  # the loader words the JSON error
    return read_document(Document(data, str(path)), SelectedNames(selected))


def read_document(doc: Document, selected: SelectedNames) -> ToolExport:
    """A parsed document, by the first registered reader whose sniff says yes."""
    reader = _sniff(doc)
    if reader is not None:
        return reader.parse(doc, selected)
    resembles = _resembles(_DOCUMENT_LOOKALIKES, doc.data)
    if resembles:
        raise _not_read(doc.where, resembles)
    return _loaded(*load_document(doc.data, doc.where))  # the loader words what is wrong with it


_NOT_JSON = object()


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return _NOT_JSON


def _loaded(frames: list[Frame], report: LoadReport, fmt: str = SCALABEL) -> ToolExport:
    """What `alod.data.bdd100k`'s loader read, as a ToolExport."""
    return ToolExport(frames=frames, format=fmt, skipped_boxes=int(sum(report.skipped.values())), report=report)


# --- zip -------------------------------------------------------------------------


def _read_zip(path: Path, selected: SelectedNames) -> ToolExport:
    file = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise LabelError([Problem(file, None, None, None, f"unreadable zip: {e}")]) from None
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        archive = Archive(file, names, zf)
        reader = _sniff(archive)
        if reader is not None:
            return reader.parse(archive, selected)
        lower = [n.lower() for n in names]
        resembles = _resembles(_ZIP_LOOKALIKES, lower, {PurePosixPath(n).name for n in lower})
        jsons = [n for n in names if n.lower().endswith(".json")]
        if resembles is None and len(jsons) == 1:  # one label file, zipped
            return read_document(archive.document(jsons[0]), selected)
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    what = f"this looks like {resembles}, which alod does not read" if resembles else \
        "alod does not know this zip's layout"
    layouts = ", ".join(f"a {r.name} zip holds {r.zip_layout}" for r in READERS if r.zip_layout)
    raise LabelError([Problem(file, None, None, None, f"a zip holding {shown or 'nothing'}: {what}; export "
                              f"{supported_formats()}" + (f" ({layouts})" if layouts else ""))])


def _zip_bytes(zf: zipfile.ZipFile, file: str, member: str) -> tuple[bytes, str]:
    where = f"{file}!{member}"
    info = zf.getinfo(member)
    if info.file_size > MAX_ZIP_MEMBER:
        raise LabelError([Problem(where, None, None, None, f"{info.file_size} bytes uncompressed, more than "
                                  f"the {MAX_ZIP_MEMBER} alod reads from a zip")])
    try:
        with zf.open(member) as fh:
            raw = fh.read(MAX_ZIP_MEMBER + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as e:  # corrupt, encrypted
        raise LabelError([Problem(where, None, None, None, f"cannot read from the zip: {e}")]) from None
    if len(raw) > MAX_ZIP_MEMBER:
        raise LabelError([Problem(where, None, None, None, "larger than its header says; refused")])
    return raw, where


def _zip_json(zf: zipfile.ZipFile, file: str, member: str) -> tuple[Any, str]:
    raw, where = _zip_bytes(zf, file, member)
    data = _parse_json(raw)
    if data is _NOT_JSON:
        try:
            raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise LabelError([Problem(where, None, None, None, f"not UTF-8 text: invalid byte at offset {e.start}")]) from None
        try:
            json.loads(raw.decode("utf-8-sig"))
        except json.JSONDecodeError as e:
            raise LabelError([Problem(where, None, None, None, f"invalid JSON at line {e.lineno}, "
                                      f"column {e.colno}: {e.msg}")]) from None
        except RecursionError:
            raise LabelError([Problem(where, None, None, None, "invalid JSON: nested too deeply")]) from None
    return data, where


# --- Label Studio -----------------------------------------------------------------------


class _Problems:
    def __init__(self, file: str):
        self.file = file
        self.items: list[Problem] = []

    def add(self, frame, label_index, fld, message) -> None:
        self.items.append(Problem(self.file, frame, label_index, fld, message))

    def raise_any(self) -> None:
        if self.items:
            raise LabelError(self.items)


def _task_name(task: dict, data: Any, where: str, problems: _Problems) -> str | None:
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str) and name:
        return name
    problems.add(where, None, "data.name",
                 f"Label Studio task without a string data.name (got {name!r}): alod finds the image by the "
                 "name it puts in each task it exports; create the tasks by importing alod's label_studio.json "
                 "(annotation/cycle_NNN/ in the run's artifacts), not by uploading images")
    return None


def _box(region: dict, size: dict, where: str, j: int, fld: str, problems: _Problems) -> tuple | None:
    """(label, [x, y, w, h] in pixels, (width, height)) of one rectanglelabels region, or None (reported)."""
    ok = True
    for key in ("x", "y", "width", "height"):
        if not is_number(region.get(key)):
            problems.add(where, j, f"{fld}.{key}", f"must be a finite number (percent), got {region.get(key)!r}")
            ok = False
    rotation = region.get("rotation", 0)
    if not is_number(rotation):
        problems.add(where, j, f"{fld}.rotation", f"must be a number, got {rotation!r}")
        ok = False
    elif abs(rotation) > ROTATION_TOLERANCE and abs(abs(rotation) - 360) > ROTATION_TOLERANCE:
        problems.add(where, j, f"{fld}.rotation", f"rotated box ({rotation:g} degrees): alod trains on "
                     "axis-aligned boxes; set the rotation back to 0 in Label Studio")
        ok = False
    labels = region.get("rectanglelabels")
    if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
        problems.add(where, j, f"{fld}.rectanglelabels", f"expected exactly one class name, got {labels!r}")
        ok = False
    width, height = size.get("original_width"), size.get("original_height")
    if not (is_number(width) and is_number(height) and width > 0 and height > 0):
        problems.add(where, j, "original_width/original_height",
                     f"needed to turn percentages into pixels, got {width!r} x {height!r}")
        ok = False
    if not ok:
        return None
    box = [region["x"] * width / 100, region["y"] * height / 100,
           region["width"] * width / 100, region["height"] * height / 100]
    return labels[0], box, (width, height)


def _boxes_of_results(results: Any, where: str, fld: str, problems: _Problems) -> list | None:
    if results is None:
        return []
    if not isinstance(results, list):
        problems.add(where, None, fld, f"expected a list of results, got {type(results).__name__}")
        return None
    boxes = []
    for j, r in enumerate(results):
        if not isinstance(r, dict):
            problems.add(where, j, f"{fld}[{j}]", "result is not a JSON object")
            continue
        kind = r.get("type")
        if kind != "rectanglelabels":
            problems.add(where, j, f"{fld}[{j}].type",
                         f"a {kind!r} result is not a labeled box (alod's labeling config has only "
                         "RectangleLabels); remove it or label with alod's label_studio_config.xml")
            continue
        value = r.get("value")
        if not isinstance(value, dict):
            problems.add(where, j, f"{fld}[{j}].value", "expected an object")
            continue
        got = _box(value, r, where, j, f"{fld}[{j}].value", problems)
        if got is not None:
            boxes.append(got)
    return boxes


def _same_boxes(a: list, b: list) -> bool:
    def key(boxes):
        return sorted((label, *(round(v, 2) for v in box)) for label, box, _ in boxes)
    return key(a) == key(b)


@dataclass
class _Annotated:
    name: str
    where: str
    boxes: list  # [(label, [x, y, w, h], (width, height))]


def _pick(name: str, where: str, versions: list[tuple[str, list, bool]], problems: _Problems) -> list | None:
    """One annotation's boxes out of several of one task: ground truth, else they must agree."""
    if len(versions) == 1:
        return versions[0][1]
    truth = [v for v in versions if v[2]]
    if len(truth) == 1:
        return truth[0][1]
    pool = truth or versions
    if all(_same_boxes(pool[0][1], v[1]) for v in pool[1:]):
        return pool[0][1]
    ids = ", ".join(v[0] for v in pool)
    problems.add(where, None, "annotations",
                 f"image {name!r} has {len(pool)} annotations with different boxes ({ids}): keep one in "
                 "Label Studio (delete the others, or mark one as ground truth and export JSON), then export again")
    return None


def _label_studio_json(tasks: list[dict], file: str) -> ToolExport:
    problems = _Problems(file)
    annotated: list[_Annotated] = []
    not_annotated: list[str] = []
    cancelled = 0
    seen: dict[str, str] = {}
    if not any("annotations" in t or "completions" in t for t in tasks):
        raise LabelError([Problem(file, None, None, "annotations", "Label Studio tasks without any annotations "
                                  "(predictions are never labels; is this alod's own label_studio.json?): export "
                                  "the project from Label Studio after annotating")])
    for i, task in enumerate(tasks):
        where = f"task {task.get('id', f'#{i}')}"
        name = _task_name(task, task.get("data"), where, problems)
        anns = task.get("annotations", task.get("completions")) or []
        if not isinstance(anns, list):
            problems.add(where, None, "annotations", "expected a list")
            continue
        if name is None:
            continue
        where = f"{where} ({name})"
        if name in seen:
            problems.add(where, None, "data.name", f"image {name!r} is also {seen[name]}: the tasks were imported "
                         "twice; delete one task in Label Studio (or merge its annotation into the other)")
            continue
        seen[name] = where
        live = []
        for k, ann in enumerate(anns):
            if not isinstance(ann, dict):
                problems.add(where, None, f"annotations[{k}]", "expected an object")
                continue
            if ann.get("was_cancelled") or ann.get("skipped"):
                cancelled += 1
                continue
            boxes = _boxes_of_results(ann.get("result"), where, f"annotations[{k}].result", problems)
            if boxes is not None:
                live.append((f"annotation {ann.get('id', k)}", boxes, bool(ann.get("ground_truth"))))
        if not live:
            not_annotated.append(name)
            continue
        boxes = _pick(name, where, live, problems)
        if boxes is not None:
            annotated.append(_Annotated(name, where, boxes))
    problems.raise_any()
    return _finish(annotated, not_annotated, file, LABEL_STUDIO_JSON, cancelled=cancelled)


def _regions_in_row(row: dict) -> list[str]:
    """Keys of a JSON-MIN row that hold regions (a list of objects with x / y / width / height)."""
    keys = []
    for key, value in row.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) and any(
                "rectanglelabels" in v or {"x", "y", "width", "height"} <= v.keys() or "points" in v for v in value):
            keys.append(key)
    return keys


def _label_studio_json_min(rows: list[dict], file: str) -> ToolExport:
    problems = _Problems(file)
    versions: dict[str, list] = {}
    wheres: dict[str, str] = {}
    tasks_of: dict[str, set] = {}
    not_annotated: list[str] = []
    for i, row in enumerate(rows):
        where = f"task {row.get('id', f'#{i}')}"
        name = _task_name(row, row, where, problems)
        if name is None:
            continue
        where = f"{where} ({name})"
        region_keys = _regions_in_row(row)
        if row.get("annotation_id") is None and not region_keys:
            not_annotated.append(name)  # exported with "all tasks": nobody annotated it
            continue
        boxes: list = []
        for key in region_keys:
            for j, region in enumerate(row[key]):
                fld = f"{key}[{j}]"
                if "rectanglelabels" not in region:
                    kinds = [k for k in region if k.endswith("labels")] or ["a region without rectanglelabels"]
                    problems.add(where, j, fld, f"{kinds[0]} is not a labeled box (alod's labeling config has only "
                                 "RectangleLabels)")
                    continue
                got = _box(region, region, where, j, fld, problems)
                if got is not None:
                    boxes.append(got)
        versions.setdefault(name, []).append((f"annotation {row.get('annotation_id')}", boxes, False))
        wheres.setdefault(name, where)
        tasks_of.setdefault(name, set()).add(row.get("id"))
    annotated = []
    for name, found in versions.items():
        if len(tasks_of[name]) > 1:
            problems.add(wheres[name], None, "name", f"image {name!r} is in {len(tasks_of[name])} tasks "
                         f"({', '.join(map(str, sorted(tasks_of[name], key=str)))}): the tasks were imported twice; "
                         "delete one task in Label Studio")
            continue
        boxes = _pick(name, wheres[name], found, problems)
        if boxes is not None:
            annotated.append(_Annotated(name, wheres[name], boxes))
    problems.raise_any()
    not_annotated = [n for n in not_annotated if n not in versions]
    return _finish(annotated, not_annotated, file, LABEL_STUDIO_JSON_MIN)


def _finish(annotated: list[_Annotated], not_annotated: list[str], file: str, fmt: str, *,
            cancelled: int = 0) -> ToolExport:
    """Boxes in pixels -> Frames, through the COCO reader (name checks, classes, clipping, skipped boxes)."""
    cat_ids: dict[str, int] = {}
    images, anns = [], []
    for image_id, item in enumerate(annotated, start=1):
        image = {"id": image_id, "file_name": item.name}
        sizes = {size for _, _, size in item.boxes}
        if len(sizes) == 1:
            (width, height), = sizes
            if float(width).is_integer() and float(height).is_integer():
                image.update(width=int(width), height=int(height))
        images.append(image)
        for label, (x, y, w, h), _ in item.boxes:
            cid = cat_ids.setdefault(label, len(cat_ids) + 1)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cid, "bbox": [x, y, w, h]})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]}
    frames, report = load_document(doc, file)
    return ToolExport(frames=frames, format=fmt, skipped_boxes=int(sum(report.skipped.values())),
                      not_annotated=not_annotated, cancelled=cancelled, report=report)


# --- COCO written by the tools -----------------------------------------------------------


def _tool_coco(doc: dict, file: str, selected: SelectedNames, fmt: str, *,
               unannotated_missing: bool = False) -> ToolExport:
    """Label Studio's / CVAT's COCO: file names matched onto selected images, duplicates explained."""
    images, anns = doc.get("images"), doc.get("annotations") or []
    if not isinstance(images, list) or not isinstance(anns, list):
        load_document(doc, file)  # raises, naming the field
    problems = _Problems(file)
    renamed: dict[str, str] = {}
    by_name: dict[str, list] = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            continue  # the COCO reader reports it
        original = img["file_name"]
        found = selected.candidates(original)
        if len(found) > 1:
            problems.add(original, None, "file_name", f"ends in the names of {len(found)} selected images ("
                         + ", ".join(repr(n) for n in found[:5]) + "): ambiguous; rename the images in the tool")
            continue
        if not found and (".." in _parts(original) or PurePosixPath(original).is_absolute()
                          or PureWindowsPath(original).is_absolute()):
            problems.add(original, None, "file_name", "ends in no selected image's name, and as a path it is "
                         "outside the image root: only the exported images can be imported")
            continue
        if found and found[0] != original:
            renamed[original] = found[0]
        by_name.setdefault(found[0] if found else original, []).append(img.get("id", f"#{i}"))
    for name, ids in by_name.items():
        if len(ids) > 1:
            hint = ("Label Studio writes one COCO image per annotation, so a task annotated twice appears twice: "
                    "keep one annotation in Label Studio (or export JSON, where the one marked ground truth wins)"
                    if fmt == LABEL_STUDIO_COCO else "the tool listed one image twice")
            problems.add(name, None, "file_name", f"image ids {', '.join(map(str, ids))} are all this image: {hint}")
    rotated = [(a, ann) for a, ann in enumerate(anns) if isinstance(ann, dict)
               and isinstance(ann.get("attributes"), dict) and is_number(ann["attributes"].get("rotation", 0))
               and abs(ann["attributes"].get("rotation", 0)) > ROTATION_TOLERANCE]
    names_by_id = {img.get("id"): img.get("file_name") for img in images if isinstance(img, dict)}
    for a, ann in rotated:
        problems.add(str(names_by_id.get(ann.get("image_id"), ann.get("image_id"))), a, "attributes.rotation",
                     f"rotated box ({ann['attributes']['rotation']:g} degrees): alod trains on axis-aligned boxes; "
                     "set the rotation back to 0 in the tool")
    problems.raise_any()
    not_annotated: list[str] = []
    if unannotated_missing:
        with_boxes = {ann.get("image_id") for ann in anns if isinstance(ann, dict)}
        keep = [img for img in images if not isinstance(img, dict) or img.get("id") in with_boxes]
        not_annotated = [renamed.get(img["file_name"], img["file_name"]) for img in images
                         if isinstance(img, dict) and img.get("id") not in with_boxes
                         and isinstance(img.get("file_name"), str)]
        images = keep
    images = [{**img, "file_name": renamed[img["file_name"]]}
              if isinstance(img, dict) and img.get("file_name") in renamed else img for img in images]
    frames, report = load_document({**doc, "images": images}, file)
    return ToolExport(frames=frames, format=fmt, skipped_boxes=int(sum(report.skipped.values())),
                      not_annotated=not_annotated, renamed=renamed, report=report)


def _cvat_coco(docs: list[Document], selected: SelectedNames) -> ToolExport:
    """CVAT's COCO 1.0: one instances_<subset>.json per subset; every frame listed, annotated or not."""
    parts = []
    for doc in docs:
        if not isinstance(doc.data, dict) or "images" not in doc.data:
            raise LabelError([Problem(doc.where, None, None, None, "expected a COCO object {images, annotations, "
                                      f"categories}}, got {type(doc.data).__name__}")])
        parts.append(_tool_coco(doc.data, doc.where, selected, CVAT_COCO, unannotated_missing=True))
    if len(parts) == 1:
        return parts[0]
    frames = [f for p in parts for f in p.frames]
    seen: dict[str, str] = {}
    problems = []
    for p, doc in zip(parts, docs):
        for f in p.frames:
            if f.name in seen:
                problems.append(Problem(doc.where, f.name, None, "file_name", f"also in {seen[f.name]}"))
            seen.setdefault(f.name, doc.where)
    if problems:
        raise LabelError(problems)
    return ToolExport(frames=frames, format=CVAT_COCO, skipped_boxes=sum(p.skipped_boxes for p in parts),
                      not_annotated=[n for p in parts for n in p.not_annotated if n not in seen],
                      renamed={k: v for p in parts for k, v in p.renamed.items()})


# --- CVAT for images 1.1 (XML) --------------------------------------------------------------

# shape element -> the attributes that give its bounding box (polygon: `points`)
_CVAT_BOXES = {"box": ("xtl", "ytl", "xbr", "ybr"), "polygon": ("points",), "mask": ("left", "top", "width", "height"),
               "ellipse": ("cx", "cy", "rx", "ry")}
_CVAT_NOT_BOXES = ("polyline", "points", "cuboid", "skeleton", "tag")


def _looks_cvat_xml(head: str) -> bool:
    return head.startswith("<") and "<annotations" in head


def _parse_xml(raw: bytes, where: str) -> ET.Element:
    """The XML root; a DOCTYPE is refused before parsing (no DTD, so no entity expansion or external entity)."""
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise LabelError([Problem(where, None, None, None, "XML with a DOCTYPE or ENTITY declaration: alod reads "
                                  "no DTD (CVAT writes none); remove the declaration")])
    try:
        return ET.fromstring(raw)
    except ET.ParseError as e:
        line, column = e.position
        raise LabelError([Problem(where, None, None, None, f"invalid XML at line {line}, column {column + 1}: "
                                  f"{str(e).split(':')[0]}")]) from None


def _xml_number(el: ET.Element, key: str, frame: str, index: int | None, problems: _Problems) -> float | None:
    text = el.get(key)
    value = _to_float(text)
    if value is None or not math.isfinite(value):
        problems.add(frame, index, key, f"<{el.tag}> needs a finite number, got {text!r}")
        return None
    return value


def _cvat_xywh(shape: ET.Element, frame: str, j: int, problems: _Problems) -> list[float] | None:
    """[x, y, w, h] of a box-like shape, as CVAT's COCO export writes it; None (problem added) if malformed."""
    if shape.tag == "polygon":
        try:
            xy = [tuple(float(v) for v in pair.split(",")) for pair in (shape.get("points") or "").split(";")]
            ok = bool(xy) and all(len(p) == 2 and all(map(math.isfinite, p)) for p in xy)
        except ValueError:
            ok = False
        if not ok:
            problems.add(frame, j, "points", f"<polygon> needs points 'x,y;x,y;...', got {shape.get('points')!r}")
            return None
        xs, ys = [p[0] for p in xy], [p[1] for p in xy]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    values = [_xml_number(shape, key, frame, j, problems) for key in _CVAT_BOXES[shape.tag]]
    if any(v is None for v in values):
        return None
    a, b, c, d = values
    if shape.tag == "box":
        for low, high, first, second in ((a, c, "xtl", "xbr"), (b, d, "ytl", "ybr")):
            if high < low:
                problems.add(frame, j, second, f"{second} {high:g} is below {first} {low:g}: an inverted box")
                return None
        return [a, b, c - a, d - b]
    if shape.tag == "mask":  # left, top, width, height of the mask's extent
        return [a, b, c, d]
    return [a - c, b - d, 2 * c, 2 * d]  # ellipse: centre and radii


def _cvat_xml(doc: Document, selected: SelectedNames) -> ToolExport:
    """CVAT for images 1.1: every frame an <image>, shapes inside; read through the COCO path of CVAT's COCO
    export (same names matching, categories by name, zero-area boxes counted), after checks that name the
    image, the shape's index in it and the XML attribute."""
    root, file = doc.data, doc.where
    if root.find("track") is not None:
        raise LabelError([Problem(file, None, None, None, "CVAT for video 1.1: its <track>s number frames instead "
                                  "of naming images; export the task as 'CVAT for images 1.1'")])
    if root.find("image") is None:
        raise LabelError([Problem(file, None, None, None, "CVAT XML with no <image> in it: a 'CVAT for images 1.1' "
                                  "export lists every frame of the task, annotated or not; export the task again")])
    problems = _Problems(file)
    images, anns, categories, skipped = [], [], {}, Counter()
    for i, image in enumerate(root.findall("image")):
        name = image.get("name")
        if not name:
            problems.add(f"<image> #{i + 1} (id {image.get('id')})", None, "name", "missing: which image is this?")
            continue
        size = [_xml_number(image, key, name, None, problems) for key in ("width", "height")]
        if any(v is None for v in size):
            continue
        images.append({"id": i + 1, "file_name": name, "width": int(size[0]), "height": int(size[1])})
        for j, shape in enumerate(el for el in image if el.tag in _CVAT_BOXES or el.tag in _CVAT_NOT_BOXES):
            if shape.tag in _CVAT_NOT_BOXES:
                skipped[f"CVAT {shape.tag} (not a box)"] += 1
                continue
            label = shape.get("label")
            if not label:
                problems.add(name, j, "label", f"<{shape.tag}> without a label")
                continue
            rotation = shape.get("rotation", "0")
            degrees = _to_float(rotation)
            if degrees is None or not math.isfinite(degrees) or abs(degrees) > ROTATION_TOLERANCE:
                problems.add(name, j, "rotation", f"rotated {shape.tag} ({rotation} degrees): alod trains on "
                             "axis-aligned boxes; set the rotation back to 0 in CVAT")
                continue
            xywh = _cvat_xywh(shape, name, j, problems)
            if xywh is None:
                continue
            category = categories.setdefault(label, len(categories) + 1)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": category, "bbox": xywh,
                         "iscrowd": 0, "area": xywh[2] * xywh[3],
                         "attributes": {"occluded": shape.get("occluded", "0") == "1"}})
    problems.raise_any()
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": n} for n, i in categories.items()]}
    found = _tool_coco(coco, file, selected, CVAT_XML, unannotated_missing=True)
    if skipped and found.report is not None:
        found.report.skipped.update(skipped)
    found.skipped_boxes += sum(skipped.values())
    return found


def _to_float(text: str | None) -> float | None:
    """An XML attribute as a float; None when absent or not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# --- the registered readers ------------------------------------------------------------------


def _as_tasks(data: Any) -> Any:
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and _LS_TASK_KEYS & data.keys():
        return [data]  # one task, as GET /api/tasks/<id> returns it
    return data


def _rows_of_objects(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(t, dict) for t in data)


def _sniff_label_studio_json(source: Document | Archive) -> bool:
    tasks = _as_tasks(source.data) if isinstance(source, Document) else None
    return _rows_of_objects(tasks) and any(isinstance(t.get("data"), dict) and _LS_TASK_KEYS & t.keys()
                                           for t in tasks)


def _sniff_label_studio_json_min(source: Document | Archive) -> bool:
    rows = source.data if isinstance(source, Document) else None
    return _rows_of_objects(rows) and any(_JSON_MIN_KEYS & t.keys() or _regions_in_row(t)
                                          for t in rows if "labels" not in t)


def _coco_info(data: dict) -> dict:
    return data.get("info") if isinstance(data.get("info"), dict) else {}


def _sniff_label_studio_coco(source: Document | Archive) -> bool:
    if isinstance(source, Archive):
        return "result.json" in source.names
    return is_coco_document(source.data) and (source.member == "result.json"
                                              or _coco_info(source.data).get("contributor") == "Label Studio")


def _parse_label_studio_coco(source: Document | Archive, selected: SelectedNames) -> ToolExport:
    if isinstance(source, Archive):  # result.json is read like any document: it is Label Studio's COCO if COCO
        return read_document(source.document("result.json"), selected)
    return _tool_coco(source.data, source.where, selected, LABEL_STUDIO_COCO)


def _looks_datumaro(doc: dict) -> bool:
    """datumaro's COCO writer (CVAT's COCO 1.0): `licenses`, and images with coco_url / flickr_url."""
    images = doc.get("images")
    return ("licenses" in doc and isinstance(images, list) and bool(images)
            and all(isinstance(i, dict) and {"coco_url", "flickr_url"} <= i.keys() for i in images))


def _sniff_cvat_coco(source: Document | Archive) -> bool:
    if isinstance(source, Archive):
        return any(_CVAT_COCO_MEMBER.match(n) for n in source.names)
    return is_coco_document(source.data) and _looks_datumaro(source.data)


def _parse_cvat_coco(source: Document | Archive, selected: SelectedNames) -> ToolExport:
    if isinstance(source, Archive):
        return _cvat_coco([source.document(n) for n in sorted(filter(_CVAT_COCO_MEMBER.match, source.names))],
                          selected)
    return _cvat_coco([source], selected)


def _cvat_xml_member(names: list[str]) -> str | None:
    found = [n for n in names if PurePosixPath(n).name == "annotations.xml"]
    return min(found, key=len) if found else None


def _sniff_cvat_xml(source: Document | Archive) -> bool:
    if isinstance(source, Archive):
        return _cvat_xml_member(source.names) is not None
    return isinstance(source.data, ET.Element) and source.data.tag == "annotations"


def _parse_cvat_xml(source: Document | Archive, selected: SelectedNames) -> ToolExport:
    if isinstance(source, Archive):
        return _cvat_xml(source.xml_document(_cvat_xml_member(source.names)), selected)
    return _cvat_xml(source, selected)


def _sniff_scalabel(source: Document | Archive) -> bool:
    if not isinstance(source, Document):
        return False
    data = source.data
    shaped = isinstance(data, list) or (isinstance(data, dict) and "frames" in data)
    return shaped and _resembles(_DOCUMENT_LOOKALIKES, data) is None


# One line per format, in sniffing order.
register(Reader(LABEL_STUDIO_JSON, _sniff_label_studio_json,
                lambda doc, selected: _label_studio_json(_as_tasks(doc.data), doc.where)))
register(Reader(LABEL_STUDIO_JSON_MIN, _sniff_label_studio_json_min,
                lambda doc, selected: _label_studio_json_min(doc.data, doc.where)))
register(Reader(LABEL_STUDIO_COCO, _sniff_label_studio_coco, _parse_label_studio_coco, zip_layout="result.json"))
register(Reader(CVAT_COCO, _sniff_cvat_coco, _parse_cvat_coco, zip_layout="annotations/instances_<subset>.json"))
register(Reader(CVAT_XML, _sniff_cvat_xml, _parse_cvat_xml, zip_layout="annotations.xml"))
register(Reader(COCO, lambda source: isinstance(source, Document) and is_coco_document(source.data),
                lambda doc, selected: _loaded(*load_document(doc.data, doc.where), fmt=COCO)))
register(Reader(SCALABEL, _sniff_scalabel, lambda doc, selected: _loaded(*load_document(doc.data, doc.where))))


__all__ = ["CVAT_COCO", "CVAT_XML", "COCO", "LABEL_STUDIO_COCO", "LABEL_STUDIO_JSON", "LABEL_STUDIO_JSON_MIN", "READERS",
           "SCALABEL", "Archive", "Document", "Reader", "SelectedNames", "ToolExport", "match_selected",
           "read_document", "read_export", "register", "supported_formats"]

