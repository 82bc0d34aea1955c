import numpy as np
import pytest

from alod.active.samplers import (
    REDUCTIONS,
    SAMPLERS,
    SamplerContext,
    class_weights,
    distinct_detections,
    entropy_of,
    get_sampler,
    labeled_class_counts,
    reduce,
    score_images,
)
from alod.data.frames import Frame


def _det(n, score=0.9):
    return Frame("x", np.tile([0, 0, 10, 10], (n, 1)), np.ones(n), scores=np.full(n, score))


def test_boxcount_counts_boxes_over_threshold():
    dets = [_det(0), _det(3), _det(2, score=0.01)]
    scores = score_images("boxcount", dets, SamplerContext(score_threshold=0.05))
    assert scores.tolist() == [0.0, 3.0, 0.0]


def test_random_is_seeded_per_cycle():
    dets = [Frame(f"im{i}") for i in range(50)]
    a = score_images("random", dets, SamplerContext(seed=1, cycle=2))
    assert np.array_equal(a, score_images("random", dets, SamplerContext(seed=1, cycle=2)))
    assert not np.array_equal(a, score_images("random", dets, SamplerContext(seed=1, cycle=3)))


def test_unknown_sampler_lists_available():
    with pytest.raises(ValueError, match="boxcount"):
        get_sampler("nope")


def test_every_sampler_has_description():
    assert all(s.description for s in SAMPLERS.values())


# --------------------------------------------------------------------------- probability-based samplers

C1 = 4  # classes incl. background in the hand-made detections


def _row(*p):
    return np.asarray(p, dtype=np.float32)


CONFIDENT = _row(0.01, 0.97, 0.01, 0.01)
UNIFORM = _row(0.25, 0.25, 0.25, 0.25)
TIED = _row(0.02, 0.49, 0.47, 0.02)  # two classes tie: low margin


def _pdet(rows, name="x", scores=None, proposal=None, boxes=None, feature=None, **extra):
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, C1)
    n = len(rows)
    labels = rows[:, 1:].argmax(1) + 1 if n else np.zeros(0)
    if scores is None:
        scores = rows[np.arange(n), labels] if n else np.zeros(0)
    if boxes is None:
        boxes = np.array([[10 * i, 0, 10 * i + 8, 8] for i in range(n)], np.float32).reshape(-1, 4)
    return Frame(name, boxes, labels, scores=scores, probs=rows,
                 proposal=np.arange(n) if proposal is None else proposal,
                 image_feature=feature, extra=extra)


@pytest.mark.parametrize("name", ["entropy", "least_confidence", "margin"])
def test_confident_detection_scores_below_uncertain_one(name):
    dets = [_pdet([CONFIDENT]), _pdet([UNIFORM]), _pdet([TIED])]
    s = score_images(name, dets)
    assert s[0] < s[1] and s[0] < s[2]
    assert (s >= 0).all() and (s <= 1).all()
    if name == "margin":
        assert s[2] > s[0] and s[2] > 0.9  # the tie is what margin looks for
    if name == "entropy":
        assert s[1] == pytest.approx(1.0)  # normalised by log(C+1)


def test_reductions_shared_and_selectable_by_suffix():
    v = np.array([0.1, 0.9, 0.5, 0.3])
    assert reduce(v, "max") == pytest.approx(0.9)
    assert reduce(v, "mean") == pytest.approx(0.45)
    assert reduce(v, "sum") == pytest.approx(1.8)
    assert reduce(v, "topk_mean", k=2) == pytest.approx(0.7)
    assert reduce(v[:1], "topk_mean", k=3) == pytest.approx(0.1)
    assert all(reduce(np.zeros(0), r) == 0.0 for r in REDUCTIONS)
    # one very uncertain box among confident ones vs. several moderately uncertain
    spiky = _pdet([UNIFORM] + [CONFIDENT] * 5, name="spiky")
    even = _pdet([_row(0.1, 0.6, 0.2, 0.1)] * 4, name="even")
    assert score_images("entropy", [spiky, even]).argmax() == 0  # max
    assert score_images("entropy:mean", [spiky, even]).argmax() == 1
    assert score_images("entropy:sum", [spiky, even]).argmax() == 1
    assert get_sampler("entropy:topk_mean").reduction == "topk_mean"
    assert get_sampler("entropy:mean").needs_probs
    with pytest.raises(ValueError, match="reduction"):
        get_sampler("entropy:median")
    with pytest.raises(ValueError, match="no reduction"):
        get_sampler("random:max")


