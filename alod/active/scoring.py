"""The inference a sampler needs, in one call (single process; callers shard).

`detections_for(sampler, model, frames, image_root, ...)` runs plain
`alod.engine.infer.predict` for samplers that need only boxes and scores,
`alod.active.detections.predict_detailed` (class probabilities, image features,
dropout passes, flip TTA) for the others, and nothing at all for samplers that
need no predictions (`random`: the input frames come back as they are).
`frames_to_score` says which frames to pass: the unlabeled pool, plus the
labeled images for samplers that measure distance to the labeled set.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import torch
from torch import nn

from alod.active.detections import predict_detailed
from alod.active.samplers import Sampler, get_sampler
from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.engine.infer import predict


def _sampler(sampler: str | Sampler) -> Sampler:
    return get_sampler(sampler) if isinstance(sampler, str) else sampler


def frames_to_score(sampler: str | Sampler, pool: Sequence[Frame], labeled: Collection[str]) -> list[Frame]:
    """Frames to run inference on: unlabeled pool frames (in pool order), then,
    for samplers with `needs_labeled`, the labeled ones too (their names go in
    `SamplerContext.labeled`; they score -1 and are never picked)."""
    labeled = set(labeled)
    unlabeled = [f for f in pool if f.name not in labeled]
    if not _sampler(sampler).needs_labeled:
        return unlabeled
    return unlabeled + [f for f in pool if f.name in labeled]


def detections_for(
    sampler: str | Sampler,
    model: nn.Module | None,
    frames: Sequence[Frame],
    image_root: str | Path,
    *,
    device: str | torch.device | None = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> list[Frame]:
    """One Frame of detections per input frame, in order, carrying what
    `sampler` needs (see `Sampler.needs_*`). `seed` seeds the dropout passes."""
    s = _sampler(sampler)
    if not s.needs_predictions:
        return list(frames)
    if model is None:
        raise ValueError(f"sampler {s.name!r} needs predictions, but no model was given")
    dataset = DetectionDataset(list(frames), image_root, train=False)
    if not s.needs_detailed:
        return list(predict(model, dataset, device=device, batch_size=batch_size, workers=workers,
                            progress=progress))
    return list(
        predict_detailed(
            model, dataset, device=device, batch_size=batch_size, workers=workers,
            stochastic_passes=s.stochastic_passes, tta=s.needs_tta, seed=seed, progress=progress,
        )
    )
