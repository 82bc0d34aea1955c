"""Sampler comparison from finished cycle runs: table, learning-curve area, labels to target."""

from __future__ import annotations

import numpy as np
import pandas as pd

from alod import forecast as fcast


def curve_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the learning curve, normalised by the x range (so it reads as mean mAP50)."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean()) if len(y) else float("nan")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def labels_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """The fewest labeled images at which the curve reaches target; NaN if never."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    hit = np.nonzero(y >= target)[0]
    return float(x[hit[0]]) if len(hit) else float("nan")


def compare_table(curves: pd.DataFrame, *, target_fraction: float = 0.95) -> pd.DataFrame:
    """curves: rows (sampler, seed, cycle, labeled_images, mAP50) -> one row per sampler.

    Columns: mAP50 at each cycle (mean ± spread over seeds), area under the curve,
    labeled images needed to reach `target_fraction` of the best final mAP50 and,
    when random ran, to reach random's final mAP50 (what a sampler saves over it).
    """
    if curves.empty:
        return pd.DataFrame()
    last = curves.sort_values("cycle").groupby(["sampler", "seed"]).tail(1)
    finals = last.groupby("sampler")["mAP50"].mean()
    best_final = finals.max()
    target = target_fraction * best_final
    random_final = finals.get("random")
    rows = []
    for sampler, group in curves.groupby("sampler", sort=True):
        per_seed = []
        for _seed, g in group.groupby("seed"):
            per_seed.append((curve_auc(g["labeled_images"], g["mAP50"]),
                             labels_to_reach(g["labeled_images"], g["mAP50"], target)))
        aucs = np.array([a for a, _ in per_seed])
        needed = np.array([n for _, n in per_seed])
        row = {"sampler": sampler, "seeds": len(per_seed)}
        for cycle, g in group.groupby("cycle"):
            row[f"mAP50@{int(g['labeled_images'].mean())}"] = _fmt(g["mAP50"])
        row["AUC"] = _fmt(pd.Series(aucs))
        row[f"labels_to_{int(target_fraction * 100)}%"] = _mean_reached(needed)
        if random_final is not None:
            row["labels_to_random_final"] = _mean_reached(np.array(
                [labels_to_reach(g["labeled_images"], g["mAP50"], random_final) for _s, g in group.groupby("seed")]))
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_reached(needed: np.ndarray) -> str:
    """Mean labels over the seeds that reached a target ("not reached" if none; how many did, if not all)."""
    if not np.isfinite(needed).any():
        return "not reached"
    text = f"{np.nanmean(needed):.0f}"
    reached = int(np.isfinite(needed).sum())
    return text if reached == len(needed) else f"{text} ({reached}/{len(needed)} seeds)"


def _fmt(values: pd.Series) -> str:
    values = values.astype(float)
    if len(values) > 1:
        return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
    return f"{values.mean():.4f}"


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def forecast_table(curves: pd.DataFrame, *, target: float | None = None, y: str = "mAP50",
                   x: str = "labeled_images") -> pd.DataFrame:
    """One row per sampler: the learning-curve forecast (alod.forecast) fitted to every seed's points, the
    band a bootstrap over seeds (over cycles with one seed). A sampler with fewer than three label counts
    gets the reason instead of numbers."""
    rows = []
    keys = ["sampler", "protocol"] if "protocol" in curves.columns and curves["protocol"].nunique() > 1 \
        else ["sampler"]
    for key, g in curves.groupby(keys, sort=True):
        label = "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        row = {"sampler": label}
        try:
            fc = fcast.forecast(g[x], g[y], g["seed"] if "seed" in g else None, target=target)
        except fcast.NotEnoughPoints as e:
            row["forecast"] = str(e).split(":")[0]
            rows.append(row)
            continue
        row["now"] = f"{fc.now:.0f}"
        row["fit"] = (f"{fc.fit.a:.3f} - {fc.fit.b:.3g}*n^-{fc.fit.c:.2f}"
                      + (" (a at bound)" if fc.fit.at_bound else ""))
        for m, (mid, low, high) in fc.at.items():
            row[f"{y}@{m:g}x ({fc.now * m:.0f})"] = (f"{mid:.4f} [{low:.4f}, {high:.4f}]" if np.isfinite(low)
                                                    else f"{mid:.4f}")
        if fc.to_target is not None:
            mid, low, high = fc.to_target
            text = f"{mid:.0f}" if np.isfinite(mid) else "never"
            if np.isfinite(low) or np.isfinite(high):
                text += f" [{_count(low)}, {_count(high)}]"
            row[f"{x}_to_{target:g}"] = text
        row["band"] = fc.band
        rows.append(row)
    return pd.DataFrame(rows)


def _count(v: float) -> str:
    return f"{v:.0f}" if np.isfinite(v) else "never"

