"""Batched, streaming inference: one prediction `Frame` per image, in order.

Predictions are yielded as they come, so scoring a 70 000-image pool keeps only
a few batches in memory. Boxes are in original image coordinates (the dataset
never resizes; the detector maps its outputs back to the input size).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from alod.data.dataset import DetectionDataset, collate_fn
from alod.data.frames import Frame
from alod.engine import distributed
from alod.engine.distributed import resolve_device
from alod.models import unwrap
from alod.engine import progress_bars


@dataclass
class InferenceStats:
    """Throughput of a `predict` pass, filled in as it runs.

    `seconds` counts time spent inside predict (reading, the forward pass,
    copying results to the host), not time the consumer spends between
    frames, so images_per_second is the model's rate, not the caller's."""

    images: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


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
    stats: InferenceStats | None = None,
) -> Iterator[Frame]:
    """Yield Frame(name, boxes, labels, scores, width, height) per dataset image,
    in dataset order. The dataset should be built with train=False (no flip).

    With `stats`, images and seconds are added to it batch by batch (read it
    once the generator is exhausted for the pass's images/s).

    Inference runs in float32 on every device: on an H100, bf16 autocast ranked
    R50-FPN 1280x720 images no faster (81 vs 80 img/s) and moved boxes by pixels."""
    device = resolve_device(device)
    loader = inference_loader(dataset, device=device, batch_size=batch_size, workers=workers)
    model = unwrap(model).to(device).eval()
    nb = device.type == "cuda"
    with tqdm(total=len(dataset), desc="predict", unit="img", disable=not progress_bars(progress),
              mininterval=2.0) as bar:
        batches = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            images, targets = batch
            with torch.inference_mode():
                outputs = model([im.to(device, non_blocking=nb) for im in images])
            # The whole batch is copied to the host before the first yield, so the
            # timing ends here and excludes the consumer's work between frames.
            frames = [
                Frame(
                    name=dataset.frames[target["image_id"]].name,
                    boxes=out["boxes"].float().cpu().numpy(),
                    labels=out["labels"].cpu().numpy(),
                    scores=out["scores"].float().cpu().numpy(),
                    width=int(image.shape[-1]),
                    height=int(image.shape[-2]),
                )
                for image, target, out in zip(images, targets, outputs)
            ]
            if stats is not None:
                stats.images += len(frames)
                stats.seconds += time.perf_counter() - t0
            yield from frames
            bar.update(len(images))


def predict_all(model: nn.Module, frames: Sequence[Frame], images: Path, *,
                device: torch.device, batch_size: int, workers: int) -> list[Frame]:
    """Plain predictions for every frame, in input order, on every rank (sharded under torchrun)."""
    dataset = DetectionDataset(distributed.shard(frames), images, train=False)
    return distributed.gather(list(predict(model, dataset, device=device, batch_size=batch_size, workers=workers,
                                           progress=distributed.is_main_process())))
