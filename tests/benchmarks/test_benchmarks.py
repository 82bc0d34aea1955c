"""The benchmarks run end to end at tiny sizes and print every row of their tables."""

from __future__ import annotations

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
