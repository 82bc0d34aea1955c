"""Batched, streaming inference: one prediction `Frame` per image, in order.

Predictions are yielded as they come, so scoring a 70 000-image pool keeps only
a few batches in memory. Boxes are in original image coordinates (the dataset
never resizes; the detector maps its outputs back to the input size).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from alod.data.dataset import DetectionDataset, collate_fn
from alod.data.frames import Frame
from alod.engine.train import resolve_device
from alod.models import unwrap


def inference_loader(dataset: DetectionDataset, *, device: torch.device, batch_size: int, workers: int,
                     caller: str = "predict") -> DataLoader:
    """An ordered loader over an evaluation dataset (no flips), pinned memory on CUDA."""
    if getattr(dataset, "train", False):
        raise ValueError(f"{caller}() needs a DetectionDataset built with train=False (no random flips)")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=device.type == "cuda")


def predict(
    model: nn.Module,
    dataset: DetectionDataset,
    *,
    device: str | torch.device | None = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    progress: bool = False,
) -> Iterator[Frame]:
    """Yield Frame(name, boxes, labels, scores, width, height) per dataset image,
    in dataset order. The dataset should be built with train=False (no flip)."""
    device = resolve_device(device)
    loader = inference_loader(dataset, device=device, batch_size=batch_size, workers=workers)
    model = unwrap(model).to(device).eval()
    nb = device.type == "cuda"
    with tqdm(total=len(dataset), desc="predict", unit="img", disable=not progress, mininterval=2.0) as bar:
        for images, targets in loader:
            with torch.inference_mode():
                outputs = model([im.to(device, non_blocking=nb) for im in images])
            for image, target, out in zip(images, targets, outputs):
                yield Frame(
                    name=dataset.frames[target["image_id"]].name,
                    boxes=out["boxes"].float().cpu().numpy(),
                    labels=out["labels"].cpu().numpy(),
                    scores=out["scores"].float().cpu().numpy(),
                    width=int(image.shape[-1]),
                    height=int(image.shape[-2]),
                )
            bar.update(len(images))
