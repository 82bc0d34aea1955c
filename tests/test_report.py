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
