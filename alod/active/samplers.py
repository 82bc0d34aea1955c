"""Acquisition functions: per-image scores from a detector's predictions.

A sampler turns the detections of every pool image into one score per image;
higher means "label first". Ranks follow from scores (see `protocol.py`), so
every sampler works with both protocols and in both `rank` and `cycle`.

Names. `SAMPLERS` holds one entry per sampler. Samplers built on a
per-detection uncertainty (`entropy`, `least_confidence`, `margin`,
`mc_dropout`, `consistency`, `hybrid`) reduce their detections' values to one
number per image with a shared reduction: ``max`` (the default), ``mean``,
``sum`` or ``topk_mean`` (mean of the `SamplerContext.topk` largest, default
3). Another reduction is picked with a suffix: ``entropy:mean``,
``margin:topk_mean``; `get_sampler` understands these names.

Detections. Per-detection measures use the "scoring view" of an image
(`distinct_detections`): detections with score >= `ctx.score_threshold`, one
per RPN proposal (the highest-scoring one; torchvision emits one detection per
class over its threshold, so a doubtful proposal would otherwise count twice).
Probabilities come from `alod.active.detections.predict_detailed`; a sampler
says what it needs (`needs_probs`, `needs_features`, `needs_tta`,
`stochastic_passes`, `needs_labeled`) and `alod.active.scoring.detections_for`
runs the matching inference.

Images with no detections. Every uncertainty sampler gives such an image the
score 0, the lowest any image can get, so it is labeled last. Reason: no
proposal reached the score threshold, i.e. the detector puts at least
1 - threshold of the mass on background for every proposal; the uncertainty
computed over those proposals would be close to 0 too. Such frames are mostly
empty roads: cheap to look at but they add few training boxes, and ranking
them first would fill budgets with them whenever the detector is confident.
(`boxcount` also gives 0.) `coreset` and `hybrid` use image features pooled
over all proposals, which exist whether or not anything was detected.

Set-based samplers (`coreset`, `hybrid`) choose a batch jointly. Their scores
are the selection order reversed (a distinct integer per image, top = first
pick), so the top `budget` of the ranking IS the chosen batch; images listed
in `ctx.labeled` score -1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from alod.data.frames import Frame


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler may use beyond the detections."""

    seed: int = 0
    cycle: int = 0
    score_threshold: float = 0.0  # detections below this score are not counted
    names: Sequence[str] = ()  # image names, aligned with the detections
    # Images already labeled. Set-based samplers treat detections of these
    # names as the labeled set (centres for k-center) and score them -1.
    labeled: frozenset[str] = frozenset()
    # Images the caller takes per selection (pool protocol: per_cycle; batches
    # protocol: batch_images). `hybrid` selects in rounds of this size.
    budget: int | None = None
    # How many top positions of the ranking will be used (pool: per_cycle;
    # batches: batches * batch_images). Set-based samplers select exactly up to
    # here and order the rest by a cheap fallback. None = the whole pool.
    horizon: int | None = None
    # Box counts per det_20 class id in the labeled set's ground truth (for the
    # class-balance weights of `hybrid`; see `labeled_class_counts`).
    class_counts: Mapping[int, int] | None = None
    # (M, D) image features of labeled images not among the detections.
    labeled_features: np.ndarray | None = None
    topk: int = 3  # k of the `topk_mean` reduction