UNCERTAINTY = ["entropy", "least_confidence", "margin", "mc_dropout", "consistency"]


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_images_without_detections_score_zero_and_rank_last(name):
    empty = Frame("empty", scores=np.zeros(0), probs=np.zeros((0, C1)), proposal=np.zeros(0),
                  extra={"mc_probs": np.zeros((3, 0, C1)), "tta": {"hflip": _tta([])}})
    busy = _pdet([UNIFORM], name="busy", mc_probs=np.stack([[CONFIDENT], [_row(0.01, 0.01, 0.97, 0.01)]]),
                 tta={"hflip": _tta([UNIFORM], boxes=[[50, 50, 60, 60]])})
    s = score_images(name, [empty, busy])
    assert s[0] == 0.0 and s[1] > 0.0


def test_scoring_view_dedups_proposals_and_applies_threshold():
    # two detections from proposal 0 (the 0.5 and 0.3 one), one from proposal 1
    rows = [_row(0.1, 0.5, 0.3, 0.1), _row(0.1, 0.5, 0.3, 0.1), CONFIDENT]
    det = _pdet(rows, scores=np.array([0.5, 0.3, 0.97]), proposal=np.array([0, 0, 1]))
    assert distinct_detections(det).tolist() == [2, 0]  # by score, one per proposal
    assert distinct_detections(det, 0.6).tolist() == [2]
    one = _pdet(rows[:1])
    # the duplicate does not count twice in a sum
    assert score_images("entropy:sum", [det])[0] == pytest.approx(
        score_images("entropy:sum", [one])[0] + float(entropy_of(CONFIDENT[None])[0]))
    assert score_images("entropy", [det], SamplerContext(score_threshold=0.6))[0] == pytest.approx(
        float(entropy_of(CONFIDENT[None])[0]))


def test_missing_probabilities_explain_how_to_get_them():
    plain = Frame("p", np.zeros((1, 4)), [1], scores=[0.9])
    with pytest.raises(ValueError, match="detections_for"):
        score_images("entropy", [plain])


def test_mc_dropout_is_mutual_information():
    agree = _pdet([UNIFORM], name="agree", mc_probs=np.stack([[UNIFORM]] * 4))
    other = _row(0.01, 0.01, 0.97, 0.01)
    disagree = _pdet([UNIFORM], name="disagree", mc_probs=np.stack([[CONFIDENT], [other]] * 2))
    s = score_images("mc_dropout", [agree, disagree])
    assert s[0] == pytest.approx(0.0, abs=1e-9)  # uniform but agreeing: no epistemic uncertainty
    assert s[1] > 0.3
    assert get_sampler("mc_dropout").stochastic_passes > 1


def _tta(rows, boxes=None, scores=None):
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, C1)
    n = len(rows)
    labels = rows[:, 1:].argmax(1) + 1 if n else np.zeros(0, np.int64)
    return {"boxes": np.asarray(boxes if boxes is not None else np.zeros((0, 4)), np.float32).reshape(-1, 4),
            "labels": labels, "scores": rows[np.arange(n), labels] if scores is None else scores,
            "probs": rows, "proposal": np.arange(n)}


def test_consistency_flip_agreement_scores_low():
    box = [[10, 10, 50, 40]]
    same = _pdet([CONFIDENT], name="same", boxes=box, tta={"hflip": _tta([CONFIDENT], box)})
    moved = _pdet([CONFIDENT], name="moved", boxes=box,
                  tta={"hflip": _tta([_row(0.01, 0.01, 0.97, 0.01)], [[25, 10, 65, 40]])})
    lost = _pdet([CONFIDENT], name="lost", boxes=box, tta={"hflip": _tta([])})
    s = score_images("consistency", [same, moved, lost])
    assert s[0] == pytest.approx(0.0, abs=1e-6)
    assert 0.3 < s[1] < 1.0
    assert s[2] == pytest.approx(1.0)
    assert get_sampler("consistency").needs_tta == ("hflip",)


# --------------------------------------------------------------------------- set-based samplers


def _feat_det(name, feature, rows=(CONFIDENT,)):
    return _pdet(list(rows), name=name, feature=np.asarray(feature, np.float32))


