"""`--sampler auto`: choose each cycle's sampler with a bandit on the gain each choice brought.

After Hsu & Lin (2015, "Active learning by learning", AAAI): the samplers are
the arms (ALBL's "experts", each one deterministic, so EXP4.P reduces to
EXP3), the choice is drawn from a mixture of exponential weights and uniform
exploration, and the reward of the chosen arm is importance-weighted (divided
by the probability it was chosen with), which keeps the weight update an
unbiased estimate for every arm although only one is tried per cycle.

The reward of cycle t's arm is the mAP50 gain it brought, mAP50(t) -
mAP50(t-1) on val, scaled by `reward_scale` and clipped to [-1, 1]. (ALBL
uses an importance-weighted accuracy on the queried points instead; a
detector's val mAP50 is the number a cycle run already measures.) Cycle 1 has
no model to score with and picks at random; choices start at cycle 2.

State and resume: what the bandit *chose* (arm, probabilities, the draw) is
persisted in the run's cycle state (`state/auto.json`) before the cycle's
images are picked; the weights are never stored but replayed from those choices
and the run's logged mAP50 history. A run killed at any point therefore resumes
with the same choices: a cycle already chosen keeps its arm, and a new choice
is a pure function of (seed, cycle, history).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AUTO = "auto"
AUTO_DESCRIPTION = ("protocol pool: a bandit (EXP3, after Hsu & Lin's 'Active learning by learning') "
                    "chooses each cycle among `auto_samplers` by the mAP50 gain each brought")
DEFAULT_ARMS = ("random", "entropy", "boxcount")


@dataclass
class Choice:
    cycle: int
    arm: str
    probs: dict[str, float]
    draw: float

    def to_dict(self) -> dict:
        return {"cycle": self.cycle, "arm": self.arm, "probs": self.probs, "draw": self.draw}


@dataclass
class Exp3:
    """EXP3 over named arms with importance-weighted rewards; choices recorded by cycle."""
    arms: tuple[str, ...]
    seed: int = 0
    gamma: float = 0.3  # share of uniform exploration
    reward_scale: float = 0.02  # a gain of this much mAP50 is reward 1
    choices: dict[int, Choice] = field(default_factory=dict)

    def __post_init__(self):
        self.arms = tuple(self.arms)
        if len(self.arms) < 1 or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"auto needs distinct samplers to choose from, got {list(self.arms)}")
        if AUTO in self.arms:
            raise ValueError("auto cannot choose itself")

    # --- bookkeeping --------------------------------------------------------

    def reward(self, gain: float) -> float:
        return float(np.clip(gain / self.reward_scale, -1.0, 1.0))

    def log_weights(self, curve: dict[int, float]) -> np.ndarray:
        """Replay every recorded choice whose reward is known (its cycle's mAP50 and the one before)."""
        k = len(self.arms)
        logw = np.zeros(k)
        for cycle in sorted(self.choices):
            ch = self.choices[cycle]
            if cycle not in curve or cycle - 1 not in curve:
                continue
            r = self.reward(curve[cycle] - curve[cycle - 1])
            i = self.arms.index(ch.arm)
            logw[i] += self.gamma * (r / max(ch.probs[ch.arm], 1e-12)) / k
        return logw

    def probabilities(self, curve: dict[int, float]) -> dict[str, float]:
        logw = self.log_weights(curve)
        w = np.exp(logw - logw.max())
        p = (1 - self.gamma) * w / w.sum() + self.gamma / len(self.arms)
        return {a: float(v) for a, v in zip(self.arms, p)}

    def choose(self, cycle: int, curve: dict[int, float]) -> Choice:
        """The arm for `cycle`: the recorded one if the cycle was chosen before (a resume), else a seeded draw."""
        if cycle in self.choices:
            return self.choices[cycle]
        probs = self.probabilities(curve)
        draw = float(np.random.default_rng([self.seed, cycle, 17]).random())
        cum = np.cumsum([probs[a] for a in self.arms])
        arm = self.arms[int(min(np.searchsorted(cum, draw * cum[-1], side="right"), len(self.arms) - 1))]
        choice = Choice(cycle, arm, probs, draw)
        self.choices[cycle] = choice
        return choice

    def explain(self, choice: Choice, curve: dict[int, float]) -> str:
        tried = [f"cycle {c}: {ch.arm} gained {curve[c] - curve[c - 1]:+.4f}"
                 for c, ch in sorted(self.choices.items()) if c in curve and c - 1 in curve and c < choice.cycle]
        probs = ", ".join(f"{a} {p:.2f}" for a, p in choice.probs.items())
        return (f"auto chose {choice.arm} for cycle {choice.cycle} (EXP3 draw {choice.draw:.3f}; probabilities "
                f"{probs}; {'; '.join(tried) if tried else 'no reward seen yet: exploring'})")

    # --- persistence --------------------------------------------------------

    def to_dict(self) -> dict:
        return {"arms": list(self.arms), "seed": self.seed, "gamma": self.gamma, "reward_scale": self.reward_scale,
                "choices": [c.to_dict() for _, c in sorted(self.choices.items())]}

    @classmethod
    def from_dict(cls, d: dict) -> "Exp3":
        b = cls(tuple(d["arms"]), seed=int(d["seed"]), gamma=float(d["gamma"]),
                reward_scale=float(d["reward_scale"]))
        for c in d.get("choices", []):
            b.choices[int(c["cycle"])] = Choice(int(c["cycle"]), c["arm"], dict(c["probs"]), float(c["draw"]))
        return b

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "Exp3":
        return cls.from_dict(json.loads(Path(path).read_text()))


def parse_arms(text: str | None) -> tuple[str, ...]:
    arms = tuple(a.strip() for a in (text or "").split(",") if a.strip())
    return arms or DEFAULT_ARMS
