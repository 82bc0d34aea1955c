"""Human annotators in the loop: export a selected batch, import what comes back.

The `files` oracle of `cycle` writes, for the images it selected, an image list,
a COCO file and Label Studio tasks, both carrying the current model's
predictions as pre-annotations (annotators correct boxes instead of drawing
them). Labels come back in any format `load_labels` reads (BDD100K / Scalabel
JSON, a per-image folder, COCO: Label Studio's COCO export works) and are
merged into a `LabelStore`, the run's record of every label bought.

Merging never loses or silently replaces a label: an import that names an image
nobody asked for, or that contradicts a label already imported, is refused as a
whole (nothing merged) with every offending image named; re-importing the same
labels is a no-op; a partial import is kept and the missing images are listed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alod.data import categories
from alod.data.bdd100k import load_labels, resolve_image_path, save_frames
from alod.data.coco import coco_categories
from alod.data.frames import Frame
from alod.data.images import inspect_image
from alod.fileio import write_json_atomic, write_text_atomic

BOX_TOLERANCE = 0.5  # pixels: labels equal after a round trip through COCO floats count as identical


class LabelImportError(ValueError):
    """An import refused as a whole; nothing was merged."""


# --- export ------------------------------------------------------------------


def export_batch(
    names: Sequence[str],
    image_root: str | Path,
    out_dir: str | Path,
    *,
    predictions: Mapping[str, Frame] | None = None,
    url_prefix: str = "",
    model_version: str = "",
) -> dict[str, Path]:
    """Write `images.txt`, `coco.json` and `label_studio.json` for `names` into `out_dir`.

    Predictions (when given) become COCO annotations with a `score` and Label
    Studio `predictions`; ignore regions are never predicted. `url_prefix` is
    put in front of each name in the Label Studio tasks (e.g. the URL the
    images are served from, or `/data/local-files/?d=images/`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, annotations, tasks = [], [], []
    id_to_name = categories.ID_TO_NAME
    for image_id, name in enumerate(names, start=1):
        path = resolve_image_path(image_root, name)
        width, height = inspect_image(path.read_bytes(), path)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        pred = (predictions or {}).get(name)
        results = []
        if pred is not None and len(pred):
            scores = pred.scores if pred.scores is not None else np.ones(len(pred), np.float32)
            for (x1, y1, x2, y2), label, score in zip(pred.boxes.tolist(), pred.labels.tolist(), scores.tolist()):
                w, h = x2 - x1, y2 - y1
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0, "score": score})
                results.append({
                    "id": f"{image_id}-{len(results)}", "from_name": "label", "to_name": "image",
                    "type": "rectanglelabels", "original_width": width, "original_height": height,
                    "image_rotation": 0, "score": score,
                    "value": {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * w / width,
                              "height": 100 * h / height, "rotation": 0,
                              "rectanglelabels": [id_to_name[int(label)]]}})
        task = {"data": {"image": f"{url_prefix}{name}", "name": name}}
        if results:
            task["predictions"] = [{"model_version": model_version, "result": results,
                                    "score": float(np.mean([r["score"] for r in results]))}]
        tasks.append(task)
    paths = {
        "images": write_text_atomic("".join(f"{n}\n" for n in names), out / "images.txt"),
        "coco": write_json_atomic({"images": images, "annotations": annotations,
                                   "categories": coco_categories()}, out / "coco.json"),
        "label_studio": write_json_atomic(tasks, out / "label_studio.json", indent=1),
    }
    (out / "label_studio_config.xml").write_text(label_studio_config())
    paths["label_studio_config"] = out / "label_studio_config.xml"
    return paths


def label_studio_config() -> str:
    """The Label Studio labeling config matching the exported tasks (det_20 classes)."""
    labels = "\n".join(f'    <Label value="{c["name"]}"/>' for c in coco_categories())
    return (f'<View>\n  <Image name="image" value="$image"/>\n'
            f'  <RectangleLabels name="label" toName="image">\n{labels}\n  </RectangleLabels>\n</View>\n')


# --- the store of bought labels ---------------------------------------------


class LabelStore:
    """Every label imported into a run: image name -> Frame (boxes, classes, ignore regions)."""

    def __init__(self, frames: Iterable[Frame] = ()):
        self.frames: dict[str, Frame] = {f.name: f for f in frames}

    def __contains__(self, name: str) -> bool:
        return name in self.frames

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path) -> Path:
        save_frames(self.frames.values(), path)  # atomic: a kill leaves the old or the new file
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "LabelStore":
        frames, _ = load_labels(path)
        return cls(frames)


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    identical: list[str] = field(default_factory=list)  # already imported with the same labels
    replaced: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # name in the file -> selected image it matched
    missing: dict[int, list[str]] = field(default_factory=dict)  # cycle -> selected images still unlabeled
    skipped_boxes: int = 0  # dropped while loading (zero area, clipped away): counted, never silent

    def summary(self) -> str:
        parts = [f"{len(self.added)} image(s) added"]
        if self.identical:
            parts.append(f"{len(self.identical)} already imported with identical labels (unchanged)")
        if self.replaced:
            parts.append(f"{len(self.replaced)} replaced")
        if self.renamed:
            first = next(iter(self.renamed.items()))
            parts.append(f"{len(self.renamed)} matched to a selected image by file name "
                         f"(e.g. {first[0]!r} -> {first[1]!r})")
        if self.skipped_boxes:
            parts.append(f"{self.skipped_boxes} box(es) skipped while loading (see `alod data check`)")
        lines = [", ".join(parts)]
        for cycle, names in sorted(self.missing.items()):
            lines.append(f"cycle {cycle}: {len(names)} selected image(s) still without labels, e.g. "
                         + ", ".join(repr(n) for n in names[:5]))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"added": self.added, "identical": self.identical, "replaced": self.replaced,
                "renamed": self.renamed,
                "missing": {str(k): v for k, v in self.missing.items()}, "skipped_boxes": self.skipped_boxes}


