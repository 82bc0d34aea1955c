"""Which images are unveiled next: rankings cut into batches, and the two protocols.

`batches` (the original study): rank the pool once, cut the ranking into
batches; cycle 1 takes k random images of batch 1, cycle n the top k of batch n.
`pool`: cycle 1 takes k random images of the pool; cycle n re-scores every
unlabeled image with the current model and takes the top k.

The cycle step asks a protocol object (`protocol_for(name, ...)`, one class per
protocol in `PROTOCOL_TYPES`) what it needs and what it picks, instead of
branching on the name; the functions below are what those objects call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

RANKING_COLUMNS = ["image", "score", "rank", "batch"]


def make_ranking(
    names: Sequence[str], scores: Sequence[float], *, batches: int, batch_images: int
) -> pd.DataFrame:
    """Sort by score (descending; ties by name, for determinism) and cut into batches.

    Rank 1 is the highest score. Batch b (1-based) holds ranks
    (b-1)*batch_images+1 .. b*batch_images; images past the last batch get batch 0.
    """
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} names but {len(scores)} scores")
    if len(set(names)) != len(names):
        raise ValueError("duplicate image names in the pool")
    if batches < 1 or batch_images < 1:
        raise ValueError("batches and batch_images must be >= 1")
    frame = pd.DataFrame({"image": list(names), "score": np.asarray(scores, dtype=np.float64)})
    frame = frame.sort_values(["score", "image"], ascending=[False, True], kind="mergesort")
    frame = frame.reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    batch = (frame["rank"].to_numpy() - 1) // batch_images + 1
    batch[batch > batches] = 0
    frame["batch"] = batch.astype(np.int64)
    return frame[RANKING_COLUMNS]


def validate_ranking(ranking: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in RANKING_COLUMNS if c not in ranking.columns]
    if missing:
        raise ValueError(f"{source}: ranking lacks column(s) {missing}; expected {RANKING_COLUMNS}")
    if ranking["image"].duplicated().any():
        dup = ranking.loc[ranking["image"].duplicated(), "image"].iloc[0]
        raise ValueError(f"{source}: image {dup!r} appears more than once in the ranking")
    return ranking.sort_values("rank", kind="mergesort").reset_index(drop=True)


def random_pick(candidates: Sequence[str], k: int, *, seed: int, cycle: int) -> list[str]:
    """k images drawn without replacement, reproducible for (seed, cycle)."""
    candidates = sorted(candidates)
    rng = np.random.default_rng([seed, cycle, 7919])
    k = min(k, len(candidates))
    picked = rng.choice(len(candidates), size=k, replace=False)
    return [candidates[i] for i in sorted(picked)]


def random_order(candidates: Sequence[str], *, seed: int, cycle: int) -> list[str]:
    """All candidates in a random order, reproducible for (seed, cycle): budgets in boxes walk it."""
    candidates = sorted(candidates)
    rng = np.random.default_rng([seed, cycle, 104729])
    return [candidates[i] for i in rng.permutation(len(candidates))]


def _unlabeled_batch(ranking: pd.DataFrame, cycle: int, labeled) -> pd.DataFrame:
    in_batch = ranking[(ranking["batch"] == cycle) & ~ranking["image"].isin(labeled)]
    if in_batch.empty:
        raise ValueError(
            f"cycle {cycle}: batch {cycle} of the ranking is empty or fully labeled "
            f"(the ranking has {int(ranking['batch'].max())} batch(es))"
        )
    return in_batch


def select_from_batches(
    ranking: pd.DataFrame, cycle: int, k: int, *, seed: int, labeled: set[str] | frozenset[str]
) -> list[str]:
    """The study's protocol: cycle 1 -> k random from batch 1; cycle n -> top k of batch n."""
    in_batch = _unlabeled_batch(ranking, cycle, labeled)
    if cycle == 1:
        return random_pick(in_batch["image"].tolist(), k, seed=seed, cycle=cycle)
    return in_batch.sort_values("rank", kind="mergesort")["image"].head(k).tolist()


def order_from_batches(ranking: pd.DataFrame, cycle: int, *, seed: int, labeled) -> list[str]:
    """Every unlabeled image of batch `cycle` in the order the protocol takes them."""
    in_batch = _unlabeled_batch(ranking, cycle, labeled)
    if cycle == 1:
        return random_order(in_batch["image"].tolist(), seed=seed, cycle=cycle)
    return in_batch.sort_values("rank", kind="mergesort")["image"].tolist()


def select_from_pool(
    names: Sequence[str],
    scores: Sequence[float] | None,
    cycle: int,
    k: int,
    *,
    seed: int,
    labeled: set[str] | frozenset[str],
) -> list[str]:
    """The `pool` protocol: k random at cycle 1, else the top k unlabeled by score."""
    unlabeled = [n for n in names if n not in labeled]
    if not unlabeled:
        raise ValueError(f"cycle {cycle}: the pool is fully labeled")
    if cycle == 1 or scores is None:
        return random_pick(unlabeled, k, seed=seed, cycle=cycle)
    return order_from_pool(names, scores, cycle, seed=seed, labeled=labeled)[:k]


