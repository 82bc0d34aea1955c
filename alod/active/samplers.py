"""Acquisition functions: per-image scores from a detector's predictions.

A sampler turns the detections of every pool image into one score per image;
higher means "label first". Ranks follow from scores (see `protocol.py`), so
every sampler works with both protocols and in both `rank` and `cycle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from alod.data.frames import Frame


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler may use beyond the detections."""

    seed: int = 0
    cycle: int = 0
    score_threshold: float = 0.0  # detections below this score are not counted
    names: Sequence[str] = ()  # image names, aligned with the detections


@dataclass(frozen=True)
class Sampler:
    name: str
    description: str
    score: Callable[[Sequence[Frame], SamplerContext], np.ndarray]
    needs_predictions: bool = True
    extra: dict = field(default_factory=dict)


def _random(detections: Sequence[Frame], ctx: SamplerContext) -> np.ndarray:
    # Seeded by (seed, cycle) so each cycle draws afresh but reproducibly.
    rng = np.random.default_rng([ctx.seed, ctx.cycle])
    return rng.random(len(detections))


def _boxcount(detections: Sequence[Frame], ctx: SamplerContext) -> np.ndarray:
    counts = np.empty(len(detections), dtype=np.float64)
    for i, det in enumerate(detections):
        scores = det.scores if det.scores is not None else np.ones(len(det), dtype=np.float32)
        counts[i] = float((scores >= ctx.score_threshold).sum())
    return counts


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("random", "uniform random scores (the baseline every sampler must beat)", _random,
                needs_predictions=False),
        Sampler("boxcount", "number of predicted boxes (the original study's score); "
                "images with no detections score 0", _boxcount),
    )
}


def get_sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}"
        ) from None


def score_images(
    name: str, detections: Sequence[Frame], ctx: SamplerContext | None = None
) -> np.ndarray:
    ctx = ctx or SamplerContext()
    scores = np.asarray(get_sampler(name).score(detections, ctx), dtype=np.float64)
    if scores.shape != (len(detections),):
        raise RuntimeError(f"sampler {name!r} returned {scores.shape} scores for {len(detections)} images")
    return scores