def test_coreset_picks_far_apart_features_away_from_labeled():
    a = [1, 0, 0]
    b = [0, 1, 0]
    c = [0, 0, 1]
    dets = [_feat_det("a1", a), _feat_det("a2", [0.99, 0.05, 0]), _feat_det("b1", b),
            _feat_det("b2", [0.05, 0.99, 0]), _feat_det("c1", c), _feat_det("lab", a)]
    ctx = SamplerContext(labeled=frozenset({"lab"}), budget=2)
    s = score_images("coreset", dets, ctx)
    top2 = {dets[i].name[0] for i in np.argsort(-s)[:2]}
    assert top2 == {"b", "c"}  # one from each cluster not yet covered
    assert s[5] == -1.0  # labeled never picked
    assert len(set(s[:5])) == 5  # a strict order: the ranking is the selection order
    # labeled features given directly instead of as detections: same choice
    s2 = score_images("coreset", dets[:5], SamplerContext(labeled_features=np.array([a], np.float32)))
    assert {dets[i].name[0] for i in np.argsort(-s2)[:2]} == {"b", "c"}


def test_hybrid_budget_sized_diverse_and_class_balanced():
    common, rare = 1, 3
    row_common = _row(0.2, 0.5, 0.1, 0.2)  # same entropy, label 1 (common)
    row_rare = _row(0.2, 0.2, 0.1, 0.5)  # same entropy, label 3 (rare)
    assert entropy_of(row_common[None]) == pytest.approx(entropy_of(row_rare[None]))
    rng = np.random.default_rng(0)
    dets = [_feat_det(f"common{i}", rng.normal(size=8), [row_common]) for i in range(12)]
    dets += [_feat_det(f"rare{i}", rng.normal(size=8), [row_rare]) for i in range(8)]
    dets[13].image_feature = dets[12].image_feature.copy()  # rare1 duplicates rare0
    counts = {common: 500, rare: 5}
    ctx = SamplerContext(budget=2, class_counts=counts)
    s = score_images("hybrid", dets, ctx)
    top = [dets[i].name for i in np.argsort(-s)[:2]]
    assert len(top) == 2 and all(n.startswith("rare") for n in top)  # rare class weighted up
    # first pick = most uncertain candidate (rare0, ties by order); its duplicate is not the second
    assert top[0] == "rare0" and top[1] != "rare1"
    w = class_weights(counts, C1)
    assert w[rare] > w[common] and w[0] == 1.0
    # without class counts the two kinds tie on uncertainty: no preference for rare
    plain = score_images("hybrid", dets, SamplerContext(budget=2))
    assert not all(dets[i].name.startswith("rare") for i in np.argsort(-plain)[:8])


def test_labeled_class_counts_ignore_regions_excluded():
    f = Frame("g", np.zeros((3, 4)), [1, 3, 3], ignore=[False, False, True])
    assert labeled_class_counts([f, f]) == {1: 2, 3: 2}


def test_sampler_declares_needs():
    assert not get_sampler("random").needs_predictions
    assert not get_sampler("boxcount").needs_detailed
    for name in ("entropy", "least_confidence", "margin", "mc_dropout", "consistency", "hybrid"):
        assert get_sampler(name).needs_probs and get_sampler(name).needs_detailed
    assert get_sampler("coreset").needs_features and get_sampler("coreset").needs_labeled
    assert get_sampler("hybrid").set_based and get_sampler("coreset").set_based


def test_random_scores_do_not_depend_on_sharding():
    dets = [Frame(f"im{i}") for i in range(20)]
    whole = score_images("random", dets, SamplerContext(seed=3, cycle=1))
    halves = np.concatenate([score_images("random", dets[:7], SamplerContext(seed=3, cycle=1)),
                             score_images("random", dets[7:], SamplerContext(seed=3, cycle=1))])
    assert np.array_equal(whole, halves)


def test_a_new_sampler_is_one_registry_entry_with_its_measure(monkeypatch):
    """Measure apart from reduction: one entry gives the score, its reduction variants and what pictures draw."""
    from alod import plots
    from alod.active import samplers as S

    def top_probability(frame, idx, ctx):  # a made-up measure: the top class probability itself
        return frame.probs[idx].max(-1).astype(np.float64)

    entry = S._reducible("confident", "top class probability per detection", top_probability, "P")
    monkeypatch.setitem(S.SAMPLERS, "confident", entry)
    probs = np.array([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    frame = Frame("a", np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=np.float32),
                  np.array([1, 1, 2]), scores=np.array([0.9, 0.5, 0.6]), probs=probs, proposal=np.arange(3))
    assert score_images("confident", [frame]) == pytest.approx([0.9])
    assert score_images("confident:mean", [frame]) == pytest.approx([(0.9 + 0.5 + 0.6) / 3])
    idx, values, tag = plots.driver_detections(frame, sampler="confident", k=2)
    assert tag == "P" and idx.tolist() == [0, 2] and values == pytest.approx([0.9, 0.6])
    with pytest.raises(ValueError, match="takes no reduction"):
        get_sampler("coreset:mean")
