"""The checking pass every label format shares: frames collected while parsing, every problem located.

A format's reader (Scalabel frames in `alod.data.bdd100k`, COCO in
`alod.data.coco`) walks its document and hands what it finds to one
`LabelParser`: frame names (safe, unique), category names (the det_20 schema,
unknown ones counted), scores and boxes. Problems are collected, not raised,
so a user sees every defect at once, each naming file, frame, label index and
field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from alod.data import categories
from alod.data.frames import LoadReport, Problem

__all__ = ["LabelParser", "RawFrame", "is_number", "is_positive_int", "json_kind", "unsafe_name_reason"]


@dataclass
class RawFrame:
    """A frame while parsing: lists are cheaper to append to than arrays."""

    name: str
    file: str
    width: int | None = None
    height: int | None = None
    attributes: dict = field(default_factory=dict)
    boxes: list = field(default_factory=list)  # xyxy exclusive, float
    labels: list = field(default_factory=list)
    ignore: list = field(default_factory=list)
    scores: list = field(default_factory=list)  # float or None
    index: list = field(default_factory=list)  # label index in the source, for messages
    raw_names: list = field(default_factory=list)


def unsafe_name_reason(name: str) -> str | None:
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or (
        PureWindowsPath(name).drive
    ):
        return "is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "escapes the image root via '..'"
    return None


def is_number(v: Any) -> bool:
    # bool is an int subclass but never a valid coordinate.
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def json_kind(v: Any) -> str:
    """What a JSON value is, in words for messages ("an object", "a list", ...)."""
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(v), type(v).__name__)


class LabelParser:
    def __init__(self, report: LoadReport, skip_unknown: bool):
        self.report = report
        self.skip_unknown = skip_unknown
        self.frames: list[RawFrame] = []
        self.seen: dict[str, str] = {}  # frame name -> where first seen
        # unknown category -> [file, frame, label index, count]
        self.unknown: dict[str, list] = {}

    def problem(self, file, frame, label_index, fld, message) -> None:
        self.report.problems.append(Problem(file, frame, label_index, fld, message))

    def register_name(self, name: Any, file: str, i: int) -> str | None:
        """Validate a frame name; the name to use, or None if the frame is unusable."""
        where = f"#{i}"
        if not isinstance(name, str) or not name:
            self.problem(file, where, None, "name", f"frame has no string 'name' (got {name!r})")
            return None
        reason = unsafe_name_reason(name)
        if reason:
            self.problem(file, name, None, "name", f"frame name {reason}")
            return None
        here = f"{file} frame #{i}"
        if name in self.seen:
            self.problem(
                file, name, None, "name",
                f"duplicate frame name: first at {self.seen[name]}, again at {here}",
            )
            return None
        self.seen[name] = here
        return name

    def score(self, lab: dict, file: str, where: str, j: int):
        """float, None (no score) or False (invalid, reported)."""
        s = lab.get("score")
        if s is None:
            return None
        if not is_number(s):
            self.problem(file, where, j, "score", f"score must be a finite number, got {s!r}")
            return False
        return float(s)

    def category(self, name: Any, file: str, where: str, j: int, fld: str):
        """(id, ignore, raw name); None when skipped; False when invalid (reported)."""
        if not isinstance(name, str):
            self.problem(file, where, j, fld, f"missing or not a string (got {name!r})")
            return False
        resolved = categories.resolve(name)
        if resolved is None:
            if self.skip_unknown:
                self.report.skipped[f"unknown category {name!r}"] += 1
            entry = self.unknown.setdefault(name, [file, where, j, 0])
            entry[3] += 1
            return None if self.skip_unknown else False
        return resolved[0], resolved[1], name

    def add(self, raw: RawFrame, j, box, cat_id, ignore, score, raw_name) -> None:
        raw.boxes.append(box)
        raw.labels.append(cat_id)
        raw.ignore.append(bool(ignore))
        raw.scores.append(score)
        raw.index.append(j)
        raw.raw_names.append(raw_name)

    # -- end of pass -------------------------------------------------------------

    def report_unknown(self) -> None:
        known = ", ".join(sorted(categories.NAME_TO_ID) + sorted(categories.NAME_MAPPING) + sorted(categories.IGNORE_MAPPING))
        for name, (file, where, j, count) in self.unknown.items():
            msg = f"unknown category {name!r} ({count} label(s), first here)"
            if self.skip_unknown:
                self.report.warnings.append(Problem(file, where, j, "category", msg + "; skipped"))
            else:
                self.problem(file, where, j, "category", f"{msg}; known: {known}; or pass skip_unknown to skip them")
