import math

import pandas as pd

from alod.report import compare_table, curve_auc, labels_to_reach


def test_auc_and_labels_to_reach():
    x, y = [100, 200, 300], [0.2, 0.4, 0.6]
    assert math.isclose(curve_auc(x, y), 0.4)
    assert labels_to_reach(x, y, 0.4) == 200
    assert math.isnan(labels_to_reach(x, y, 0.9))


def test_compare_table_one_row_per_sampler():
    rows = []
    for sampler, gain in (("random", 0.1), ("boxcount", 0.2)):
        for seed in (0, 1):
            for cycle in (1, 2, 3):
                rows.append({"sampler": sampler, "seed": seed, "cycle": cycle,
                             "labeled_images": 100 * cycle, "mAP50": gain * cycle + 0.01 * seed})
    table = compare_table(pd.DataFrame(rows))
    assert table["sampler"].tolist() == ["boxcount", "random"]
    assert table.loc[table["sampler"] == "boxcount", "labels_to_95%"].item() == "300"
    assert "±" in table.loc[0, "AUC"]


def test_compare_table_says_what_each_sampler_needs_to_match_random():
    rows = []
    for sampler, curve in (("random", (0.1, 0.2, 0.3)), ("entropy", (0.1, 0.3, 0.4)), ("bad", (0.05, 0.1, 0.2))):
        for cycle, value in enumerate(curve, start=1):
            rows.append({"sampler": sampler, "seed": 0, "cycle": cycle, "labeled_images": 25 * cycle,
                         "mAP50": value})
    table = compare_table(pd.DataFrame(rows)).set_index("sampler")
    assert table.loc["random", "labels_to_random_final"] == "75"
    assert table.loc["entropy", "labels_to_random_final"] == "50"  # matched random with a third fewer labels
    assert table.loc["bad", "labels_to_random_final"] == "not reached"


def test_forecast_table_per_sampler():
    from alod.report import forecast_table

    rows = []
    for sampler, b in (("random", 0.5), ("hybrid", 0.8)):
        for seed in (0, 1, 2):
            for cycle, n in enumerate((20, 40, 60, 80), start=1):
                rows.append({"sampler": sampler, "seed": seed, "cycle": cycle, "labeled_images": n,
                             "mAP50": 0.4 - b * n ** -0.5 + 0.002 * seed})
    rows.append({"sampler": "short", "seed": 0, "cycle": 1, "labeled_images": 20, "mAP50": 0.1})
    table = forecast_table(pd.DataFrame(rows), target=0.35).set_index("sampler")
    assert list(table.index) == ["hybrid", "random", "short"]
    assert table.loc["random", "now"] == "80" and "bootstrap over 3 seeds" in table.loc["random", "band"]
    assert {"mAP50@1.5x (120)", "mAP50@2x (160)", "mAP50@5x (400)", "labeled_images_to_0.35"} <= set(table.columns)
    assert table.loc["random", "mAP50@2x (160)"].startswith("0.36")  # 0.4 - 0.5/sqrt(160) = 0.3605 (+ seeds)
    assert "no forecast from 1 label count" in table.loc["short", "forecast"]
    assert not table.loc["random", "fit"].endswith("(a at bound)")


def test_forecast_table_marks_a_fit_whose_asymptote_is_at_the_bound():
    from alod.report import forecast_table

    rows = [{"sampler": "random", "seed": 0, "cycle": c, "labeled_images": 50 * c, "mAP50": 0.05 * c}
            for c in (1, 2, 3, 4)]  # a straight line: nothing for the fit to saturate on
    assert forecast_table(pd.DataFrame(rows)).loc[0, "fit"].endswith("(a at bound)")
