import pandas as pd
import pytest

from alod.active.protocol import (make_ranking, order_from_batches, order_from_pool, random_order, random_pick,
                                  select_from_batches, select_from_pool, validate_ranking)


def test_ranking_sorted_and_cut_into_batches():
    names = [f"im{i}" for i in range(10)]
    scores = [float(i % 4) for i in range(10)]  # ties broken by name
    ranking = make_ranking(names, scores, batches=3, batch_images=3)
    assert list(ranking.columns) == ["image", "score", "rank", "batch"]
    assert ranking["score"].is_monotonic_decreasing
    assert ranking["rank"].tolist() == list(range(1, 11))
    assert ranking["batch"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 0]
    top = ranking[ranking["score"] == 3]["image"].tolist()
    assert top == sorted(top)


def test_ranking_rejects_duplicates_and_mismatch():
    with pytest.raises(ValueError, match="duplicate"):
        make_ranking(["a", "a"], [1, 2], batches=1, batch_images=2)
    with pytest.raises(ValueError, match="2 names but 1 scores"):
        make_ranking(["a", "b"], [1], batches=1, batch_images=2)


def test_batches_protocol_random_then_top_k():
    ranking = make_ranking([f"im{i:02d}" for i in range(20)], list(range(20)), batches=4, batch_images=5)
    first = select_from_batches(ranking, 1, 3, seed=0, labeled=set())
    batch1 = set(ranking[ranking["batch"] == 1]["image"])
    assert len(first) == 3 and set(first) <= batch1
    assert first == select_from_batches(ranking, 1, 3, seed=0, labeled=set())  # reproducible
    second = select_from_batches(ranking, 2, 3, seed=0, labeled=set(first))
    assert second == ranking[ranking["batch"] == 2]["image"].head(3).tolist()
    with pytest.raises(ValueError, match="batch 5"):
        select_from_batches(ranking, 5, 3, seed=0, labeled=set())


def test_pool_protocol_excludes_labeled_and_takes_top():
    names = ["a", "b", "c", "d", "e"]
    picked = select_from_pool(names, None, 1, 2, seed=1, labeled=set())
    assert len(picked) == 2
    top = select_from_pool(names, [5, 4, 3, 2, 1], 2, 2, seed=1, labeled={"a"})
    assert top == ["b", "c"]


def test_orders_for_box_budgets_cover_every_unlabeled_image_once():
    ranking = make_ranking([f"im{i:02d}" for i in range(20)], list(range(20)), batches=4, batch_images=5)
    batch1 = ranking[ranking["batch"] == 1]["image"].tolist()
    first = order_from_batches(ranking, 1, seed=3, labeled={batch1[0]})
    assert sorted(first) == sorted(batch1[1:])
    assert first == order_from_batches(ranking, 1, seed=3, labeled={batch1[0]})
    assert {tuple(random_order(batch1, seed=s, cycle=1)) for s in range(6)} != {tuple(batch1)}  # shuffled
    second = order_from_batches(ranking, 2, seed=3, labeled=set())
    assert second == ranking[ranking["batch"] == 2].sort_values("rank")["image"].tolist()
    # the image-count selection is the first k of the same order
    assert select_from_batches(ranking, 2, 3, seed=3, labeled=set()) == second[:3]
    names = ["a", "b", "c", "d"]
    assert order_from_pool(names, [1, 4, 3, 2], 2, seed=0, labeled={"b"}) == ["c", "d", "a"]
    assert sorted(order_from_pool(names, None, 1, seed=0, labeled=set())) == names
    with pytest.raises(ValueError, match="fully labeled"):
        order_from_pool(names, None, 2, seed=0, labeled=set(names))


def test_random_pick_depends_on_seed_only():
    cands = [f"x{i}" for i in range(100)]
    assert random_pick(cands, 10, seed=3, cycle=1) == random_pick(list(reversed(cands)), 10, seed=3, cycle=1)
    assert random_pick(cands, 10, seed=3, cycle=1) != random_pick(cands, 10, seed=4, cycle=1)


def test_validate_ranking_names_missing_columns():
    with pytest.raises(ValueError, match="batch"):
        validate_ranking(pd.DataFrame({"image": ["a"], "score": [1.0], "rank": [1]}), "r.parquet")


def test_box_budget_takes_ranked_images_until_spent():
    from alod.active.protocol import select_by_box_budget

    ranked = ["a", "b", "c", "d"]
    boxes = {"a": 3, "b": 5, "c": 1, "d": 2}
    assert select_by_box_budget(ranked, boxes, 8) == ["a", "b"]
    assert select_by_box_budget(ranked, boxes, 7) == ["a"]  # b would overshoot: stop
    assert select_by_box_budget(ranked, boxes, 7, fill=True) == ["a", "c", "d"]
    assert select_by_box_budget(ranked, [3, 5, 1, 2], 100) == ranked  # aligned sequence
    assert select_by_box_budget(["b", "a"], boxes, 2) == ["b"]  # never empty
    with pytest.raises(ValueError, match="no box count"):
        select_by_box_budget(["z"], boxes, 3)


# --- the protocols as objects (what the cycle step uses) --------------------------


