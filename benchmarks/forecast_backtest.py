"""How good is the learning-curve forecast, and when would the stopping rule have stopped? Measured on
recorded curves (the label-efficiency benchmark's `curves.csv`).

Forecast error: for every run (protocol, sampler, seed) and every k >= 3, fit the curve to the run's
first k cycles, as the cycle run does after cycle k, and compare its forecast with the measured value
at every later cycle (error = forecast - measured, in mAP50; `in band`: the measured value lies in the
forecast's 80 % bootstrap band, for fits with a band). The same with every seed's first k cycles
pooled per sampler (as `alod compare` fits), against the mean over seeds. With `--reference`, the
full-pool reference (the benchmark's `reference.csv`) is one more "later" point, at n = the pool.

Stopping rule: per run, the first cycle after which `alod.forecast.stop_rule` fires, at each threshold
of `--min-gains` (mAP50 per 1 000 further labels, over the next cycle's labels), against the cycle
where the measured curve (mean over seeds) flattened: the first cycle from which its gain per 1 000
labels to every later cycle stays below the threshold. `before` means it stopped while the curve still
rose by more than the threshold, `after` that it kept going past the flat point, `never` that it did
not fire within the recorded cycles.

    python benchmarks/forecast_backtest.py CURVES.csv [CURVES.csv ...] [--y test_mAP50] [--reference REF.csv]
        [--min-gains 0.05,0.1,0.2] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from alod import forecast as F
from alod.report import markdown_table


def load(paths, y: str) -> pd.DataFrame:
    frames = []
    for path in paths:
        d = pd.read_csv(path)
        if "reset" in d.columns:
            d = d[d["reset"].astype(str).str.lower() == "true"]  # the reset-every-cycle runs (warm start aside)
        col = y if y in d.columns else "mAP50"
        d = d.rename(columns={col: "y"})
        d["source"] = Path(path).parent.parent.name if Path(path).parent.name == "out" else Path(path).stem
        frames.append(d[["source", "protocol", "sampler", "seed", "cycle", "labeled_images", "y"]])
    return pd.concat(frames, ignore_index=True)


def forecast_errors(curves: pd.DataFrame, reference: dict | None = None) -> pd.DataFrame:
    """One row per (run or pooled sampler, k, later cycle): forecast, band, measured, error."""
    rows = []
    for (source, protocol, sampler), g in curves.groupby(["source", "protocol", "sampler"]):
        cycles = sorted(g["cycle"].unique())
        runs = [(str(seed), r.sort_values("cycle")) for seed, r in g.groupby("seed")]
        for k in cycles:
            if k < F.MIN_POINTS:
                continue
            for who, fit_on, later in [(seed, r[r["cycle"] <= k], r[r["cycle"] > k]) for seed, r in runs] + [
                    ("pooled", g[g["cycle"] <= k], g[g["cycle"] > k].groupby("cycle", as_index=False).agg(
                        labeled_images=("labeled_images", "mean"), y=("y", "mean")))]:
                groups = fit_on["seed"] if who == "pooled" else None
                fc = F.forecast(fit_on["labeled_images"], fit_on["y"], groups)
                targets = [(int(c), n, v) for c, n, v in zip(later["cycle"], later["labeled_images"], later["y"])]
                ref = (reference or {}).get((source, protocol))
                if ref is not None:
                    targets.append(("full pool", ref[0], ref[1]))
                for cycle, n, measured in targets:
                    mid, low, high = fc.curve([n])
                    rows.append({"source": source, "protocol": protocol, "sampler": sampler, "run": who, "k": k,
                                 "later": cycle, "n_fit": fc.now, "n": n, "ratio": n / fc.now,
                                 "forecast": float(mid[0]), "low": float(low[0]), "high": float(high[0]),
                                 "measured": measured, "error": float(mid[0]) - measured,
                                 "in_band": bool(low[0] <= measured <= high[0]) if np.isfinite(low[0]) else None})
    return pd.DataFrame(rows)


def error_table(err: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute error and bias by (who fits: one run / pooled seeds, k, later point)."""
    if err.empty:
        return pd.DataFrame()
    err = err.assign(fit=np.where(err["run"] == "pooled", "pooled seeds", "one run"))
    rows = []
    for (source, protocol, fit, k, later), g in err.groupby(["source", "protocol", "fit", "k", "later"], sort=True):
        banded = g["in_band"].dropna()
        rows.append({"curves": source, "protocol": protocol, "fit on": fit, "k": int(k),
                     "forecast at": later if isinstance(later, str) else f"cycle {later}",
                     "x current": f"{g['ratio'].mean():.2f}", "fits": len(g),
                     "MAE": f"{g['error'].abs().mean():.4f}", "bias": f"{g['error'].mean():+.4f}",
                     "max |error|": f"{g['error'].abs().max():.4f}",
                     "in 80 % band": f"{int(banded.sum())}/{len(banded)}" if len(banded) else "no band"})
    return pd.DataFrame(rows)


