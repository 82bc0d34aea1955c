"""Read, validate and write BDD100K detection labels.

Accepted shapes (detected from the content, not the file name):

- a JSON list of Scalabel frames (2018 release, det_20, prediction files),
- a Scalabel dataset dump ``{"frames": [...], "groups": ..., "config": ...}``,
- a folder of per-image 2018 files ``{"name", "frames": [{"objects": [...]}]}``,
- COCO ``{"images", "annotations", "categories"}`` (categories matched by name;
  read by `alod.data.coco.read_coco`).

Everything is checked in one pass so a user sees every defect at once; each
`Problem` names file, frame, label index and field. Scalabel ``box2d`` x2/y2 are
inclusive and become exclusive (+1) here, see `alod.data.frames`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from alod.data import categories
from alod.data.coco import is_coco_document, read_coco
from alod.data.frames import Frame, LabelError, LoadReport, Problem
from alod.data.label_parser import LabelParser, RawFrame, is_number, is_positive_int, json_kind, unsafe_name_reason
from alod.fileio import write_json_atomic

# Reasons used as keys of LoadReport.skipped (the CLI prints them).
NO_BOX2D = "no box2d"
ZERO_AREA = "zero or negative area"
OUTSIDE_IMAGE = "outside the image"
# Prefixes of the Problem messages for a frame whose image file is missing / unusable.
MISSING_IMAGE = "image file not found"
UNREADABLE_IMAGE = "unreadable image"
# A clipped box that lost more than this share of its area gets a located warning.
MOSTLY_OUTSIDE = 0.5

_COORDS = ("x1", "y1", "x2", "y2")

__all__ = [
    "MISSING_IMAGE",
    "NO_BOX2D",
    "OUTSIDE_IMAGE",
    "UNREADABLE_IMAGE",
    "ZERO_AREA",
    "check_labels",
    "dataset_digest",
    "load_document",
    "load_labels",
    "resolve_image_path",
    "save_frames",
    "split_paths",
]


# ---------------------------------------------------------------------------
# public API


def load_labels(
    path: str | os.PathLike,
    *,
    skip_unknown: bool = False,
    image_size: tuple[int, int] | None = None,
    exact: bool = False,
) -> tuple[list[Frame], LoadReport]:
    """Load a label file or folder; raise `LabelError` listing every problem found.

    image_size: (width, height) used to clip boxes of frames whose size the
    file does not give (BDD100K images are 1280x720).

    exact: every box as the file gives it, for evaluation: nothing clipped to the
    image or dropped for lying outside it or having no area, and boxes and scores
    kept in float64 (`Frame` holds float32 otherwise). This is what the official
    BDD100K evaluator scores; training may clip.
    """
    frames, report = _load(Path(path), skip_unknown=skip_unknown, image_size=image_size, exact=exact)
    if report.problems:
        raise LabelError(report.problems)
    return frames, report


def load_document(
    data: Any,
    file: str,
    *,
    skip_unknown: bool = False,
    image_size: tuple[int, int] | None = None,
) -> tuple[list[Frame], LoadReport]:
    """Like `load_labels`, for a JSON document already parsed (e.g. read from a zip in
    memory); `file` names it in messages."""
    report = LoadReport()
    parser = _Parser(report, skip_unknown)
    report.files.append(file)
    parser.document(data, file)
    parser.report_unknown()
    frames = _finalize(parser.frames, report, image_size, {})
    if report.problems:
        raise LabelError(report.problems)
    return frames, report


def check_labels(
    path: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    skip_unknown: bool = False,
    image_size: tuple[int, int] | None = None,
) -> tuple[list[Frame], LoadReport]:
    """Like `load_labels` but never raises on bad content: problems are in the report.

    With `images`, every frame's image must exist under that folder and pass
    `alod.data.images.check_image_file` (format, size limit, truncation; no
    decode); the sizes read from the headers are used to clip boxes.
    """
    return _load(
        Path(path),
        skip_unknown=skip_unknown,
        image_size=image_size,
        images=None if images is None else Path(images),
    )


def resolve_image_path(image_root: str | os.PathLike, name: str) -> Path:
    """The image file for frame `name`; ValueError if the name could leave `image_root`."""
    reason = unsafe_name_reason(name)
    if reason:
        raise ValueError(f"frame name {name!r} {reason}; it must be relative to {image_root}")
    root = Path(image_root)
    path = root / name
    # Symlinks inside the root may still point outside it.
    resolved, real_root = path.resolve(), root.resolve()
    if not resolved.is_relative_to(real_root):
        raise ValueError(
            f"frame name {name!r} resolves to {resolved}, outside the image root {real_root}"
        )
    return path


def save_frames(frames: Iterable[Frame], path: str | os.PathLike, *, scores: bool = False) -> None:
    """Write frames as a det_20-style JSON list (inclusive box2d), atomically.

    Ignore regions are written with their det_20 class and
    ``attributes.ignored = true``, which `load_labels` reads back as ignore.
    With scores=True each label carries ``score``: the prediction format of the
    official BDD100K evaluator.
    """
    out = []
    for frame in frames:
        if scores and frame.scores is None and len(frame):
            raise ValueError(f"frame {frame.name!r} has boxes but no scores")
        item: dict[str, Any] = {"name": frame.name}
        if frame.attributes:
            item["attributes"] = frame.attributes
        if frame.width is not None and frame.height is not None:
            item["size"] = {"width": int(frame.width), "height": int(frame.height)}
        labels = []
        # tolist() once per frame: per-element numpy indexing dominates otherwise.
        rows = zip(frame.boxes.tolist(), frame.labels.tolist(), frame.ignore.tolist())
        frame_scores = frame.scores.tolist() if scores and frame.scores is not None else None
        for i, ((x1, y1, x2, y2), cat, ignored) in enumerate(rows):
            label: dict[str, Any] = {
                "id": str(i),
                "category": categories.ID_TO_NAME[cat],
                "box2d": {"x1": x1, "y1": y1, "x2": x2 - 1.0, "y2": y2 - 1.0},
                "attributes": {"ignored": True} if ignored else {},
            }
            if frame_scores is not None:
                label["score"] = frame_scores[i]
            labels.append(label)
        item["labels"] = labels
        out.append(item)
    write_json_atomic(out, path)


def split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(labels JSON, images folder) of `split` in a BDD100K download laid out as released."""
    root = Path(root)
    candidates = [
        root / "labels" / "det_20" / f"det_{split}.json",
        root / "labels" / f"bdd100k_labels_images_{split}.json",
    ]
    labels = next((p for p in candidates if p.is_file()), None)
    if labels is None:
        looked = " or ".join(str(p) for p in candidates)
        raise FileNotFoundError(f"BDD100K {split!r} labels not found: looked for {looked}")
    images = root / "images" / "100k" / split
    if not images.is_dir():
        raise FileNotFoundError(f"BDD100K {split!r} images not found: looked for folder {images}")
    return labels, images


