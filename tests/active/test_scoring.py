"""Every registered sampler, end to end: tiny detector -> detections_for -> score_images."""

import numpy as np
import pytest

from alod.active.protocol import make_ranking
from alod.active.samplers import SAMPLERS, SamplerContext, get_sampler, score_images
from alod.active.scoring import detections_for, frames_to_score


@pytest.mark.parametrize("name", sorted(SAMPLERS) + ["entropy:topk_mean", "hybrid:mean"])
def test_every_sampler_scores_a_synthetic_pool(name, synthetic_pool, tiny_model):
    frames, root = synthetic_pool
    labeled = {frames[0].name, frames[1].name}
    sampler = get_sampler(name)
    todo = frames_to_score(sampler, frames, labeled)
    assert len(todo) == (6 if sampler.needs_labeled else 4)
    dets = detections_for(sampler, tiny_model, todo, root, batch_size=3)
    assert [d.name for d in dets] == [f.name for f in todo]
    if sampler.needs_probs:
        assert all(d.probs is not None for d in dets)
    if sampler.stochastic_passes:
        assert all(d.extra["mc_mutual_information"].shape == (len(d),) for d in dets)
    if sampler.needs_tta:
        assert all("hflip" in d.extra["tta"] for d in dets)
    names = [d.name for d in dets]
    ctx = SamplerContext(seed=1, cycle=2, score_threshold=0.05, names=names, labeled=frozenset(labeled),
                         budget=2, horizon=4)
    scores = score_images(name, dets, ctx)
    assert scores.shape == (len(dets),) and np.isfinite(scores).all()
    unlabeled = [n for n in names if n not in labeled]
    ranking = make_ranking(names, scores, batches=2, batch_images=2)
    if sampler.set_based:
        # labeled images rank last; the top `budget` are unlabeled, chosen jointly
        assert set(ranking["image"].head(4)) == set(unlabeled)
        assert len(set(scores)) == len(scores) - len(labeled) + 1


def test_plain_samplers_skip_detailed_inference(synthetic_pool, tiny_model):
    frames, root = synthetic_pool
    dets = detections_for("boxcount", tiny_model, frames[:2], root)
    assert all(d.probs is None for d in dets) and all(len(d) for d in dets)
    assert detections_for("random", None, frames[:2], root) == list(frames[:2])
    with pytest.raises(ValueError, match="needs predictions"):
        detections_for("entropy", None, frames[:2], root)
