"""`--sampler auto`'s bandit (alod.active.bandit): reproducible, persisted, resumable."""

from __future__ import annotations

import json

import pytest

from alod.active.bandit import DEFAULT_ARMS, Exp3, parse_arms

GAIN = {"random": 0.002, "entropy": 0.010, "boxcount": 0.004, "hybrid": 0.006}  # a made-up world: entropy helps most


def simulate(bandit: Exp3, cycles: range, curve: dict) -> list[str]:
    """The cycle loop's bookkeeping: choose for cycle t, 'train', log mAP50(t)."""
    arms = []
    for t in cycles:
        ch = bandit.choose(t, curve)
        curve[t] = curve[t - 1] + GAIN[ch.arm]
        arms.append(ch.arm)
    return arms


def test_same_seed_same_choices_other_seed_other_draws():
    a = simulate(Exp3(DEFAULT_ARMS, seed=3), range(2, 30), {1: 0.1})
    b = simulate(Exp3(DEFAULT_ARMS, seed=3), range(2, 30), {1: 0.1})
    c = simulate(Exp3(DEFAULT_ARMS, seed=4), range(2, 30), {1: 0.1})
    assert a == b and a != c


def test_probabilities_mix_exploration_and_importance_weighted_rewards():
    b = Exp3(("random", "entropy"), seed=0, gamma=0.2, reward_scale=0.01)
    first = b.choose(2, {1: 0.1})
    assert first.probs == {"random": 0.5, "entropy": 0.5}  # nothing seen yet
    curve = {1: 0.1, 2: 0.11}  # the chosen arm gained 0.01: reward 1
    p = b.probabilities(curve)
    assert p[first.arm] > 0.5 and sum(p.values()) == pytest.approx(1.0)
    assert min(p.values()) >= 0.2 / 2  # uniform exploration floor
    assert b.reward(0.5) == 1.0 and b.reward(-0.5) == -1.0  # clipped


def test_learns_the_better_arm_over_many_cycles():
    b = Exp3(DEFAULT_ARMS, seed=0)
    arms = simulate(b, range(2, 400), {1: 0.0})
    late = arms[-100:]
    assert late.count("entropy") > max(late.count("random"), late.count("boxcount"))


def test_state_round_trips_through_the_persisted_cycle_state(tmp_path):
    b = Exp3(("random", "entropy", "hybrid"), seed=7, gamma=0.25, reward_scale=0.03)
    simulate(b, range(2, 6), {1: 0.1})
    b.save(tmp_path / "auto.json")
    back = Exp3.load(tmp_path / "auto.json")
    assert back.to_dict() == b.to_dict()
    assert json.loads((tmp_path / "auto.json").read_text())["choices"][0]["cycle"] == 2


@pytest.mark.parametrize("kill_after", [2, 5, 9])
def test_kill_and_resume_gives_the_same_choices(tmp_path, kill_after):
    whole = simulate(Exp3(DEFAULT_ARMS, seed=1), range(2, 13), {1: 0.1})
    # killed after choosing for cycle `kill_after`, before its mAP50 was logged
    b = Exp3(DEFAULT_ARMS, seed=1)
    curve = {1: 0.1}
    first = simulate(b, range(2, kill_after), curve)
    chosen = b.choose(kill_after, curve).arm
    b.save(tmp_path / "auto.json")
    # resume: a fresh process reads the state back; the curve comes from the run's logged mAP50
    resumed = Exp3.load(tmp_path / "auto.json")
    assert resumed.choose(kill_after, {1: 0.0}).arm == chosen  # a recorded choice is kept, whatever the curve
    rest = simulate(resumed, range(kill_after, 13), curve)
    assert first + rest == whole


def test_arms_are_checked_and_parsed():
    assert parse_arms(" random, hybrid ") == ("random", "hybrid")
    assert parse_arms("") == DEFAULT_ARMS
    with pytest.raises(ValueError, match="distinct"):
        Exp3(("random", "random"))
    with pytest.raises(ValueError, match="itself"):
        Exp3(("random", "auto"))
