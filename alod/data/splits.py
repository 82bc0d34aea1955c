"""A dataset split as every step loads it: frames, where the labels and images are, a digest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alod.data.bdd100k import dataset_digest, load_labels, split_paths
from alod.data.frames import Frame


@dataclass
class Split:
    name: str
    frames: list[Frame]
    labels: Path
    images: Path
    digest: str

    def by_name(self) -> dict[str, Frame]:
        return {f.name: f for f in self.frames}


def load_split(data: str | Path | None, split: str, *, labels: str | Path | None = None,
               images: str | Path | None = None, skip_unknown: bool = False,
               exact: bool | None = None) -> Split:
    """A split from a BDD100K-layout root (`--data`) or explicit label/image paths.

    exact: load the boxes as written, unclipped and in float64, as the official
    evaluator scores them (`load_labels(exact=True)`); by default every split but
    `train` (the ones alod evaluates on) is loaded so.
    """
    if exact is None:
        exact = split != "train"
    if labels is None or images is None:
        if data is None:
            raise ValueError(f"give --data ROOT or both label and image paths for the {split} split")
        root_labels, root_images = split_paths(Path(data), split)
        labels = labels or root_labels
        images = images or root_images
    frames, _report = load_labels(Path(labels), skip_unknown=skip_unknown, exact=exact)
    return Split(split, frames, Path(labels), Path(images), dataset_digest([Path(labels)]))