def same_labels(a: Frame, b: Frame, tol: float = BOX_TOLERANCE) -> bool:
    """Same boxes (within `tol` px), classes and ignore flags, in any order."""
    if len(a) != len(b):
        return False
    if not len(a):
        return True

    def rows(f: Frame) -> np.ndarray:
        table = np.column_stack([f.labels, f.ignore, f.boxes]).astype(np.float64)
        return table[np.lexsort(table.T[::-1])]

    ra, rb = rows(a), rows(b)
    return bool(np.array_equal(ra[:, :2], rb[:, :2]) and np.abs(ra[:, 2:] - rb[:, 2:]).max() <= tol)


def merge_labels(
    store: LabelStore,
    incoming: Sequence[Frame],
    requested: Mapping[str, int],
    *,
    replace: bool = False,
    source: str = "the import",
) -> ImportReport:
    """Merge `incoming` into `store` (in place) or raise `LabelImportError`, merging nothing.

    `requested` maps every image selected so far to its cycle. Refused: images
    that were never selected; images whose new labels differ from the ones
    already imported (unless `replace`). Kept unchanged: re-imported identical
    labels. The report lists, per cycle, selected images still without labels.
    """
    report = ImportReport()
    incoming, report.renamed = _match_by_file_name(incoming, requested)
    duplicated = sorted(n for n, k in Counter(f.name for f in incoming).items() if k > 1)
    if duplicated:
        raise LabelImportError(f"{source} labels {len(duplicated)} selected image(s) twice (after matching "
                               "file names): " + ", ".join(repr(n) for n in duplicated[:10]) + "; nothing was imported")
    unrequested = [f.name for f in incoming if f.name not in requested]
    conflicts = [f.name for f in incoming
                 if f.name in store and not same_labels(store.frames[f.name], f)]
    problems = []
    if unrequested:
        problems.append(f"{len(unrequested)} image(s) in {source} were never selected for labeling "
                        f"(label only the exported images): " + ", ".join(repr(n) for n in unrequested[:10]))
    if conflicts and not replace:
        problems.append(f"{len(conflicts)} image(s) in {source} already have different labels "
                        f"(pass --replace to overwrite them): " + ", ".join(repr(n) for n in conflicts[:10]))
    if problems:
        raise LabelImportError("; ".join(problems) + "; nothing was imported")
    for frame in incoming:
        clean = Frame(name=frame.name, boxes=frame.boxes, labels=frame.labels, ignore=frame.ignore,
                      width=frame.width, height=frame.height, attributes=frame.attributes)
        if frame.name not in store:
            report.added.append(frame.name)
        elif frame.name in conflicts:
            report.replaced.append(frame.name)
        else:
            report.identical.append(frame.name)
            continue
        store.frames[frame.name] = clean
    report.missing = missing_labels(store, requested)
    return report


def _match_by_file_name(incoming: Sequence[Frame], requested: Mapping[str, int]) -> tuple[list[Frame], dict]:
    """Annotation tools often export `images/<name>` or a flattened path: an unselected name whose
    last path part is the last part of exactly one selected image is that image."""
    by_base: dict[str, list[str]] = {}
    for name in requested:
        by_base.setdefault(name.rsplit("/", 1)[-1], []).append(name)
    out, renamed = [], {}
    for frame in incoming:
        candidates = by_base.get(frame.name.rsplit("/", 1)[-1], [])
        if frame.name not in requested and len(candidates) == 1:
            renamed[frame.name] = candidates[0]
            frame = dataclasses.replace(frame, name=candidates[0])
        out.append(frame)
    return out, renamed


def missing_labels(store: LabelStore, requested: Mapping[str, int]) -> dict[int, list[str]]:
    missing: dict[int, list[str]] = {}
    for name, cycle in requested.items():
        if name not in store:
            missing.setdefault(cycle, []).append(name)
    return missing


def read_labels_file(path: str | Path) -> tuple[list[Frame], int]:
    """Frames from any supported label format, and the number of boxes skipped while loading."""
    frames, report = load_labels(path)
    return frames, int(sum(report.skipped.values()))