@dataclass(frozen=True)
class Sampler:
    """One acquisition function and what its inference must provide.

    needs_predictions: run the detector at all (False: `random`).
    needs_probs: softmax rows per detection (`Frame.probs`, `Frame.proposal`).
    needs_features: pooled image features (`Frame.image_feature`).
    needs_tta: test-time augmentations whose outputs go in `Frame.extra["tta"]`.
    stochastic_passes: dropout passes, summarised per detection in
        `Frame.extra["mc_mutual_information"]` (raw passes: `extra["mc_probs"]`).
    needs_labeled: also wants the labeled images' detections (with their names
        in `ctx.labeled`) or `ctx.labeled_features` / `ctx.class_counts`.
    set_based: scores come from a joint selection sized by `ctx.budget`.
    reduction: per-detection -> per-image reduction, None if not applicable.
    measure, measure_tag: the per-detection measure the reduction summarises and its short
        name on pictures ("H" entropy, ...); None for samplers without one (random, coreset).
    """

    name: str
    description: str
    score: Callable[[Sequence[Frame], SamplerContext], np.ndarray]
    needs_predictions: bool = True
    extra: dict = field(default_factory=dict)
    needs_probs: bool = False
    needs_features: bool = False
    needs_tta: tuple[str, ...] = ()
    stochastic_passes: int = 0
    needs_labeled: bool = False
    set_based: bool = False
    reduction: str | None = None
    # The per-detection measure (frame, distinct detection indices, ctx) -> values, kept apart from the
    # per-image reduction (after baal's heuristics): the score reduces it, pictures draw it (`measure_tag`).
    measure: Callable[[Frame, np.ndarray, SamplerContext], np.ndarray] | None = None
    measure_tag: str = ""

    @property
    def needs_detailed(self) -> bool:
        """True when plain `predict` is not enough (use `predict_detailed`)."""
        return bool(self.needs_probs or self.needs_features or self.needs_tta or self.stochastic_passes)


# --------------------------------------------------------------------------- reductions


def _reduce_topk_mean(values: np.ndarray, k: int) -> float:
    k = max(1, min(int(k), len(values)))
    return float(np.sort(values)[-k:].mean())


REDUCTIONS: dict[str, Callable[[np.ndarray, int], float]] = {
    "max": lambda v, k: float(v.max()),
    "mean": lambda v, k: float(v.mean()),
    "sum": lambda v, k: float(v.sum()),
    "topk_mean": _reduce_topk_mean,
}
DEFAULT_REDUCTION = "max"


def reduce(values: np.ndarray, reduction: str = DEFAULT_REDUCTION, k: int = 3) -> float:
    """Per-detection values -> one image score; 0.0 for an image without detections."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return 0.0
    return REDUCTIONS[reduction](values, k)


# --------------------------------------------------------------------------- scoring view


def distinct_detections(frame: Frame, score_threshold: float = 0.0) -> np.ndarray:
    """Indices of the detections a sampler scores: score >= threshold, and of
    several detections from one proposal only the highest-scoring one.

    Sorted by decreasing score. Without `frame.proposal` every detection counts.
    """
    n = len(frame)
    scores = frame.scores if frame.scores is not None else np.ones(n, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= score_threshold]
    if frame.proposal is None or order.size == 0:
        return order
    _, first = np.unique(frame.proposal[order], return_index=True)
    return order[np.sort(first)]


def _require(frame: Frame, what: str, sampler: str) -> None:
    present = {
        "probs": frame.probs is not None,
        "image_feature": frame.image_feature is not None,
        "mc_probs": "mc_probs" in frame.extra or "mc_mutual_information" in frame.extra,
        "tta": "tta" in frame.extra,
    }[what]
    if not present and (what == "image_feature" or len(frame)):
        raise ValueError(
            f"sampler {sampler!r} needs {what!r} in the detections of {frame.name!r}; get detections "
            f"with alod.active.scoring.detections_for (it runs predict_detailed as the sampler needs)"
        )


# --------------------------------------------------------------------------- per-detection measures
# Each maps (frame, distinct indices, ctx) -> one value per index, higher = more
# uncertain, all in [0, 1].


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


def entropy_of(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row over the C+1 classes, divided by log(C+1)."""
    probs = np.asarray(probs)
    if probs.shape[-1] < 2:
        return np.zeros(probs.shape[:-1])
    return _entropy_rows(probs) / math.log(probs.shape[-1])


