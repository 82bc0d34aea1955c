"""`alod run` (the main step) refuses what a later step would refuse before pretrain trains anything."""

from __future__ import annotations

import pytest
from click.testing import CliRunner


@pytest.mark.parametrize("options, message", [
    (["--samplers", "random,bogus"], "unknown sampler 'bogus'"),
    (["--samplers", "auto", "--auto-samplers", "random,nope", "--protocol", "pool"], "unknown sampler 'nope'"),
    (["--samplers", "auto", "--protocol", "batches"], "needs protocol 'pool'"),
    (["--samplers", "random,random"], "samplers random,random name random more than once"),
    (["--seeds", "0,1,0"], "seeds 0,1,0 name 0 more than once"),
    (["--samplers", ""], "no samplers given"),
    (["--seeds", ""], "no seeds given"),
    (["--cycles", "3", "--per-cycle", "5"], "budget 3 cycles x 5 images = 15 exceeds the pool of 12"),
    (["--cycles", "4", "--per-cycle", "2", "--batches", "3", "--batch-images", "4"],
     "4 cycles but the ranking has only 3 batch(es)"),
    (["--cycles", "2", "--per-cycle", "5", "--batches", "4", "--batch-images", "4"],
     "per_cycle 5 exceeds the smallest ranking batch (4 images)"),
    (["--cycles", "2", "--per-cycle", "2", "--target-map50", "1.5"], "target_map50 must be in [0, 1)"),
])
def test_bad_input_is_refused_before_any_run_starts(options, message, tiny_data, tmp_path, sqlite_tracking):
    from entrypoints.cli import cli

    root, _, _ = tiny_data
    with sqlite_tracking(tmp_path):
        import mlflow

        result = CliRunner().invoke(cli, ["run", "--data", str(root), "--arch", "tiny", "--pretrain-epochs", "0",
                                          "--cycles", "2", "--per-cycle", "2", "--batches", "3",
                                          "--batch-images", "4", *options, "--experiment-name", "alod-main-input",
                                          "--work-dir", str(tmp_path / "work")])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        # nothing was pretrained or ranked first: the experiment was never even created
        assert mlflow.MlflowClient().get_experiment_by_name("alod-main-input") is None


def test_the_printed_forecast_explains_a_fit_at_the_bound(capsys):
    import pandas as pd

    from alod.steps.main import print_forecast

    rising = [{"sampler": "random", "seed": 0, "cycle": c, "labeled_images": 50 * c, "mAP50": 0.05 * c}
              for c in (1, 2, 3, 4)]
    print_forecast(pd.DataFrame(rising), None)
    out = capsys.readouterr().out
    assert "(a at bound)" in out and "extrapolate" in out
    saturating = [{**r, "mAP50": 0.4 - 0.5 * r["labeled_images"] ** -0.5} for r in rising]
    print_forecast(pd.DataFrame(saturating), None)
    assert "at bound" not in capsys.readouterr().out
