"""Predictions for arbitrary image files and evaluation of a weight file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.engine.infer import predict


def predict_files(model: torch.nn.Module, paths: Sequence[str | Path], *, device: torch.device,
                  batch_size: int = 8, workers: int = 0) -> list[Frame]:
    """Predict every image file; frame names are the paths relative to their common folder."""
    if not paths:
        raise ValueError("no images given")
    resolved = [Path(p).resolve() for p in paths]
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) not found, e.g. {missing[0]}")
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    frames = [Frame(name=str(p.relative_to(root))) for p in resolved]
    dataset = DetectionDataset(frames, root, train=False)
    return list(predict(model, dataset, device=device, batch_size=batch_size, workers=workers))