def stop_check(curves: pd.DataFrame, min_gains) -> pd.DataFrame:
    rows = []
    for (source, protocol, sampler), g in curves.groupby(["source", "protocol", "sampler"]):
        mean = g.groupby("cycle").agg(n=("labeled_images", "mean"), y=("y", "mean")).sort_index()
        cycles = list(mean.index)
        per_cycle = float(np.diff(mean["n"]).mean()) if len(mean) > 1 else 0.0
        for min_gain in min_gains:
            flat = next((c for i, c in enumerate(cycles[:-1]) if all(
                (mean["y"].iloc[j] - mean["y"].iloc[i]) / (mean["n"].iloc[j] - mean["n"].iloc[i]) * 1000 < min_gain
                for j in range(i + 1, len(cycles)))), None)
            for seed, r in g.groupby("seed"):
                r = r.sort_values("cycle")
                fired = None
                for k in range(F.MIN_POINTS, len(r) + 1):
                    d = F.stop_rule(r["labeled_images"].iloc[:k], r["y"].iloc[:k], min_gain=min_gain,
                                    horizon=per_cycle)
                    if d.stop:
                        fired = int(r["cycle"].iloc[k - 1])
                        break
                verdict = ("never" if fired is None else "no flat point" if flat is None
                           else "at" if fired == flat else "before" if fired < flat else "after")
                if fired is None and flat is not None:
                    verdict = f"never (flat at {flat})"
                rows.append({"curves": source, "protocol": protocol, "sampler": sampler, "seed": seed,
                             "min_gain": min_gain, "stopped after": fired if fired is not None else "—",
                             "flat from (mean)": flat if flat is not None else "not within the cycles",
                             "verdict": verdict})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="+", help="curves.csv files of label-efficiency runs")
    parser.add_argument("--y", default="test_mAP50", help="the measured column (falls back to mAP50)")
    parser.add_argument("--reference", action="append", default=[],
                        help="a benchmark's reference.csv (full pool as one more later point), per curves file")
    parser.add_argument("--pool", type=int, action="append", default=[], help="pool size for each --reference")
    parser.add_argument("--min-gains", default="0.05,0.1,0.2")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    curves = load(args.curves, args.y)
    reference = {}
    for path, pool in zip(args.reference, args.pool):
        ref = pd.read_csv(path)
        full = ref[ref["role"] == "full_pool_reference"]["test_mAP50"].mean()
        source = Path(path).parent.parent.name if Path(path).parent.name == "out" else Path(path).stem
        for protocol in curves.loc[curves["source"] == source, "protocol"].unique():
            reference[(source, protocol)] = (float(pool), float(full))
    err = forecast_errors(curves, reference)
    table = error_table(err)
    stops = stop_check(curves, [float(v) for v in args.min_gains.split(",")])
    print("forecast error (forecast - measured, mAP50):\n" + markdown_table(table))
    summary = stops.groupby(["curves", "protocol", "min_gain"])["verdict"].value_counts().unstack(fill_value=0)
    print("\nstopping rule against the flat point of the measured curve:\n" + summary.to_string())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        err.to_csv(out / "forecast_errors.csv", index=False)
        table.to_csv(out / "forecast_error_table.csv", index=False)
        stops.to_csv(out / "stop_rule.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