def _study_ranking():
    return make_ranking([f"im{i:02d}" for i in range(20)], [float(i % 7) for i in range(20)], batches=4,
                        batch_images=5)


def test_protocol_registry_is_the_list_of_protocols():
    from alod.active.protocol import PROTOCOL_TYPES, PROTOCOLS, BatchesProtocol, PoolProtocol, protocol_for

    assert PROTOCOLS == ("batches", "pool")
    assert PROTOCOL_TYPES == {"batches": BatchesProtocol, "pool": PoolProtocol}
    assert isinstance(protocol_for("batches", ranking=_study_ranking()), BatchesProtocol)
    assert isinstance(protocol_for("pool", names=["a"]), PoolProtocol)
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocol_for("pools", names=["a"])


def test_batches_object_selects_what_the_functions_select():
    from alod.active.protocol import BatchesProtocol

    ranking = _study_ranking()
    protocol = BatchesProtocol(ranking)
    first = protocol.select(1, 3, seed=5, labeled=set())
    assert first == select_from_batches(ranking, 1, 3, seed=5, labeled=set())
    second = protocol.select(2, 3, seed=5, labeled=set(first), scores={"im19": 99.0})  # scores are not used
    assert second == select_from_batches(ranking, 2, 3, seed=5, labeled=set(first))
    assert protocol.order(1, seed=5, labeled=set()) == order_from_batches(ranking, 1, seed=5, labeled=set())
    assert protocol.needs_ranking and not protocol.scores_pool(2)
    assert protocol.keeps_model(reset=False) and not protocol.keeps_model(reset=True)
    assert protocol.shown_scores(1, None) is None  # cycle 1 is a random pick
    assert protocol.shown_scores(2, None) == dict(zip(ranking["image"], ranking["score"]))


def test_pool_object_selects_what_the_functions_select():
    from alod.active.protocol import PoolProtocol

    names = ["a", "b", "c", "d", "e"]
    protocol = PoolProtocol(names)
    assert protocol.select(1, 2, seed=1, labeled=set()) == select_from_pool(names, None, 1, 2, seed=1, labeled=set())
    scores = {"b": 4.0, "c": 3.0, "d": 5.0}  # a, e unscored: last, as -inf
    assert protocol.select(2, 2, seed=1, labeled={"a"}, scores=scores) == ["d", "b"]
    assert protocol.order(2, seed=1, labeled={"a"}, scores=scores) == order_from_pool(
        names, [float("-inf"), 4, 3, 5, float("-inf")], 2, seed=1, labeled={"a"})
    assert not protocol.scores_pool(1) and protocol.scores_pool(2)
    assert protocol.keeps_model(reset=True)  # the next cycle scores the pool with it
    assert protocol.shown_scores(2, scores) == scores and protocol.shown_scores(1, None) is None


def test_box_budget_walks_the_protocols_order():
    from alod.active.protocol import BatchesProtocol, PoolProtocol, select_by_box_budget

    ranking = _study_ranking()
    boxes = {n: 1 + i % 3 for i, n in enumerate(ranking["image"])}
    batches = BatchesProtocol(ranking)
    got = batches.select(1, 4, seed=2, labeled=set(), budget_boxes=4, box_count=boxes.__getitem__)
    head = order_from_batches(ranking, 1, seed=2, labeled=set())[:4]
    assert got == select_by_box_budget(head, boxes, 4) and sum(boxes[n] for n in got) <= 4
    pool = PoolProtocol(list(boxes))
    scores = {n: float(i) for i, n in enumerate(boxes)}
    got = pool.select(2, 3, seed=2, labeled=set(), scores=scores, budget_boxes=3, box_count=boxes.__getitem__)
    assert got == select_by_box_budget(sorted(boxes, key=scores.__getitem__, reverse=True)[:3], boxes, 3)


def test_batches_budget_check_names_the_ranking_limits():
    from alod.active.protocol import BatchesProtocol, PoolProtocol

    ranking = _study_ranking()
    BatchesProtocol(ranking).check_budget(4, 5)
    with pytest.raises(ValueError, match="5 cycles but the ranking has only 4 batch"):
        BatchesProtocol(ranking).check_budget(5, 1)
    with pytest.raises(ValueError, match="per_cycle 6 exceeds the smallest ranking batch"):
        BatchesProtocol(ranking).check_budget(1, 6)
    PoolProtocol(["a"]).check_budget(9, 9)  # the pool's size is checked by the step


def test_first_draw_is_batch_one_or_a_pool_sample():
    from alod.active.protocol import BatchesProtocol, PoolProtocol

    ranking = _study_ranking()
    names, scores, what = BatchesProtocol(ranking).first_draw(0, sampler="entropy", k=2)
    assert names == ranking[ranking["batch"] == 1]["image"].tolist() and set(scores) == set(names)
    assert what == "in batch 1 as ranked by entropy (cycle 1 takes 2 of them at random)"
    pool = [f"p{i}" for i in range(20)]
    names, scores, _ = PoolProtocol(pool).first_draw(0, sampler="random", k=2)
    assert len(names) == 8 and set(names) <= set(pool) and scores is None
