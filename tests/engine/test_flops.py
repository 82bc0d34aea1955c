"""FLOPs per image, accelerator peaks, MFU, and their place in fit's epoch stats."""

from __future__ import annotations

import pytest
import torch

from alod.data.dataset import DetectionDataset
from alod.engine import flops
from alod.engine.flops import PEAK_ENV, forward_flops, mfu, peak_flops
from alod.engine.train import TrainConfig, fit
from alod.models import build_detector


def test_forward_flops_is_stable_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = build_detector("tiny").train()
    rng = torch.get_rng_state()
    first = forward_flops(model, (320, 180))
    assert first > 0 and forward_flops(model, (320, 180)) == first
    assert model.training  # train mode restored
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched
    model.eval()
    assert forward_flops(model, (320, 180)) == first and not model.training  # eval mode kept


def test_mfu_arithmetic() -> None:
    assert flops.model_flops_per_second(10, 2e9) == pytest.approx(6e10)  # training: 3x forward
    assert flops.model_flops_per_second(10, 2e9, train=False) == pytest.approx(2e10)
    assert mfu(10, 2e9, 1e12) == pytest.approx(0.06)
    assert mfu(10, 2e9, 1e12, train=False) == pytest.approx(0.02)
    assert mfu(10, 2e9, None) is None


def test_peak_flops_cpu_env_and_table(monkeypatch) -> None:
    monkeypatch.delenv(PEAK_ENV, raising=False)
    assert peak_flops("cpu") is None and peak_flops(torch.device("cpu")) is None
    monkeypatch.setenv(PEAK_ENV, "989")
    assert peak_flops("cpu") == pytest.approx(989e12)  # the override holds on any device
    for bad in ("fast", "0"):
        monkeypatch.setenv(PEAK_ENV, bad)
        with pytest.raises(ValueError, match=PEAK_ENV):
            peak_flops("cpu")
    monkeypatch.delenv(PEAK_ENV)

    # the table, by device name, without a GPU
    monkeypatch.setattr(flops.torch.cuda, "is_available", lambda: True)
    names = {
        "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,
        "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12, "NVIDIA A10": 125e12,
        "NVIDIA L4": 121e12, "Tesla V100-SXM2-16GB": 125e12, "NVIDIA GeForce RTX 4090": 165e12,
        "NVIDIA A10G": None, "NVIDIA L40S": None, "NVIDIA GeForce GTX 1080": None,
    }
    for name, peak in names.items():
        monkeypatch.setattr(flops.torch.cuda, "get_device_name", lambda device, name=name: name)
        assert peak_flops("cuda:0") == peak, name


def test_fit_logs_model_flops_and_mfu(scenes, monkeypatch) -> None:
    frames, root = scenes
    ds = DetectionDataset(frames[:2], root, train=True)
    config = TrainConfig(epochs=1, batch_size=2, lr=0.01, warmup_iters=0, workers=0, device="cpu")
    model = build_detector("tiny")
    per_image = forward_flops(model, (320, 180))
    monkeypatch.delenv(PEAK_ENV, raising=False)
    (stats,) = fit(model, ds, config, progress=False, flops_per_image=per_image)
    assert stats["model_tflops_per_second"] > 0
    assert stats["model_tflops_per_second"] == pytest.approx(3 * per_image * stats["images_per_second"] / 1e12)
    assert "mfu" not in stats  # no known peak on CPU
    monkeypatch.setenv(PEAK_ENV, "2")
    (stats,) = fit(model, ds, config, progress=False, flops_per_image=per_image)
    assert stats["mfu"] == pytest.approx(stats["model_tflops_per_second"] / 2)
    (stats,) = fit(model, ds, config, progress=False)
    assert "model_tflops_per_second" not in stats and "mfu" not in stats  # FLOPs are opt-in
