import numpy as np
import pytest

from alod.active.samplers import SAMPLERS, SamplerContext, get_sampler, score_images
from alod.data.frames import Frame


def _det(n, score=0.9):
    return Frame("x", np.tile([0, 0, 10, 10], (n, 1)), np.ones(n), scores=np.full(n, score))


def test_boxcount_counts_boxes_over_threshold():
    dets = [_det(0), _det(3), _det(2, score=0.01)]
    scores = score_images("boxcount", dets, SamplerContext(score_threshold=0.05))
    assert scores.tolist() == [0.0, 3.0, 0.0]


def test_random_is_seeded_per_cycle():
    dets = [_det(1)] * 50
    a = score_images("random", dets, SamplerContext(seed=1, cycle=2))
    assert np.array_equal(a, score_images("random", dets, SamplerContext(seed=1, cycle=2)))
    assert not np.array_equal(a, score_images("random", dets, SamplerContext(seed=1, cycle=3)))


def test_unknown_sampler_lists_available():
    with pytest.raises(ValueError, match="boxcount"):
        get_sampler("nope")


def test_every_sampler_has_description():
    assert all(s.description for s in SAMPLERS.values())
