"""The label-efficiency benchmark end to end in its CI setting (--small): every requested
sampler, both protocols, the warm-start comparison and both references make it into the
tables, the files and MLflow."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def tracking_in(tmp_path, monkeypatch):
    """A fresh SQLite store in tmp_path (artifacts in its ./mlruns), no run or experiment inherited from the
    environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


@pytest.mark.slow  # about 2-3 minutes on 2 cores
def test_small_setting_reports_every_sampler_and_the_references(tmp_path, capsys, load_benchmark,
                                                                 tracking_in):
    bench = load_benchmark("label_efficiency")
    samplers = ["random", "hybrid"]  # hybrid: the set-based path (features + labeled set)
    out = tmp_path / "out"
    # auto (a bandit over random and boxcount) runs under pool only
    argv = ["--small", "--samplers", ",".join([*samplers, "auto"]), "--auto-samplers", "random,boxcount",
            "--protocols", "pool,batches", "--warm-start-samplers", "random", "--out", str(out), "--threads", "1"]
    assert bench.main(argv) == 0

    table = pd.read_csv(out / "table.csv")
    for protocol, names in (("pool", [*samplers, "auto"]), ("batches", samplers)):
        rows = table[table["protocol"] == protocol]
        assert rows["sampler"].tolist() == [bench.ZERO, *names, bench.REFERENCE]
    budgets = [c for c in table.columns if c.endswith("%)")]
    assert budgets == ["0 (0 %)", "8 (20 %)", "16 (40 %)", "40 (100 %)"]  # zero, 2 cycles x 8 of 40, full pool
    assert {"AUC", "pool to 95 % of full", "train image-iterations"} <= set(table.columns)
    printed = capsys.readouterr().out
    for name in [*samplers, bench.REFERENCE, bench.ZERO]:
        assert f"| {name} |" in printed
    assert "beats random" in printed and "bar (95 % of full pool" in printed and "room to learn" in printed
    assert "### protocol pool" in printed and "### protocol batches" in printed
    assert "auto: AUC rank among 3 samplers" in printed and "auto seed 0 chose: c1 random, c2 " in printed

    curves = pd.read_csv(out / "curves.csv")
    assert sorted(curves["sampler"].unique()) == sorted([*samplers, "auto"])
    assert set(curves.loc[(curves["sampler"] == "auto") & (curves["cycle"] == 2), "auto_choice"]) <= {
        "random", "boxcount"}
    assert set(curves["cycle"]) == {1, 2} and curves["test_mAP50"].notna().all()
    assert (curves["train_image_iterations"] > 0).all()
    pool_later = curves[(curves["protocol"] == "pool") & (curves["cycle"] == 2) & (curves["sampler"] == "hybrid")]
    assert (pool_later["images_scored"] > 0).all()  # the pool protocol re-scores the unlabeled pool
    assert (out / "learning_curve.png").stat().st_size > 0

    breakdown = pd.read_csv(out / "breakdown.csv").set_index("run")
    assert {bench.ZERO, bench.REFERENCE, "random / pool", "hybrid / batches", "random / pool / warm start"} <= set(
        breakdown.index)
    assert {"AP50.car", "AP50.traffic sign", "mAP50.daytime"} <= set(breakdown.columns)
    cost = pd.read_csv(out / "cost.csv")
    assert cost["cycles"].tolist() == ["reset to starting weights", "warm start", "once"]

    # One cycle run per protocol x sampler x seed (+ warm start) carrying test_mAP50 per cycle,
    # a zero-label and a full-pool reference, one summary run.
    from alod import tracking

    runs = tracking.search_runs(bench.EXPERIMENT)
    by_step = {}
    for r in runs:
        by_step.setdefault(r.data.tags["alod.step"], []).append(r)
    assert len(by_step["cycle"]) == 2 * len(samplers) + 2
    for r in by_step["cycle"]:
        assert sorted(tracking.metric_steps(r.info.run_id, "test_mAP50")) == [1, 2]
    roles = sorted(r.data.tags.get("alod.role", "ranking model") for r in by_step["pretrain"])
    assert roles == ["full_pool_reference", "ranking model", "zero_label_reference"]
    assert len(by_step["benchmark"]) == 1

    # A second invocation reuses every finished run and reports the same table.
    assert bench.main(argv) == 0
    assert "(reused)" in capsys.readouterr().out
    assert pd.read_csv(out / "table.csv").equals(table)
    assert len(tracking.search_runs(bench.EXPERIMENT, "tags.`alod.step` = 'cycle'")) == 2 * len(samplers) + 2

    # --replot re-makes every table, the verdict and the figure from the folder alone: same text, no runs
    made = {name: (out / name).read_text() for name in ("table.md", "table.csv", "breakdown.csv", "cost.csv",
                                                         "verdict.txt", "curves.csv")}
    for name in ("table.md", "table.csv", "breakdown.csv", "cost.csv", "verdict.txt", "learning_curve.png"):
        (out / name).unlink()
    runs_before = len(tracking.search_runs(bench.EXPERIMENT))
    assert bench.main(["--replot", str(out)]) == 0
    assert "nothing trained, nothing logged" in capsys.readouterr().out
    assert {name: (out / name).read_text() for name in made} == made
    assert (out / "learning_curve.png").stat().st_size > 0
    assert len(tracking.search_runs(bench.EXPERIMENT)) == runs_before
    with pytest.raises(SystemExit, match="no summary.json"):
        bench.main(["--replot", str(tmp_path)])


