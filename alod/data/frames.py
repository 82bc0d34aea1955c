"""In-memory label model shared by every part of alod.

A `Frame` is one image with its boxes as numpy arrays (cheap for 70 000 frames
and about 1.3 M boxes). Boxes are in torch convention: xyxy with x2, y2
*exclusive*, i.e. BDD100K's inclusive box2d plus one on x2 and y2.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def _rows(values, n: int, what: str) -> np.ndarray:
    """(n, K) float32; a 1-D input is split into n rows."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(n, -1) if n else arr.reshape(0, 0)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"Frame.{what} has shape {arr.shape}; expected one row per box ({n})")
    return arr


@dataclass
class Frame:
    """One image's labels.

    boxes: (N, 4) float32 xyxy, x2/y2 exclusive, pixel units.
    labels: (N,) int64 det_20 ids 1..10.
    ignore: (N,) bool; True for ignore regions (iscrowd=1 in evaluation).
    scores: (N,) float32 for predictions, None for ground truth.
    width/height: image size when known (COCO files, decoded images), else None.
    attributes: frame attributes (weather, timeofday, scene) when present.

    Optional detail from `alod.active.detections.predict_detailed` (None on
    ground truth and on plain predictions), aligned row by row with the boxes:
    probs: (N, C+1) float32 softmax over all classes, column 0 = background.
    proposal: (N,) int64 index of the RPN proposal each detection came from;
        one proposal can yield several detections (one per class over threshold).
    features: (N, D) float32 box-head feature of each detection's proposal.
    image_feature: (D,) float32 image descriptor (box-head features pooled over
        all proposals, weighted by foreground probability).
    extra: further per-image outputs keyed by name ("mc_mutual_information",
        "mc_probs", "tta"; see predict_detailed).
    """

    name: str
    boxes: np.ndarray = field(default_factory=empty_boxes)
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))
    scores: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    attributes: dict = field(default_factory=dict)
    probs: np.ndarray | None = None
    proposal: np.ndarray | None = None
    features: np.ndarray | None = None
    image_feature: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.ignore is None or len(self.ignore) != len(self.labels):
            self.ignore = np.zeros(len(self.labels), dtype=bool)
        self.ignore = np.asarray(self.ignore, dtype=bool).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if self.probs is not None:
            self.probs = _rows(self.probs, len(self.labels), "probs")
        if self.proposal is not None:
            self.proposal = np.asarray(self.proposal, dtype=np.int64).reshape(-1)
        if self.features is not None:
            self.features = _rows(self.features, len(self.labels), "features")
        if self.image_feature is not None:
            self.image_feature = np.asarray(self.image_feature, dtype=np.float32).reshape(-1)
        if self.extra is None:
            self.extra = {}

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_trainable(self) -> int:
        """Boxes that are training targets (ignore regions excluded)."""
        return int((~self.ignore).sum())

    def scoring_at_least(self, threshold: float) -> "Frame":
        """A plain prediction frame with only the detections scoring >= threshold."""
        keep = self.scores >= threshold
        return Frame(name=self.name, boxes=self.boxes[keep], labels=self.labels[keep], scores=self.scores[keep],
                     width=self.width, height=self.height)


@dataclass(frozen=True)
class Problem:
    """One defect in a label file, located precisely enough to fix by hand."""

    file: str
    frame: str | None
    label_index: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.frame is not None:
            where.append(f"frame {self.frame!r}")
        if self.label_index is not None:
            where.append(f"label {self.label_index}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return ": ".join([", ".join(where), self.message])


@dataclass
class LoadReport:
    """What a load kept, skipped and why; nothing is dropped without a count here."""

    files: list[str] = field(default_factory=list)
    frames: int = 0
    boxes_per_category: Counter = field(default_factory=Counter)  # det_20 name -> kept boxes
    ignored_per_category: Counter = field(default_factory=Counter)  # raw name -> ignore regions
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    clipped: int = 0  # boxes kept but clipped to their image's size
    problems: list[Problem] = field(default_factory=list)  # errors that make the data unusable
    warnings: list[Problem] = field(default_factory=list)  # counted skips worth a look

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def boxes(self) -> int:
        return sum(self.boxes_per_category.values())


class LabelError(ValueError):
    """Label input that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = len(self.problems) - 50
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} problem(s) in label input:\n{shown}{tail}")