def least_confidence_of(probs: np.ndarray) -> np.ndarray:
    """1 - the largest class probability (background included)."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(-1)


def margin_of(probs: np.ndarray) -> np.ndarray:
    """1 - (top-1 minus top-2 probability): 1 when the two best classes tie."""
    top = np.sort(np.asarray(probs, dtype=np.float64), axis=-1)
    return 1.0 - (top[..., -1] - top[..., -2])


def mutual_information_of(mc_probs: np.ndarray) -> np.ndarray:
    """BALD: H(mean_t p_t) - mean_t H(p_t) per detection, divided by log(C+1).

    mc_probs: (T, N, C+1). 0 when all passes agree."""
    mc = np.asarray(mc_probs, dtype=np.float64)
    if mc.ndim != 3 or mc.shape[1] == 0:
        return np.zeros(mc.shape[1] if mc.ndim == 3 else 0)
    mi = _entropy_rows(mc.mean(0)) - _entropy_rows(mc).mean(0)
    return np.clip(mi / math.log(mc.shape[-1]), 0.0, 1.0)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence of rows, base 2 (in [0, 1])."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-12, 1.0)
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * np.log2(a / b)).sum(-1)
    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, 1.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _probs_measure(fn: Callable[[np.ndarray], np.ndarray], name: str):
    def measure(frame: Frame, idx: np.ndarray, ctx: SamplerContext) -> np.ndarray:
        if idx.size == 0:
            return np.zeros(0)
        _require(frame, "probs", name)
        return fn(frame.probs[idx])

    return measure


def _bald_measure(frame: Frame, idx: np.ndarray, ctx: SamplerContext) -> np.ndarray:
    if idx.size == 0:
        return np.zeros(0)
    _require(frame, "mc_probs", "mc_dropout")
    if "mc_mutual_information" in frame.extra:  # computed at inference (predict_detailed)
        return np.asarray(frame.extra["mc_mutual_information"], dtype=np.float64)[idx]
    return mutual_information_of(np.asarray(frame.extra["mc_probs"])[:, idx])


def inconsistency_of(frame: Frame, idx: np.ndarray, aug: Mapping[str, np.ndarray], score_threshold: float) -> np.ndarray:
    """CALD-style: each detection is matched to the augmented view's detection
    with the highest IoU; value = ((1 - IoU) + JS(class distributions)) / 2.
    A detection with no overlapping counterpart gets 1 (IoU 0, JS 1)."""
    if idx.size == 0:
        return np.zeros(0)
    view = Frame(frame.name, aug["boxes"], aug["labels"], scores=aug["scores"], probs=aug["probs"],
                 proposal=aug.get("proposal"))
    aidx = distinct_detections(view, score_threshold)
    if aidx.size == 0:
        return np.ones(idx.size)
    iou = box_iou(frame.boxes[idx], view.boxes[aidx])
    match = iou.argmax(1)
    best = iou[np.arange(idx.size), match]
    js = js_divergence(frame.probs[idx], view.probs[aidx][match])
    js = np.where(best > 0, js, 1.0)
    return ((1.0 - best) + js) / 2.0


def _consistency_measure(frame: Frame, idx: np.ndarray, ctx: SamplerContext) -> np.ndarray:
    if idx.size == 0:
        return np.zeros(0)
    _require(frame, "probs", "consistency")
    _require(frame, "tta", "consistency")
    views = list(frame.extra["tta"].values())
    return np.mean([inconsistency_of(frame, idx, v, ctx.score_threshold) for v in views], axis=0)


def _per_image(measure, reduction: str):
    def score(detections: Sequence[Frame], ctx: SamplerContext) -> np.ndarray:
        out = np.zeros(len(detections), dtype=np.float64)
        for i, det in enumerate(detections):
            idx = distinct_detections(det, ctx.score_threshold)
            out[i] = reduce(measure(det, idx, ctx), reduction, ctx.topk)
        return out

    return score


# --------------------------------------------------------------------------- class balance


def labeled_class_counts(frames: Sequence[Frame]) -> dict[int, int]:
    """Trainable ground-truth boxes per class id over labeled frames (for ctx.class_counts)."""
    counts: Counter = Counter()
    for f in frames:
        counts.update(int(c) for c in f.labels[~f.ignore])
    return dict(counts)


def class_weights(counts: Mapping[int, int] | None, num_classes: int) -> np.ndarray:
    """Weight per class id 0..num_classes-1 (0 = background, weight 1), rare classes higher.

    w_c = sqrt((total + K) / (K * (n_c + 1))) over the K foreground classes, then
    scaled to mean 1: inverse frequency, add-one smoothed, square-root tempered
    so one unseen class cannot swamp the uncertainty. No counts: all ones.
    """
    w = np.ones(num_classes, dtype=np.float64)
    if not counts or num_classes < 2:
        return w
    k = num_classes - 1
    n = np.zeros(k)
    for c, v in counts.items():
        if 1 <= int(c) <= k:
            n[int(c) - 1] += float(v)
    fg = np.sqrt((n.sum() + k) / (k * (n + 1.0)))
    w[1:] = fg / fg.mean()
    return w


def _num_classes(detections: Sequence[Frame]) -> int:
    for d in detections:
        if d.probs is not None and d.probs.shape[1]:
            return int(d.probs.shape[1])
    return 0


def _weighted_entropy(detections: Sequence[Frame], ctx: SamplerContext, reduction: str) -> np.ndarray:
    """Per image: reduction of entropy x class weight of the detection's label."""
    labeled = set(ctx.labeled)
    c = _num_classes(detections)
    counts = ctx.class_counts
    if counts is None and labeled:  # fall back to predicted classes on labeled images
        counts = Counter()
        for d in detections:
            if d.name in labeled:
                counts.update(int(x) for x in d.labels[distinct_detections(d, ctx.score_threshold)])
    weights = class_weights(counts, c) if c else np.ones(1)
    out = np.zeros(len(detections))
    for i, det in enumerate(detections):
        idx = distinct_detections(det, ctx.score_threshold)
        if idx.size == 0:
            continue
        _require(det, "probs", "hybrid")
        labels = np.clip(det.labels[idx], 0, len(weights) - 1)
        out[i] = reduce(entropy_of(det.probs[idx]) * weights[labels], reduction, ctx.topk)
    return out


