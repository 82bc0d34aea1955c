"""Model FLOPs per image, accelerator peaks, and model-FLOP utilisation (MFU).

FLOPs are counted once with torch.utils.flop_counter on one forward pass;
training counts as 3x forward (forward + backward, the usual estimate). MFU is
achieved model FLOP/s over the device's dense bf16 peak: it measures how well
the hardware is used, independent of recomputation or padding tricks.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from alod.models import unwrap

PEAK_ENV = "ALOD_PEAK_TFLOPS"
TRAIN_FLOPS_FACTOR = 3.0  # forward + backward (~2x forward)

# Dense bf16 tensor-core peaks (fp16 for V100), FLOP/s, by a pattern of
# torch.cuda.get_device_name. First match wins: specific names before general
# ones, and word boundaries keep "A10" from matching "A100"/"A10G", "L4" from "L40".
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756e12),
    (r"H100", 989e12),  # SXM (the name reads e.g. "NVIDIA H100 80GB HBM3")
    (r"H200", 989e12),
    (r"A100", 312e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),
    (r"V100", 125e12),
    (r"RTX 4090", 165e12),
)


def forward_flops(model: nn.Module, image_size: tuple[int, int] = (1280, 720)) -> float:
    """FLOPs of one eval-mode forward pass on one (width, height) image.

    The image is drawn from a fixed private generator (the global RNG is left
    alone, and two calls count the same); the model's train/eval mode is
    restored afterwards. Costs one forward pass: call it once, outside loops."""
    from torch.utils.flop_counter import FlopCounterMode

    bare = unwrap(model)
    device = next(bare.parameters()).device
    w, h = image_size
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = bare.training
    bare.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            bare([image])
    finally:
        bare.train(was_training)
    return float(counter.get_total_flops())


def peak_flops(device: torch.device | str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None (CPU, unknown GPU).

    ALOD_PEAK_TFLOPS (in TFLOP/s) overrides the table on any device."""
    env = os.environ.get(PEAK_ENV)
    if env:
        try:
            tflops = float(env)
        except ValueError:
            raise ValueError(f"{PEAK_ENV}={env!r} is not a number (TFLOP/s, e.g. 989)") from None
        if not tflops > 0:
            raise ValueError(f"{PEAK_ENV}={env!r} must be > 0 (TFLOP/s)")
        return tflops * 1e12
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for pattern, flops in PEAK_FLOPS:
        if re.search(pattern, name):
            return flops
    return None


def model_flops_per_second(images_per_second: float, flops_per_image: float, train: bool = True) -> float:
    """Achieved model FLOP/s; `flops_per_image` is forward FLOPs, training counts 3x."""
    return (TRAIN_FLOPS_FACTOR if train else 1.0) * flops_per_image * images_per_second


def mfu(images_per_second: float, flops_per_image: float, peak: float | None, train: bool = True) -> float | None:
    """Model-FLOP utilisation in 0..1: achieved model FLOP/s over `peak`; None without a peak.

    `peak` must cover every device that produced `images_per_second` (e.g. the
    per-GPU peak x world size for images summed over DDP ranks)."""
    if peak is None:
        return None
    return model_flops_per_second(images_per_second, flops_per_image, train) / peak


def throughput_stats(images_per_second: float, flops_per_image: float | None, peak: float | None, *,
                     devices: int = 1, train: bool = True, prefix: str = "") -> dict[str, float]:
    """`model_tflops_per_second` and, with a per-device `peak`, `mfu` over `devices` devices
    (the ones whose images `images_per_second` sums); empty without `flops_per_image`."""
    if not flops_per_image:
        return {}
    out = {f"{prefix}model_tflops_per_second": model_flops_per_second(images_per_second, flops_per_image, train) / 1e12}
    util = mfu(images_per_second, flops_per_image, peak * devices if peak else None, train)
    if util is not None:
        out[f"{prefix}mfu"] = util
    return out
