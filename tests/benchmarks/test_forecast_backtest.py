"""benchmarks/forecast_backtest.py on made-up curves: a known power law is forecast closely, and the
stopping rule's verdicts against the measured flat point."""

from __future__ import annotations

import pandas as pd


def _curves(tmp_path, cycles=6):
    rows = []
    for sampler, b in (("random", 0.5), ("hybrid", 1.5)):
        for seed in (0, 1):
            for cycle in range(1, cycles + 1):
                n = 20 * cycle
                rows.append({"run_id": f"{sampler}{seed}", "sampler": sampler, "protocol": "pool", "seed": seed,
                             "cycle": cycle, "labeled_images": n, "reset": True,
                             "test_mAP50": 0.3 - b * n ** -1.0 + 0.0005 * seed})
    out = tmp_path / "bench" / "out"
    out.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out / "curves.csv", index=False)
    return out / "curves.csv"


def test_forecast_errors_and_stop_verdicts(tmp_path, capsys, load_benchmark):
    bt = load_benchmark("forecast_backtest")
    path = _curves(tmp_path)
    assert bt.main([str(path), "--min-gains", "0.05,0.2", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "forecast error" in printed and "| bench | pool | one run | 3 | cycle 4 |" in printed
    err = pd.read_csv(tmp_path / "r" / "forecast_errors.csv")
    assert set(err["k"]) == {3, 4, 5} and err["error"].abs().max() < 0.002  # an exact power law, little noise
    stops = pd.read_csv(tmp_path / "r" / "stop_rule.csv")
    assert set(stops["verdict"]) <= {"at", "before", "after", "never", "no flat point"} | {
        v for v in stops["verdict"] if str(v).startswith("never (flat at")}
    hybrid = stops[(stops["sampler"] == "hybrid") & (stops["min_gain"] == 0.2)]
    # hybrid's curve 0.3 - 1.5/n gains 1500/(n_i n_j) per 1000 labels from n_i to n_j: 0.31 from 60 to 80,
    # 0.19 from 80 to 100: flat (below 0.2) from cycle 4, the first cycle the rule may fire (a band needs 4)
    assert set(hybrid["flat from (mean)"].astype(str)) == {"4"}
    assert set(hybrid["verdict"]) == {"at"}
