"""Where a training step's time goes: torch.profiler over a few steps, top operators.

    python benchmarks/profile_train_step.py [--arch fasterrcnn_resnet50_fpn] [--size 1280x720] [--batch-size 8]

Runs the same step as `fit` (bf16 autocast and channels_last on CUDA) on a batch
of synthetic BDD100K-format scenes, after warm-up steps, and prints the operators
that take the most device time (CPU time on a CPU), and the share of the step
spent in convolutions and matrix products: what is left is where speed hides.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

DENSE = ("conv", "addmm", "mm", "bmm", "matmul", "linear", "cudnn", "gemm")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="fasterrcnn_resnet50_fpn")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    from alod.data.bdd100k import load_labels
    from alod.data.dataset import DetectionDataset, collate_fn
    from alod.data.synthetic import write_dataset
    from alod.engine.distributed import default_device
    from alod.engine.train import TrainConfig, build_optimizer
    from alod.models import build_detector

    device = default_device()
    cuda = device.type == "cuda"
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp), train=args.batch_size, val=0, seed=0, size=(width, height))
        frames, _ = load_labels(Path(tmp) / "labels" / "det_20" / "det_train.json")
        images, targets = collate_fn([DetectionDataset(frames, Path(tmp) / "images" / "100k" / "train",
                                                       train=True)[i] for i in range(len(frames))])
    images = [im.to(device) for im in images]
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    torch.manual_seed(0)
    model = build_detector(args.arch).to(device).train()
    if cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, TrainConfig(lr=0.01))

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    wall = (time.perf_counter() - started) / args.steps
    # Operators only (kernels are attributed to the operator that launched them, once each).
    ops = [e for e in prof.key_averages() if e.device_type == DeviceType.CPU]
    own = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(e, own) for e in ops) or 1
    dense = sum(getattr(e, own) for e in ops if any(d in e.key.lower() for d in DENSE))
    nms = sum(getattr(e, own) for e in ops if "nms" in e.key.lower())
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    busy = total / 1e6 / args.steps
    print(f"{args.arch}, {args.size}, batch {args.batch_size}, {name}: {wall * 1000:.0f} ms/step "
          f"({args.batch_size / wall:.1f} img/s under the profiler)")
    print(f"{'device' if cuda else 'CPU'} busy {busy * 1000:.0f} ms/step ({100 * busy / wall:.0f} % of the step); "
          f"of that: convolutions and matrix products {100 * dense / total:.0f} %, NMS {100 * nms / total:.0f} %")
    print(prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                    row_limit=args.top, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
