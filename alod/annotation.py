"""Human annotators in the loop: export a selected batch, import what comes back.

The `files` oracle of `cycle` writes, for the images it selected, an image list,
a COCO file and Label Studio tasks, both carrying the current model's
predictions as pre-annotations (annotators correct boxes instead of drawing
them). Labels come back as the annotation tools write them (Label Studio JSON,
JSON-MIN and COCO, CVAT COCO 1.0 and CVAT for images 1.1: see `alod.annotation_formats`) or in any
format `load_labels` reads (BDD100K / Scalabel JSON, a per-image folder, COCO),
and are merged into a `LabelStore`, the run's record of every label bought.

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
from urllib.parse import quote

import numpy as np

from alod.annotation_formats import SelectedNames, ToolExport, read_export
from alod.data import categories
from alod.data.bdd100k import load_labels, resolve_image_path, save_frames
from alod.data.coco import coco_categories
from alod.data.frames import Frame
from alod.data.images import inspect_image
from alod.fileio import write_json_atomic, write_text_atomic

BOX_TOLERANCE = 0.5  # pixels: labels equal after a round trip through COCO floats count as identical
# What `export_batch` writes for each batch, in this order.
EXPORT_FILES = ("images.txt", "coco.json", "label_studio.json", "label_studio_config.xml")
LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's local files serving


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
    put in front of each (URL-encoded) name in the Label Studio tasks' `image`:
    the URL the images are served from, e.g. `https://host/images/`, or, with
    Label Studio's local files serving and the BDD100K layout,
    `/data/local-files/?d=images/100k/train/` (see `local_files_setup`). The
    task's `name` is the plain image name, which import-labels matches on.
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
        task = {"data": {"image": f"{url_prefix}{quote(name)}", "name": name}}
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


def local_files_setup(image_root: str | Path, data_root: str | Path | None = None) -> dict[str, str]:
    """How Label Studio serves these images from disk: its two settings, the Local Files
    storage path to add to the project (without syncing it: the tasks come from
    label_studio.json) and the matching `--annotation-url-prefix`. The document root is
    `data_root` when the images lie under it (the BDD100K root), else the images' parent."""
    images = Path(image_root).resolve()
    root = Path(data_root).resolve() if data_root is not None else images.parent
    if not images.is_relative_to(root) or images == root:
        root = images.parent
    rel = images.relative_to(root).as_posix()
    return {"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root),
            "storage_path": str(images),
            "url_prefix": f"{LOCAL_FILES_URL}{quote(rel)}/"}


def empty_prefix_warning(image_root: str | Path, data_root: str | Path | None = None) -> str:
    """What to tell a user whose Label Studio tasks carry bare image names."""
    s = local_files_setup(image_root, data_root)
    return ("warning: annotation_url_prefix is empty, so each Label Studio task's image is a bare file name, "
            "which the labeling page cannot load ('There was an issue loading URL from $image value'). "
            "Serve the images, e.g. with Label Studio's local files: start it with "
            f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={s['LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT']}, "
            f"add a Local Files source storage with path {s['storage_path']} to the project (do not sync it), "
            f"and run the cycle with --annotation-url-prefix '{s['url_prefix']}' (README: Label Studio)")


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
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # why they were skipped -> how many
    format: str = ""  # the format the file was read as
    empty: list[str] = field(default_factory=list)  # images that came back annotated with no boxes
    not_annotated: list[str] = field(default_factory=list)  # in the file, but nobody annotated them: not merged
    cancelled: int = 0  # Label Studio annotations skipped by the annotator (no label)

    def summary(self) -> str:
        lines = [f"read as {self.format}"] if self.format else []
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
            why = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped_reasons.items()))
            parts.append(f"{self.skipped_boxes} box(es) or shape(s) skipped while loading ("
                         + (why or "see `alod data check`") + ")")
        lines.append(", ".join(parts))
        lines.append(f"{len(self.empty)} image(s) came back with no boxes (annotated as nothing there)"
                     + (": " + ", ".join(repr(n) for n in self.empty[:5]) if self.empty else ""))
        if self.not_annotated or self.cancelled:
            skipped = f" ({self.cancelled} annotation(s) skipped in Label Studio)" if self.cancelled else ""
            lines.append(f"{len(self.not_annotated)} image(s) in the file were not annotated{skipped}: they stay "
                         "without labels" + (", e.g. " + ", ".join(repr(n) for n in self.not_annotated[:5])
                                             if self.not_annotated else ""))
        for cycle, names in sorted(self.missing.items()):
            lines.append(f"cycle {cycle}: {len(names)} selected image(s) still without labels, e.g. "
                         + ", ".join(repr(n) for n in names[:5]))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"format": self.format, "added": self.added, "identical": self.identical, "replaced": self.replaced,
                "renamed": self.renamed, "empty": self.empty, "not_annotated": self.not_annotated,
                "cancelled": self.cancelled,
                "missing": {str(k): v for k, v in self.missing.items()}, "skipped_boxes": self.skipped_boxes,
                "skipped_reasons": self.skipped_reasons}


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
                               "file names): " + ", ".join(repr(n) for n in duplicated[:10]) + "; one image under "
                               "two names (e.g. images/<name> and <name>), or a task annotated twice? Keep one; "
                               "nothing was imported")
    unrequested = [f.name for f in incoming if f.name not in requested]
    conflicts = [f.name for f in incoming
                 if f.name in store and not same_labels(store.frames[f.name], f)]
    problems = []
    if unrequested:
        problems.append(f"{len(unrequested)} image(s) in {source} were never selected for labeling "
                        f"(label only the exported images): " + ", ".join(repr(n) for n in unrequested[:10]))
    if conflicts and not replace:
        problems.append(f"{len(conflicts)} image(s) in {source} already have different labels "
                        f"(pass --replace true to overwrite them): " + ", ".join(repr(n) for n in conflicts[:10]))
    if problems:
        raise LabelImportError("; ".join(problems) + "; nothing was imported")
    for frame in incoming:
        clean = Frame(name=frame.name, boxes=frame.boxes, labels=frame.labels, ignore=frame.ignore,
                      width=frame.width, height=frame.height, attributes=frame.attributes)
        if not len(frame):
            report.empty.append(frame.name)
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
    """Annotation tools often export `images/<name>` or a flattened path: an unselected name that
    ends in exactly one selected image's name (or file name) is that image (`SelectedNames`)."""
    selected = SelectedNames(requested)
    out, renamed = [], {}
    for frame in incoming:
        match = selected.match(frame.name)
        if match is not None and match != frame.name:
            renamed[frame.name] = match
            frame = dataclasses.replace(frame, name=match)
        out.append(frame)
    return out, renamed


def missing_labels(store: LabelStore, requested: Mapping[str, int]) -> dict[int, list[str]]:
    missing: dict[int, list[str]] = {}
    for name, cycle in requested.items():
        if name not in store:
            missing.setdefault(cycle, []).append(name)
    return missing


def read_labels_file(path: str | Path, requested: Iterable[str] = ()) -> ToolExport:
    """The labels in `path`, in any supported format (annotation tools' exports included);
    `requested`: the selected images, onto which tool-written file names are matched."""
    return read_export(path, list(requested))