# --------------------------------------------------------------------------- k-center greedy

_PROJECTED_DIM = 128


def _feature_matrix(detections: Sequence[Frame], extra: np.ndarray | None, sampler: str) -> np.ndarray:
    rows = []
    for det in detections:
        _require(det, "image_feature", sampler)
        rows.append(det.image_feature)
    x = np.stack(rows).astype(np.float64) if rows else np.zeros((0, 0))
    if extra is not None and len(extra):
        extra = np.asarray(extra, dtype=np.float64).reshape(len(extra), -1)
        x = np.concatenate([x.reshape(-1, extra.shape[1]), extra])
    if x.size == 0:
        return x.reshape(len(x), -1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if x.shape[1] > _PROJECTED_DIM:  # Johnson-Lindenstrauss: distances kept, k-center cheaper
        proj = np.random.default_rng(0).standard_normal((x.shape[1], _PROJECTED_DIM)) / math.sqrt(_PROJECTED_DIM)
        x = x @ proj
    return x


def _min_sq_dist(x: np.ndarray, centers: np.ndarray, chunk: int = 4096) -> np.ndarray:
    out = np.full(len(x), np.inf)
    if len(centers) == 0 or len(x) == 0:
        return out
    xx = (x * x).sum(1)
    for s in range(0, len(centers), chunk):
        c = centers[s : s + chunk]
        d = xx[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
        out = np.minimum(out, np.clip(d, 0.0, None).min(1))
    return out


class _KCenter:
    """Running min squared distance of every point to the chosen centres."""

    def __init__(self, x: np.ndarray, initial_centers: np.ndarray):
        self.x = x
        self.xx = (x * x).sum(1)
        self.mind = _min_sq_dist(x, initial_centers)

    def add(self, j: int) -> None:
        c = self.x[j]
        d = np.clip(self.xx - 2.0 * self.x @ c + c @ c, 0.0, None)
        np.minimum(self.mind, d, out=self.mind)
        self.mind[j] = -1.0  # chosen: never again, even with duplicates


def _set_scores(n: int, order: Sequence[int], labeled_idx: np.ndarray) -> np.ndarray:
    """Selection order -> scores: first pick highest, labeled images -1."""
    scores = np.full(n, -1.0)
    m = len(order)
    scores[np.asarray(order, dtype=np.int64)] = np.arange(m, 0, -1, dtype=np.float64)
    scores[labeled_idx] = -1.0
    return scores


def _split_labeled(detections: Sequence[Frame], ctx: SamplerContext) -> tuple[np.ndarray, np.ndarray]:
    labeled = set(ctx.labeled)
    is_lab = np.array([d.name in labeled for d in detections], dtype=bool)
    return np.flatnonzero(~is_lab), np.flatnonzero(is_lab)


def _coreset(detections: Sequence[Frame], ctx: SamplerContext) -> np.ndarray:
    n = len(detections)
    if n == 0:
        return np.zeros(0)
    pool, lab = _split_labeled(detections, ctx)
    x_all = _feature_matrix(detections, ctx.labeled_features, "coreset")
    x = x_all[:n]
    centers = np.concatenate([x[lab], x_all[n:]])
    kc = _KCenter(x[pool], centers)
    horizon = len(pool) if ctx.horizon is None else min(len(pool), max(0, int(ctx.horizon)))
    order: list[int] = []
    if len(centers) == 0 and len(pool):  # no labeled set: start farthest from the pool mean
        first = int(np.argmax(((x[pool] - x[pool].mean(0)) ** 2).sum(1)))
        if horizon:
            order.append(first)
            kc.add(first)
    while len(order) < horizon:
        j = int(np.argmax(kc.mind))
        order.append(j)
        kc.add(j)
    rest = np.setdiff1d(np.arange(len(pool)), order)
    rest = rest[np.argsort(-kc.mind[rest], kind="stable")]  # farthest from the chosen set first
    full = [int(pool[j]) for j in list(order) + rest.tolist()]
    return _set_scores(n, full, lab)


def _hybrid(reduction: str):
    def score(detections: Sequence[Frame], ctx: SamplerContext) -> np.ndarray:
        n = len(detections)
        if n == 0:
            return np.zeros(0)
        pool, lab = _split_labeled(detections, ctx)
        u = _weighted_entropy(detections, ctx, reduction)[pool]
        x_all = _feature_matrix(detections, ctx.labeled_features, "hybrid")
        x = x_all[:n]
        kc = _KCenter(x[pool], np.concatenate([x[lab], x_all[n:]]))
        budget = ctx.budget if ctx.budget else max(1, math.ceil(len(pool) / 10))
        horizon = len(pool) if ctx.horizon is None else min(len(pool), max(0, int(ctx.horizon)))
        by_u = np.argsort(-u, kind="stable")  # most uncertain first
        chosen = np.zeros(len(pool), dtype=bool)
        order: list[int] = []
        while len(order) < horizon:
            avail = by_u[~chosen[by_u]]
            candidates = list(avail[: 4 * budget])  # uncertainty pre-selects 4x the budget
            for _ in range(min(budget, horizon - len(order), len(candidates))):
                # diversity picks: the candidate farthest from labeled + chosen
                # (with no centres yet, all are inf and the most uncertain wins)
                j = candidates.pop(int(np.argmax(kc.mind[candidates])))
                order.append(int(j))
                chosen[j] = True
                kc.add(int(j))
        rest = by_u[~chosen[by_u]]
        full = [int(pool[j]) for j in order + rest.tolist()]
        return _set_scores(n, full, lab)

    return score


# --------------------------------------------------------------------------- registry


def _random(detections: Sequence[Frame], ctx: SamplerContext) -> np.ndarray:
    # A hash of (seed, cycle, image name): reproducible, fresh each cycle, and the
    # same whichever process or shard scores the image.
    names = ctx.names if len(ctx.names) == len(detections) else [d.name for d in detections]
    out = np.empty(len(names), dtype=np.float64)
    for i, name in enumerate(names):
        digest = hashlib.blake2b(f"{ctx.seed}:{ctx.cycle}:{name}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def _boxcount(detections: Sequence[Frame], ctx: SamplerContext) -> np.ndarray:
    counts = np.empty(len(detections), dtype=np.float64)
    for i, det in enumerate(detections):
        scores = det.scores if det.scores is not None else np.ones(len(det), dtype=np.float32)
        counts[i] = float((scores >= ctx.score_threshold).sum())
    return counts


MC_PASSES = 10
_RED = "reduced per image with `:max` (default), `:mean`, `:sum` or `:topk_mean`, e.g. `entropy:mean`; no detections -> 0"

_ENTROPY = _probs_measure(entropy_of, "entropy")


def _reducible(name: str, description: str, measure, tag: str, **needs) -> Sampler:
    """A sampler that reduces a per-detection measure per image (reduction suffix: `name:mean`)."""
    return Sampler(name, f"{description} ({_RED})", _per_image(measure, DEFAULT_REDUCTION), needs_probs=True,
                   reduction=DEFAULT_REDUCTION, measure=measure, measure_tag=tag, **needs)


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("random", "a hash of (seed, cycle, image name): uniform, reproducible, identical whatever the sharding "
                "(the baseline every sampler must beat)", _random,
                needs_predictions=False),
        Sampler("boxcount", "number of predicted boxes over `score_threshold` (the original study's score); "
                "images with no detections score 0", _boxcount),
        _reducible("entropy", "entropy of the full softmax (C+1 classes, background included) per detection", _ENTROPY, "H"),
        _reducible("least_confidence", "1 - top class probability per detection",
                   _probs_measure(least_confidence_of, "least_confidence"), "LC"),
        _reducible("margin", "1 - (top-1 - top-2 class probability) per detection",
                   _probs_measure(margin_of, "margin"), "M"),
        _reducible("mc_dropout", f"BALD mutual information over {MC_PASSES} dropout passes on box-head features",
                   _bald_measure, "MI", stochastic_passes=MC_PASSES),
        _reducible("consistency", "CALD-style flip TTA: (1 - IoU of matched box + JS divergence of class "
                   "distributions) / 2 per detection", _consistency_measure, "C", needs_tta=("hflip",)),
        Sampler("coreset", "k-center greedy on pooled box-head image features, away from the labeled set "
                "(set-based: top budget = chosen batch)", _coreset, needs_features=True,
                needs_labeled=True, set_based=True),
        Sampler("hybrid", "class-balanced entropy pre-selects 4x budget, k-center on image features picks "
                "the batch (PPAL-style, set-based; reduction suffix as entropy)",
                _hybrid(DEFAULT_REDUCTION), needs_probs=True, needs_features=True,
                needs_labeled=True, set_based=True, reduction=DEFAULT_REDUCTION, measure=_ENTROPY,
                measure_tag="H"),
    )
}

# Set-based samplers whose score is not a plain reduction of their measure build it per reduction.
_SCORE_FOR_REDUCTION: dict[str, Callable[[str], Callable]] = {"hybrid": _hybrid}


def get_sampler(name: str) -> Sampler:
    """A registered sampler, or a reduction variant named ``<sampler>:<reduction>``."""
    base, sep, reduction = name.partition(":")
    if base not in SAMPLERS:
        raise ValueError(
            f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))} "
            f"(reductions via suffix, e.g. entropy:mean)"
        ) from None
    sampler = SAMPLERS[base]
    if not sep:
        return sampler
    if sampler.reduction is None:
        raise ValueError(f"sampler {base!r} takes no reduction (got {name!r}); samplers with reductions: "
                         f"{', '.join(sorted(n for n, x in SAMPLERS.items() if x.reduction))}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r} in {name!r}; choose one of {list(REDUCTIONS)}")
    score = (_SCORE_FOR_REDUCTION[base](reduction) if base in _SCORE_FOR_REDUCTION
             else _per_image(sampler.measure, reduction))
    return dataclasses.replace(sampler, name=name, reduction=reduction, score=score)


def score_images(
    name: str, detections: Sequence[Frame], ctx: SamplerContext | None = None
) -> np.ndarray:
    ctx = ctx or SamplerContext()
    scores = np.asarray(get_sampler(name).score(detections, ctx), dtype=np.float64)
    if scores.shape != (len(detections),):
        raise RuntimeError(f"sampler {name!r} returned {scores.shape} scores for {len(detections)} images")
    return scores
