"""The benchmarks run end to end at tiny sizes and print every row of their tables."""

from __future__ import annotations

import re

import pytest

def test_throughput_table_has_every_row(capsys, load_benchmark):
    assert load_benchmark("throughput").main(["--train-images", "8", "--infer-images", "8", "--repeats", "1",
                                    "--eval-images", "40"]) == 0
    out = capsys.readouterr().out
    for row in ("train images/s", "ranking inference images/s", "evaluation seconds, 40 images"):
        assert row in out
    assert "overhead" in out and "|ΔmAP50|" in out


@pytest.mark.slow
def test_scaling_runs_one_and_two_processes(capsys, load_benchmark):
    assert load_benchmark("scaling").main(["--nproc", "1,2", "--images", "8", "--batch-size", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |") or
             line.startswith("| 2 |")]
    assert len(lines) == 2 and all("cpu" in line for line in lines)


def test_study_projection_counts_every_epoch(load_benchmark):
    train, ranked = load_benchmark("scaling").study_image_passes()
    assert ranked == 70_000
    # pretrain 49 000 x 50 + cycles (1..13 thousand images) x 50 epochs
    assert train == 49_000 * 50 + 91_000 * 50


@pytest.mark.slow
def test_main_jobs_compares_one_after_another_with_side_by_side(capsys, load_benchmark):
    load_benchmark("main_jobs").main(["--train", "24", "--val", "8", "--cycles", "1", "--per-cycle", "4",
                                      "--min-iterations", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "1.00x"
    assert all(re.fullmatch(r"0\.\d{4}", cell.strip()) for row in rows for cell in row.split("|")[4:6])


def test_finetune_recipe_scores_every_recipe_budget_and_the_full_pool(tmp_path, capsys, load_benchmark):
    assert load_benchmark("finetune_recipe").main(
        ["--out", str(tmp_path), "--pool", "8", "--val", "4", "--budgets", "4", "--seeds", "0,1", "--threads", "1",
         "--recipes", "lr=0.04,steps=2;lr=0.04,steps=2,rois=16,frozen_bn=1", "--full-pool", "lr=0.04,steps=2"]) == 0
    table = (tmp_path / "recipes.md").read_text()
    assert table in capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert {"zero labels (starting weights)", "lr=0.04,steps=2", "lr=0.04,steps=2,rois=16,frozen_bn=1"} <= set(rows)
    assert "| 4 | 2 |" in rows["lr=0.04,steps=2,rois=16,frozen_bn=1"]  # budget 4, both seeds
    assert "| 8 | 1 |" in rows["lr=0.04,steps=2"]  # the full pool, once
