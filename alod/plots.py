"""Figures logged to MLflow: score histograms and learning curves (headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def score_histogram(scores, *, title: str = "scores", bins: int = 50):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    scores = np.asarray(scores, dtype=float)
    ax.hist(scores[np.isfinite(scores)], bins=bins, color="#4c72b0")
    ax.set(title=title, xlabel="score", ylabel="images")
    fig.tight_layout()
    return fig


def learning_curves(curves: pd.DataFrame, *, x: str = "labeled_images", y: str = "mAP50",
                    reference: float | None = None, title: str = "learning curves"):
    """curves: one row per (sampler, seed, cycle) with columns sampler, x, y.

    One line per sampler: mean over seeds, shaded min..max spread.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for sampler, group in curves.groupby("sampler", sort=True):
        stats = group.groupby("cycle").agg(x=(x, "mean"), mean=(y, "mean"), lo=(y, "min"), hi=(y, "max"),
                                           n=(y, "size"))
        line, = ax.plot(stats["x"], stats["mean"], marker="o", label=f"{sampler} (n={int(stats['n'].max())})")
        if (stats["n"] > 1).any():
            ax.fill_between(stats["x"], stats["lo"], stats["hi"], color=line.get_color(), alpha=0.2)
    if reference is not None:
        ax.axhline(reference, linestyle="--", color="gray", label="full pool")
    ax.set(title=title, xlabel=x.replace("_", " "), ylabel=y)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