@pytest.mark.slow  # about 1-2 minutes on 2 cores
def test_both_loops_report_side_by_side_at_equal_steps(tmp_path, capsys, load_benchmark, tracking_in):
    bench = load_benchmark("label_efficiency")
    with pytest.raises(SystemExit):  # the extra warm runs are for the reset loop's cost table
        bench.parse_args(["--small", "--loops", "warm", "--warm-start-samplers", "random"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--small", "--loops", "reset,cold"])
    out = tmp_path / "out"
    argv = ["--small", "--samplers", "random", "--protocols", "pool", "--loops", "reset,warm", "--out", str(out),
            "--threads", "1", "--min-iterations", "4"]
    assert bench.main(argv) == 0

    table = pd.read_csv(out / "table.csv")
    assert table[["protocol", "loop"]].drop_duplicates().values.tolist() == [["pool", "reset"], ["pool", "warm"]]
    for loop in ("reset", "warm"):
        assert table.loc[table["loop"] == loop, "sampler"].tolist() == [bench.ZERO, "random", bench.REFERENCE]
    printed = capsys.readouterr().out
    assert "### protocol pool, reset" in printed and "### protocol pool, warm" in printed
    assert (out / "learning_curve.png").stat().st_size > 0 and (out / "learning_curve_warm.png").stat().st_size > 0
    cost = pd.read_csv(out / "cost.csv")
    assert cost["cycles"].tolist() == ["reset to starting weights", "warm start", "once"]
    # warm start against reset, seed by seed, from the same runs the tables show
    curves = pd.read_csv(out / "curves.csv")
    final = curves[curves["cycle"] == curves["cycle"].max()].pivot_table(index="seed", columns="reset",
                                                                          values="test_mAP50")
    diff = final[False] - final[True]
    gain = cost.loc[cost["cycles"] == "warm start", "warm - reset (same seeds)"].item()
    assert gain.startswith(f"{diff.mean():+.4f}") and gain.endswith(f"(ahead in {(diff > 0).sum()}/{len(diff)})")

    from alod import tracking

    cycle_runs = tracking.search_runs(bench.EXPERIMENT, "tags.`alod.step` = 'cycle'")
    params = sorted((r.data.params["reset"], r.data.params["min_iterations"]) for r in cycle_runs)
    assert params == [("False", "4"), ("True", "4")]  # the same steps per cycle in both loops


def test_verdict_names_a_single_run_below_zero_labels_that_the_mean_hides(load_benchmark):
    """A seed whose cycle 1 ends below the starting weights is named even when the mean over seeds is
    above them; a point shared by every sampler of a seed (pool's cycle-1 pick) counts once."""
    bench = load_benchmark("label_efficiency")
    rows = []
    for sampler in ("random", "entropy"):
        for seed, first in ((0, 0.20), (1, 0.15)):
            rows += [{"sampler": sampler, "seed": seed, "labeled_images": 20, "test_mAP50": first},
                     {"sampler": sampler, "seed": seed, "labeled_images": 40,
                      "test_mAP50": 0.25 + 0.01 * seed + (0.02 if sampler == "entropy" else 0.0)}]
    curves = pd.DataFrame(rows).assign(train_image_iterations=100)
    stats = bench.per_seed_stats(curves, pool=100, target=0.3)
    lines = bench.verdict(curves, stats, ["random", "entropy"], 100, 0.3, 0.95, zero=0.16)
    line = next(x for x in lines if x.startswith("every budget above the zero-label model"))
    assert line.startswith("every budget above the zero-label model: yes on the mean over seeds")
    assert "single runs below it: 1 of 6 points: seed 1 at 20 (0.1500)" in line
    lines = bench.verdict(curves, stats, ["random", "entropy"], 100, 0.3, 0.95, zero=0.10)
    assert any(x.endswith("every run above it at every budget") for x in lines)