def order_from_pool(names: Sequence[str], scores: Sequence[float] | None, cycle: int, *, seed: int,
                    labeled) -> list[str]:
    """Every unlabeled pool image in the order the protocol takes them (random without scores)."""
    unlabeled = [n for n in names if n not in labeled]
    if not unlabeled:
        raise ValueError(f"cycle {cycle}: the pool is fully labeled")
    if cycle == 1 or scores is None:
        return random_order(unlabeled, seed=seed, cycle=cycle)
    if len(scores) != len(names):
        raise ValueError(f"{len(scores)} scores for {len(names)} pool images")
    table = pd.DataFrame({"image": list(names), "score": np.asarray(scores, dtype=np.float64)})
    table = table[~table["image"].isin(labeled)]
    table = table.sort_values(["score", "image"], ascending=[False, True], kind="mergesort")
    return table["image"].tolist()


def select_by_box_budget(
    ranked_names: Sequence[str],
    boxes_per_image: Mapping[str, int] | Sequence[int],
    budget_boxes: int,
    *,
    fill: bool = False,
) -> list[str]:
    """Images taken in ranking order until `budget_boxes` boxes are spent.

    A budget counted in boxes: crowded driving images cost more to label.
    `boxes_per_image` maps name -> box count (or is aligned with `ranked_names`);
    use the ground-truth count (`Frame.num_trainable`) to simulate annotation
    cost, or predicted counts when the truth is unknown. Selection stops at the
    first image that would overshoot the budget (`fill=True` skips it and keeps
    going down the ranking for images that still fit). The top image is always
    taken, even when it alone exceeds the budget, so every cycle labels something.
    """
    if budget_boxes < 0:
        raise ValueError(f"budget_boxes must be >= 0, got {budget_boxes}")
    names = list(ranked_names)
    if isinstance(boxes_per_image, Mapping):
        missing = [n for n in names if n not in boxes_per_image]
        if missing:
            raise ValueError(f"no box count for {len(missing)} ranked image(s), e.g. {missing[0]!r}")
        costs = [int(boxes_per_image[n]) for n in names]
    else:
        costs = [int(c) for c in boxes_per_image]
        if len(costs) != len(names):
            raise ValueError(f"{len(costs)} box counts for {len(names)} ranked images")
    picked: list[str] = []
    spent = 0
    for name, cost in zip(names, costs):
        if cost < 0:
            raise ValueError(f"negative box count {cost} for {name!r}")
        if spent + cost > budget_boxes:
            if not picked:  # never an empty selection
                picked.append(name)
                spent += cost
                if not fill:
                    break
                continue
            if fill:
                continue
            break
        picked.append(name)
        spent += cost
    return picked


# --- the protocols as objects ---------------------------------------------------


class Protocol:
    """What a protocol needs and which images it unveils in a cycle.

    `scores` (name -> score, or None) are the scores the current model gave the pool this cycle; only a
    protocol that `scores_each_cycle` uses them."""

    name: str
    needs_ranking: bool  # the step cannot start without a ranking (a rank run or a parquet file)
    default_sampler: str  # the sampler tag when neither the user nor the ranking names one
    scores_each_cycle: bool  # cycles after the first run the current model over the pool
    random_pick_label: str  # what a pick without scores (cycle 1) was drawn from, for its picture

    def order(self, cycle: int, *, seed: int, labeled: Collection[str],
              scores: Mapping[str, float] | None = None) -> list[str]:
        """Every image the cycle may take, in the order it takes them."""
        raise NotImplementedError

    def _top(self, cycle: int, k: int, *, seed: int, labeled: Collection[str],
             scores: Mapping[str, float] | None) -> list[str]:
        raise NotImplementedError

    def select(self, cycle: int, k: int, *, seed: int, labeled: Collection[str],
               scores: Mapping[str, float] | None = None, budget_boxes: int = 0,
               box_count: Callable[[str], int] | None = None) -> list[str]:
        """The images cycle `cycle` unveils: k of them, or with `budget_boxes` the first of those k
        until the budget is spent (`box_count(name)`: what labeling an image costs)."""
        if not budget_boxes:
            return self._top(cycle, k, seed=seed, labeled=labeled, scores=scores)
        head = self.order(cycle, seed=seed, labeled=labeled, scores=scores)[:k]
        return select_by_box_budget(head, {n: box_count(n) for n in head}, budget_boxes)  # type: ignore[misc]

    @classmethod
    def over(cls, *, ranking: pd.DataFrame | None, names: Sequence[str]) -> "Protocol":
        """The protocol for one run: its ranking (batches) or its pool's image names (pool)."""
        raise NotImplementedError

    def scores_pool(self, cycle: int) -> bool:
        """Does cycle `cycle` run the current model over the pool to choose?"""
        return self.scores_each_cycle and cycle > 1

    def keeps_model(self, reset: bool) -> bool:
        """Does the next cycle need the last cycle's model (a resumed run loads its checkpoint)?"""
        raise NotImplementedError

    def shown_scores(self, cycle: int, scores: Mapping[str, float] | None) -> dict[str, float] | None:
        """The scores a cycle's pick was chosen by (None: a random pick)."""
        raise NotImplementedError

    def first_draw(self, seed: int, *, sampler: str, k: int) -> tuple[list[str], dict[str, float] | None, str]:
        """What cycle 1 draws from, for the step-0 picture: images, their scores (None: unscored), and
        a caption."""
        raise NotImplementedError

    def check_budget(self, cycles: int, per_cycle: int) -> None:
        """Raise ValueError when the protocol cannot give `cycles` cycles of `per_cycle` images."""


