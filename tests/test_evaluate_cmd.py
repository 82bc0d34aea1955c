"""`alod evaluate` through the real CLI group: a checkpoint or a bare state dict on a split."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from alod.data.synthetic import write_dataset
from alod.models import build_detector, save_checkpoint
from entrypoints.cli import cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(root / "data", train=0, val=3, seed=0)
    torch.manual_seed(0)
    model = build_detector("tiny")
    save_checkpoint(root / "ckpt.pt", model=model, epoch=0, config={})
    torch.save(model.state_dict(), root / "state.pth")
    return root


@pytest.mark.parametrize("weights", ["ckpt.pt", "state.pth"])
def test_evaluate_prints_the_table(data, weights):
    result = CliRunner().invoke(cli, ["evaluate", "--weights", str(data / weights), "--data", str(data / "data")])
    assert result.exit_code == 0, result.output
    assert "mAP50 " in result.output and "mAP50-95" in result.output and "3 images" in result.output


def test_evaluate_needs_one_model_source(data):
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(data / "data")])
    assert result.exit_code != 0 and "exactly one of --weights or --model-uri" in result.output
