"""Training and ranking throughput for nproc = 1, 2, ... processes under torchrun.

    python benchmarks/scaling.py [--nproc 1,2] [--arch tiny] [--size 320x180] [--images 64]

On CPU the processes use gloo and share the machine's cores, so this measures
alod's distributed overhead, not a speed-up. On a GPU machine run one process
per GPU with `--arch fasterrcnn_resnet50_fpn --size 1280x720`: the table then
adds model-FLOP utilisation against `--peak-tflops` and projects the hours of
the study's full protocol (pretrain 70 % x 50 epochs + 13 cycles x 50 epochs
on 1 000..13 000 images, plus ranking 70 000 images).

FLOPs per image are counted once with torch.utils.flop_counter on one forward
pass (training counted as 3x forward, the usual forward+backward estimate).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from alod.params import argparse_kwargs

STUDY = {"pool": 70_000, "pretrain_fraction": 0.7, "epochs": 50, "cycles": 13, "per_cycle": 1_000}


def study_image_passes() -> tuple[float, float]:
    """(training images processed, images ranked) by the study's full protocol."""
    pretrain = STUDY["pool"] * STUDY["pretrain_fraction"] * STUDY["epochs"]
    cycles = sum(STUDY["per_cycle"] * c for c in range(1, STUDY["cycles"] + 1)) * STUDY["epochs"]
    return pretrain + cycles, STUDY["pool"]


def worker(args) -> None:
    """One torchrun process: time a training epoch and a sharded ranking pass."""
    from alod.data.bdd100k import load_labels
    from alod.data.dataset import DetectionDataset
    from alod.engine import distributed
    from alod.engine.distributed import default_device
    from alod.engine.flops import forward_flops, peak_flops
    from alod.engine.infer import predict_all
    from alod.engine.train import TrainConfig, fit
    from alod.models import build_detector

    distributed.init_distributed()
    device = default_device()
    root = Path(args.data)
    frames, _ = load_labels(root / "labels" / "det_20" / "det_train.json")
    images = root / "images" / "100k" / "train"
    torch.manual_seed(0)
    model = build_detector(args.arch, weights=args.weights or None, finetune=True).to(device)
    config = TrainConfig(epochs=2, batch_size=args.batch_size, lr=0.01, warmup_iters=0, workers=args.workers,
                         device=str(device), amp=device.type == "cuda")
    history = fit(model, DetectionDataset(frames, images, train=True), config, progress=False)
    train = history[-1]  # epoch 2: warm caches, no start-up

    def rank_seconds() -> float:
        distributed.barrier()
        started = time.perf_counter()
        predict_all(model, frames, images, device=device, batch_size=args.eval_batch_size, workers=args.workers)
        distributed.barrier()
        return time.perf_counter() - started

    rank_seconds()  # warm-up: cuDNN autotuning, allocator
    seconds = rank_seconds()
    if distributed.is_main_process():
        Path(args.result).write_text(json.dumps({
            "train_images_per_second": train["images"] / train["seconds"],
            "rank_images_per_second": len(frames) / seconds,
            "flops_per_image": forward_flops(model, tuple(map(int, args.size.split("x")))),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "peak_flops": peak_flops(device),  # one device's; None on CPU or an unknown GPU
        }))
    distributed.cleanup()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", default="1,2")
    parser.add_argument("--arch", **argparse_kwargs("arch", default="tiny"))
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", **argparse_kwargs("batch_size"))
    parser.add_argument("--eval-batch-size", **argparse_kwargs("eval_batch_size"))
    parser.add_argument("--workers", **argparse_kwargs("workers", default=0))
    parser.add_argument("--weights", default="", help="local weights to start from, e.g. torchvision's COCO file "
                                                       "(its frozen BatchNorm and fixed stages change the speed)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the accelerator's dense bf16 peak (e.g. 989 for an H100 SXM) for utilisation; "
                             "default: alod.engine.flops.peak_flops (known GPUs, or ALOD_PEAK_TFLOPS)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    from alod.data.synthetic import write_dataset
    from alod.engine.flops import mfu

    width, height = map(int, args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "data", train=args.images, val=0, seed=0, size=(width, height))
        for nproc in [int(n) for n in args.nproc.split(",")]:
            result = Path(tmp) / f"result-{nproc}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   __file__, "--worker", "--data", str(Path(tmp) / "data"), "--result", str(result),
                   "--arch", args.arch, "--size", args.size, "--batch-size", str(args.batch_size),
                   "--eval-batch-size", str(args.eval_batch_size), "--workers", str(args.workers),
                   "--weights", args.weights]
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            rows.append((nproc, json.loads(result.read_text())))

    train_images, rank_images = study_image_passes()
    print(f"arch {args.arch}, images {args.size}, {args.images} images, batch {args.batch_size}/process, "
          f"{'weights ' + args.weights if args.weights else 'random init'}")
    print("| nproc | device | train img/s | rank img/s | GFLOPs/img (fwd) | utilisation | study protocol, hours |")
    print("|---|---|---|---|---|---|---|")
    for nproc, r in rows:
        peak = args.peak_tflops * 1e12 if args.peak_tflops else r.get("peak_flops")
        if peak and r["device"] != "cpu":
            peak *= nproc  # one GPU per process: images/s are summed over all of them
        util = mfu(r["train_images_per_second"], r["flops_per_image"], peak)  # fwd+bwd = 3x forward
        util = f"{100 * util:.1f} %" if util is not None else "n/a (no peak given)"
        hours = (train_images / r["train_images_per_second"] + rank_images / r["rank_images_per_second"]) / 3600
        print(f"| {nproc} | {r['device']} | {r['train_images_per_second']:.1f} | {r['rank_images_per_second']:.1f} "
              f"| {r['flops_per_image'] / 1e9:.1f} | {util} | {hours:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