class BatchesProtocol(Protocol):
    """The study's protocol: cycle 1 -> k random from batch 1; cycle n -> top k of batch n of one ranking."""

    name, needs_ranking, default_sampler, scores_each_cycle = "batches", True, "unknown", False
    random_pick_label = "random from batch 1"

    def __init__(self, ranking: pd.DataFrame):
        self.ranking = ranking

    @classmethod
    def over(cls, *, ranking, names):
        return cls(ranking)

    def order(self, cycle, *, seed, labeled, scores=None):
        return order_from_batches(self.ranking, cycle, seed=seed, labeled=labeled)

    def _top(self, cycle, k, *, seed, labeled, scores):
        return select_from_batches(self.ranking, cycle, k, seed=seed, labeled=labeled)

    def keeps_model(self, reset):
        return not reset  # the ranking, not the model, chooses

    def shown_scores(self, cycle, scores):
        if cycle == 1:
            return None
        return dict(zip(self.ranking["image"], self.ranking["score"].astype(float)))

    def first_draw(self, seed, *, sampler, k):
        batch1 = self.ranking[self.ranking["batch"] == 1].sort_values("rank")
        return (list(batch1["image"]), dict(zip(batch1["image"], batch1["score"].astype(float))),
                f"in batch 1 as ranked by {sampler} (cycle 1 takes {k} of them at random)")

    def check_budget(self, cycles, per_cycle):
        batches = int(self.ranking["batch"].max())
        if cycles > batches:
            raise ValueError(f"{cycles} cycles but the ranking has only {batches} batch(es)")
        smallest = int(self.ranking[self.ranking["batch"] > 0].groupby("batch").size().min())
        if per_cycle > smallest:
            raise ValueError(f"per_cycle {per_cycle} exceeds the smallest ranking batch ({smallest} images)")


class PoolProtocol(Protocol):
    """k random at cycle 1, then the top k unlabeled images by the current model's scores."""

    name, needs_ranking, default_sampler, scores_each_cycle = "pool", False, "boxcount", True
    random_pick_label = "random"

    def __init__(self, names: Sequence[str]):
        self.names = list(names)

    @classmethod
    def over(cls, *, ranking, names):
        return cls(names)

    def _aligned(self, scores: Mapping[str, float] | None) -> list[float] | None:
        return None if scores is None else [scores.get(n, float("-inf")) for n in self.names]

    def order(self, cycle, *, seed, labeled, scores=None):
        return order_from_pool(self.names, self._aligned(scores), cycle, seed=seed, labeled=labeled)

    def _top(self, cycle, k, *, seed, labeled, scores):
        return select_from_pool(self.names, self._aligned(scores), cycle, k, seed=seed, labeled=labeled)

    def keeps_model(self, reset):
        return True  # the next cycle scores the pool with it, even when it trains a fresh one

    def shown_scores(self, cycle, scores):
        return None if scores is None else dict(scores)

    def first_draw(self, seed, *, sampler, k):
        rng = np.random.default_rng(seed)
        return ([self.names[i] for i in rng.permutation(len(self.names))[:8]], None,
                f"of the pool (cycle 1 takes {k} at random)")


PROTOCOL_TYPES: dict[str, type[Protocol]] = {cls.name: cls for cls in (BatchesProtocol, PoolProtocol)}
PROTOCOLS = tuple(PROTOCOL_TYPES)


def protocol_for(name: str, *, ranking: pd.DataFrame | None = None, names: Sequence[str] = ()) -> Protocol:
    """The protocol called `name`, over this ranking (batches) or these pool images (pool)."""
    if name not in PROTOCOL_TYPES:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {name!r}")
    return PROTOCOL_TYPES[name].over(ranking=ranking, names=names)
