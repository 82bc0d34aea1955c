"""CUDA paths: bf16 autocast and channels_last training, GPU inference, GPU checkpoints on CPU,
SIGTERM on CUDA.

Skipped without a GPU (CI has none); run them on a GPU machine with
`pytest tests/engine/test_cuda.py`. The README records the card they last passed on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from alod.data.dataset import DetectionDataset
from alod.engine.infer import predict
from alod.engine.train import Preempted, TrainConfig, fit
from alod.models import build_detector, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _overfit(frames, root, *, amp: bool, checkpoint: Path | None = None) -> tuple[torch.nn.Module, list[dict]]:
    torch.manual_seed(0)
    model = build_detector("tiny")
    config = TrainConfig(epochs=16, batch_size=4, lr=0.16, warmup_iters=12, clip_grad_norm=5.0, workers=2, seed=0,
                         device="cuda", amp=amp)
    history = fit(model, DetectionDataset(frames * 8, root, train=True), config, checkpoint_path=checkpoint,
                  progress=False)
    return model, history


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_training_on_cuda_learns(scenes, amp: bool) -> None:
    evaluate = pytest.importorskip("alod.engine.evaluate").evaluate
    frames, root = scenes
    model, hist = _overfit(frames, root, amp=amp)
    assert next(model.parameters()).is_cuda
    assert hist[-1]["loss"] < hist[0]["loss"] / 4
    preds = list(predict(model, DetectionDataset(frames, root), device="cuda", batch_size=6))
    for p, f in zip(preds, frames):
        assert p.boxes.dtype == np.float32 and p.scores.dtype == np.float32
        assert (p.width, p.height) == (f.width, f.height)
    assert evaluate(frames, preds).mAP50 >= 0.6


def test_gpu_checkpoint_predicts_the_same_on_cpu(scenes, tmp_path: Path) -> None:
    """Train on a GPU, rank or serve on a CPU: the checkpoint carries no device."""
    frames, root = scenes
    ckpt = tmp_path / "gpu.pth"
    model, _ = _overfit(frames, root, amp=True, checkpoint=ckpt)
    state = load_checkpoint(ckpt)["model"]
    assert all(t.device.type == "cpu" for t in state.values())
    on_cpu = build_detector("tiny")
    on_cpu.load_state_dict(state)
    data = DetectionDataset(frames, root)
    gpu = list(predict(model, data, device="cuda", batch_size=6))
    cpu = list(predict(on_cpu, data, device="cpu", batch_size=6))
    for g, c in zip(gpu, cpu):
        confident_g, confident_c = g.scores > 0.5, c.scores > 0.5
        assert confident_g.sum() == confident_c.sum(), g.name
        np.testing.assert_allclose(g.boxes[confident_g], c.boxes[confident_c], atol=1.0)


def test_sigterm_on_cuda_writes_a_resumable_checkpoint(scenes, tmp_path: Path, monkeypatch) -> None:
    import signal

    frames, root = scenes

    def stop_in_second_step(point: str, where: str) -> None:
        if point == "train_step" and where == "0.1":
            signal.raise_signal(signal.SIGTERM)  # fit's handler finishes the step, then stops

    monkeypatch.setattr("alod.engine.train.maybe_fail", stop_in_second_step)
    ckpt = tmp_path / "stop.pth"
    data = DetectionDataset(frames * 2, root, train=True)  # 3 steps an epoch
    config = TrainConfig(epochs=2, batch_size=4, lr=0.04, warmup_iters=2, workers=0, device="cuda", amp=True)
    with pytest.raises(Preempted) as info:
        fit(build_detector("tiny"), data, config, checkpoint_path=ckpt, progress=False)
    assert info.value.code == 143
    assert load_checkpoint(ckpt)["step_in_epoch"] == 2
    monkeypatch.setattr("alod.engine.train.maybe_fail", lambda *a: None)
    hist = fit(build_detector("tiny"), data, config, checkpoint_path=ckpt, progress=False)
    assert [h["epoch"] for h in hist] == [0, 1] and hist[0]["images"] == len(data)
    assert all(np.isfinite(h["loss"]) for h in hist)
