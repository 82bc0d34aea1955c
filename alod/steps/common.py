"""Pieces every step shares: data resolution, devices, sharded inference."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from alod.data.bdd100k import dataset_digest, load_labels, split_paths
from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.engine import distributed
from alod.engine.infer import predict


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
               images: str | Path | None = None, skip_unknown: bool = False) -> Split:
    """A split from a BDD100K-layout root (`--data`) or explicit label/image paths."""
    if labels is None or images is None:
        if data is None:
            raise ValueError(f"give --data ROOT or both label and image paths for the {split} split")
        root_labels, root_images = split_paths(Path(data), split)
        labels = labels or root_labels
        images = images or root_images
    frames, _report = load_labels(Path(labels), skip_unknown=skip_unknown)
    return Split(split, frames, Path(labels), Path(images), dataset_digest([Path(labels)]))


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def subset(frames: Sequence[Frame], fraction: float, seed: int) -> list[Frame]:
    """A seeded fraction of the frames, in their original order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = max(1, round(len(frames) * fraction))
    keep = np.sort(np.random.default_rng(seed).choice(len(frames), size=n, replace=False))
    return [frames[i] for i in keep]


def predict_all(model: torch.nn.Module, frames: Sequence[Frame], images: Path, *,
                device: torch.device, batch_size: int, workers: int) -> list[Frame]:
    """Predictions for every frame, in input order, on every rank.

    Under torchrun each rank predicts a contiguous shard (no image twice, none
    dropped, whatever the sizes) and the shards are gathered back in order.
    """
    env = distributed.DistEnv.from_env()
    world, rank = env.world_size, env.rank
    bounds = np.linspace(0, len(frames), world + 1).astype(int)
    shard = list(frames[bounds[rank]:bounds[rank + 1]])
    dataset = DetectionDataset(shard, images, train=False)
    mine = list(predict(model, dataset, device=device, batch_size=batch_size, workers=workers,
                        progress=distributed.is_main_process()))
    if world == 1:
        return mine
    gathered = distributed.all_gather_object(mine)
    return [f for part in gathered for f in part]
