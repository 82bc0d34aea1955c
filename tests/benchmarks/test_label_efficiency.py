"""The label-efficiency benchmark end to end in its CI setting (--small): every requested
sampler and the full-pool reference make it into the table, the files and MLflow."""

from __future__ import annotations

import pandas as pd
import pytest

@pytest.mark.slow  # about 1-2 minutes on 2 cores
def test_small_setting_reports_every_sampler_and_the_reference(tmp_path, monkeypatch, capsys, load_benchmark):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # artifacts (./mlruns) stay in the tmp dir
    bench = load_benchmark("label_efficiency")
    samplers = ["random", "hybrid"]  # hybrid: the set-based path (features + labeled set)
    out = tmp_path / "out"
    assert bench.main(["--small", "--samplers", ",".join(samplers), "--out", str(out), "--threads", "1"]) == 0

    table = pd.read_csv(out / "table.csv")
    assert table["sampler"].tolist() == [*samplers, bench.REFERENCE]
    budgets = [c for c in table.columns if c.endswith("%)")]
    assert budgets == ["8 (20 %)", "16 (40 %)", "40 (100 %)"]  # 2 cycles x 8 of 40, then the full pool
    assert {"AUC", "pool to 95 % of full"} <= set(table.columns)
    printed = capsys.readouterr().out
    for name in [*samplers, bench.REFERENCE]:
        assert f"| {name} |" in printed
    assert "beats random" in printed and "bar (95 % of full pool" in printed

    curves = pd.read_csv(out / "curves.csv")
    assert sorted(curves["sampler"].unique()) == sorted(samplers)
    assert set(curves["cycle"]) == {1, 2} and curves["test_mAP50"].notna().all()
    assert (out / "learning_curve.png").stat().st_size > 0

    # One cycle run per sampler x seed carrying test_mAP50 per cycle, one reference, one summary run.
    from alod import tracking

    runs = tracking.search_runs(bench.EXPERIMENT)
    by_step = {}
    for r in runs:
        by_step.setdefault(r.data.tags["alod.step"], []).append(r)
    assert sorted(r.data.tags["alod.sampler"] for r in by_step["cycle"]) == sorted(samplers)
    for r in by_step["cycle"]:
        assert sorted(tracking.metric_steps(r.info.run_id, "test_mAP50")) == [1, 2]
    assert [r.data.tags.get("alod.role") for r in by_step["pretrain"]] == ["full_pool_reference"]
    assert len(by_step["benchmark"]) == 1

    # A second invocation reuses every finished run and reports the same table.
    assert bench.main(["--small", "--samplers", ",".join(samplers), "--out", str(out), "--threads", "1"]) == 0
    assert "(reused)" in capsys.readouterr().out
    assert pd.read_csv(out / "table.csv").equals(table)
    assert len(tracking.search_runs(bench.EXPERIMENT, "tags.`alod.step` = 'cycle'")) == len(samplers)