def dataset_digest(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> str:
    """Short sha256 over the bytes of the label files (folders: their *.json, sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    outer = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            inner = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    inner.update(chunk)
            outer.update(inner.digest())
    return outer.hexdigest()[:12]


# ---------------------------------------------------------------------------
# parsing


class _Parser(LabelParser):
    """The Scalabel / BDD100K shapes; a COCO document goes to `alod.data.coco.read_coco`."""

    # -- documents -----------------------------------------------------------

    def document(self, data: Any, file: str) -> None:
        if isinstance(data, list):
            for i, fr in enumerate(data):
                self.frame(fr, file, i)
        elif is_coco_document(data):
            read_coco(self, data, file)
        elif isinstance(data, dict) and "frames" in data and "name" in data:
            self.frame(data, file, 0)  # 2018 per-image file
        elif isinstance(data, dict) and "frames" in data:
            frames = data["frames"]
            if frames is None:
                frames = []
            if not isinstance(frames, list):
                self.problem(file, None, None, "frames", f"expected a list, got {json_kind(frames)}")
                return
            for i, fr in enumerate(frames):
                self.frame(fr, file, i)
        else:
            keys = f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else ""
            self.problem(
                file, None, None, None,
                f"wrong top-level type: got {json_kind(data)}{keys}; expected a JSON list of "
                "frames, a Scalabel dataset {frames: [...]}, a 2018 per-image object "
                "{name, frames} or COCO {images, annotations, categories}",
            )

    # -- Scalabel / 2018 frames ---------------------------------------------

    def frame(self, fr: Any, file: str, i: int) -> None:
        if not isinstance(fr, dict):
            self.problem(file, f"#{i}", None, None, f"frame is not a JSON object ({json_kind(fr)})")
            return
        per_image_2018 = "labels" not in fr and "frames" in fr
        name = fr.get("name")
        if per_image_2018 and isinstance(name, str) and name and not PurePosixPath(name).suffix:
            # 2018 per-image files name the frame without the image's extension.
            name += ".jpg"
        raw_name = name
        name = self.register_name(name, file, i)
        # Problems in a rejected frame still point at it by its (bad) name if it has one.
        where = name or (raw_name if isinstance(raw_name, str) and raw_name else f"#{i}")

        if per_image_2018:
            labels, fld = self.objects_2018(fr["frames"], file, where)
        else:
            labels, fld = fr.get("labels"), "labels"
        if labels is None:  # no key or null: a valid frame without boxes
            labels = []
        if not isinstance(labels, list):
            self.problem(file, where, None, fld, f"expected a list or null, got {json_kind(labels)}")
            labels = []

        raw = RawFrame(name=where, file=file)
        size = fr.get("size")
        if isinstance(size, dict):
            w, h = size.get("width"), size.get("height")
            if is_positive_int(w) and is_positive_int(h):
                raw.width, raw.height = int(w), int(h)
            else:
                self.problem(file, where, None, "size", f"expected positive width/height, got {size!r}")
        attrs = fr.get("attributes")
        if isinstance(attrs, dict):
            raw.attributes = attrs

        for j, lab in enumerate(labels):
            self.scalabel_label(lab, raw, j)
        if name is not None:
            self.frames.append(raw)

    def objects_2018(self, subframes: Any, file: str, where: str) -> tuple[Any, str]:
        if not isinstance(subframes, list):
            self.problem(file, where, None, "frames", f"expected a list, got {json_kind(subframes)}")
            return [], "frames"
        objects: list = []
        for k, sub in enumerate(subframes):
            if not isinstance(sub, dict):
                self.problem(file, where, None, f"frames[{k}]", "expected an object")
                continue
            objs = sub.get("objects")
            if objs is None:
                continue
            if not isinstance(objs, list):
                self.problem(file, where, None, f"frames[{k}].objects", "expected a list")
                continue
            objects.extend(objs)
        return objects, "frames[].objects"

    def scalabel_label(self, lab: Any, raw: RawFrame, j: int) -> None:
        file, where = raw.file, raw.name
        if not isinstance(lab, dict):
            self.problem(file, where, j, None, f"label is not a JSON object ({json_kind(lab)})")
            return
        box = lab.get("box2d")
        if box is None:  # lanes, drivable area, poly2d-only labels
            self.report.skipped[NO_BOX2D] += 1
            return
        ok = True
        coords: list[float] = []
        if not isinstance(box, dict):
            self.problem(file, where, j, "box2d", f"expected an object with x1, y1, x2, y2, got {json_kind(box)}")
            ok = False
        else:
            for c in _COORDS:
                if c not in box:
                    self.problem(file, where, j, f"box2d.{c}", "missing coordinate")
                    ok = False
                elif not is_number(box[c]):
                    self.problem(file, where, j, f"box2d.{c}", f"coordinate must be a finite number, got {box[c]!r}")
                    ok = False
                else:
                    coords.append(float(box[c]))

        score = self.score(lab, file, where, j)
        if score is False:
            ok = False
        if ok:
            x1, y1, x2, y2 = coords
            for lo, hi, a, b in ((x1, x2, "x1", "x2"), (y1, y2, "y1", "y2")):
                # Ground truth must not be inverted. A predicted box may be narrower
                # than one pixel (inclusive x2 just below x1): it only needs a
                # positive exclusive width.
                bad = hi + 1.0 <= lo if score is not None else hi < lo
                if bad:
                    self.problem(file, where, j, f"box2d.{b}", f"inverted box: {b}={hi!r} < {a}={lo!r}")
                    ok = False

        attrs = lab.get("attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        # `ignored` is how save_frames marks ignore regions; `crowd` as in Scalabel.
        flags = [self.flag(attrs, key, file, where, j) for key in ("ignored", "crowd")]
        resolved = self.category(lab.get("category"), file, where, j, "category")
        if resolved is None:
            return
        if not ok or resolved is False or None in flags:
            return
        cat_id, ignore, raw_name = resolved
        ignore = ignore or any(flags)
        x1, y1, x2, y2 = coords
        self.add(raw, j, (x1, y1, x2 + 1.0, y2 + 1.0), cat_id, ignore, score, raw_name)

    def flag(self, attrs: dict, key: str, file: str, where: str, j: int) -> bool | None:
        """A boolean label attribute read as the official evaluator reads it (Scalabel's
        pydantic model, then bool()): true/false, 0/1 and the strings pydantic takes for
        booleans. None (reported) for any other value, which the toolkit would read by
        accident (e.g. 0.5 as false, "0.0" as false, "x" as true)."""
        v = attrs.get(key)
        if v is None or isinstance(v, bool):
            return bool(v)
        if isinstance(v, (int, float)) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.lower() in _BOOL_STRINGS:
            return _BOOL_STRINGS[v.lower()]
        self.problem(file, where, j, f"attributes.{key}",
                     f"must be true or false (or 0/1), got {v!r}")
        return None

# Strings pydantic v1 (Scalabel's label model) reads as booleans.
_BOOL_STRINGS = {**dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
                 **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False)}


def _inclusive(box: np.ndarray) -> str:
    """An exclusive xyxy box as the inclusive box2d a user wrote (for messages)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return f"({x1:g}, {y1:g}, {x2 - 1:g}, {y2 - 1:g})"


_FAILED = object()  # _read_json could not parse; a problem is recorded


def _read_json(path: Path, parser: _Parser) -> Any:
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        parser.problem(file, None, None, None, f"cannot read: {e.strerror or e}")
        return _FAILED
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        parser.problem(file, None, None, None, f"not UTF-8 text: invalid byte at offset {e.start}")
        return _FAILED
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        parser.problem(file, None, None, None, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}")
        return _FAILED
    except RecursionError:
        parser.problem(file, None, None, None, "invalid JSON: nested too deeply")
        return _FAILED


def _load(
    path: Path,
    *,
    skip_unknown: bool,
    image_size: tuple[int, int] | None,
    images: Path | None = None,
    exact: bool = False,
) -> tuple[list[Frame], LoadReport]:
    report = LoadReport()
    parser = _Parser(report, skip_unknown)
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            parser.problem(str(path), None, None, None, "folder holds no *.json label files")
    elif path.exists():
        files = [path]
    else:
        files = []
        parser.problem(str(path), None, None, None, "no such file or folder")
    for f in files:
        report.files.append(str(f))
        data = _read_json(f, parser)
        if data is not _FAILED:
            parser.document(data, str(f))
    parser.report_unknown()

    sizes: dict[str, tuple[int, int]] = {}
    if images is not None:
        sizes = _image_sizes(parser.frames, images, report)
    frames = _finalize(parser.frames, report, image_size, sizes, exact=exact)
    return frames, report


def _image_sizes(raws: list[RawFrame], root: Path, report: LoadReport) -> dict[str, tuple[int, int]]:
    from alod.data.images import ImageReadError, check_image_file

    if not root.is_dir():
        report.problems.append(Problem(str(root), None, None, None, "image folder not found"))
        return {}
    sizes = {}
    for raw in raws:
        try:
            p = resolve_image_path(root, raw.name)
        except ValueError as e:
            report.problems.append(Problem(raw.file, raw.name, None, "name", str(e)))
            continue
        if not p.is_file():
            report.problems.append(Problem(raw.file, raw.name, None, "name", f"{MISSING_IMAGE}: {p}"))
            continue
        try:
            sizes[raw.name] = check_image_file(p)  # header and completeness, no decode
        except ImageReadError as e:
            report.problems.append(Problem(raw.file, raw.name, None, "name", f"{UNREADABLE_IMAGE}: {e}"))
    return sizes


def _finalize(
    raws: list[RawFrame],
    report: LoadReport,
    image_size: tuple[int, int] | None,
    header_sizes: dict[str, tuple[int, int]],
    *,
    exact: bool = False,
) -> list[Frame]:
    # A file with any scored label is a prediction file: every label needs a score.
    scored = any(s is not None for raw in raws for s in raw.scores)
    frames = []
    for raw in raws:
        if raw.name in header_sizes:
            size = header_sizes[raw.name]
        elif raw.width is not None:
            size = (raw.width, raw.height)
        else:
            size = image_size
        boxes = np.asarray(raw.boxes, dtype=np.float64).reshape(-1, 4)
        positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if exact:  # the official evaluator keeps every box as written
            positive[:] = True
        outside = np.zeros(len(boxes), dtype=bool)
        if size is not None and not exact:
            w, h = size
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            clipped = boxes.copy()
            np.clip(clipped[:, 0::2], 0, w, out=clipped[:, 0::2])
            np.clip(clipped[:, 1::2], 0, h, out=clipped[:, 1::2])
            inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
            outside = positive & ~inside
            moved = inside & (clipped != boxes).any(axis=1)
            report.clipped += int(moved.sum())
            kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
            for k in np.flatnonzero(moved & (kept_area < (1.0 - MOSTLY_OUTSIDE) * area)):
                report.warnings.append(
                    Problem(
                        raw.file, raw.name, raw.index[k], "box2d",
                        f"box {_inclusive(boxes[k])} is mostly outside the {w}x{h} image; "
                        f"clipped to {_inclusive(clipped[k])}",
                    )
                )
            boxes = clipped
        keep = positive & ~outside
        labels = np.asarray(raw.labels, dtype=np.int64)
        ignore = np.asarray(raw.ignore, dtype=bool)
        for k in np.flatnonzero(~keep):
            reason = OUTSIDE_IMAGE if outside[k] else ZERO_AREA
            report.skipped[reason] += 1
            detail = f" ({size[0]}x{size[1]})" if outside[k] else ""
            report.warnings.append(
                Problem(raw.file, raw.name, raw.index[k], "box2d", f"{reason}{detail}; dropped")
            )
        scores = None
        if scored:
            for k, s in enumerate(raw.scores):
                if s is None:
                    report.problems.append(
                        Problem(raw.file, raw.name, raw.index[k], "score", "missing score (other labels have one)")
                    )
            scores = np.asarray([s if s is not None else np.nan for s in raw.scores], dtype=np.float32)[keep]
        for k in np.flatnonzero(keep):
            if ignore[k]:
                report.ignored_per_category[raw.raw_names[k]] += 1
            else:
                report.boxes_per_category[categories.ID_TO_NAME[int(labels[k])]] += 1
        frame = Frame(
            name=raw.name,
            boxes=boxes[keep].astype(np.float32),
            labels=labels[keep],
            ignore=ignore[keep],
            scores=scores,
            width=None if size is None else int(size[0]),
            height=None if size is None else int(size[1]),
            attributes=raw.attributes,
        )
        if exact:
            # Set after construction: Frame casts to float32, which moves coordinates by up to
            # 1e-4 px and merges scores that differ beyond the 7th digit (reordering ties).
            frame.boxes = boxes[keep]
            if scored:
                frame.scores = np.asarray([s if s is not None else np.nan for s in raw.scores],
                                          dtype=np.float64)[keep]
        frames.append(frame)
    report.frames = len(frames)
    return frames
