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
