"""Throughput of alod's loops against plain baselines, side by side in one process.

1. training images/s: alod's `fit` vs a bare torchvision loop (same model, data, batch);
2. ranking inference images/s: alod's batched `predict` vs a naive one-image-at-a-time PIL loop;
3. evaluation seconds for N images: pycocotools vs faster-coco-eval (and that they agree).

    python benchmarks/throughput.py [--train-images 64] [--repeats 3] [--eval-images 10000] [--log]

Runs alternate (A B A B ...) so drift on a shared machine hits both sides; the
table reports the median of the repeats. `--log` also logs the table to MLflow
(experiment alod-benchmarks).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alod.data.bdd100k import load_labels
from alod.data.dataset import DetectionDataset, collate_fn
from alod.data.frames import Frame
from alod.data.synthetic import write_dataset
from alod.engine.evaluate import evaluate
from alod.engine.infer import predict
from alod.engine.train import TrainConfig, fit
from alod.models import build_detector


def bare_train_epoch(model, dataset, batch_size: int, lr: float) -> float:
    """The loop of torchvision's detection reference, nothing else; returns seconds."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_fn,
                                         num_workers=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    started = time.perf_counter()
    for images, targets in loader:
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        losses = model(list(images), targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def alod_train_epoch(model, dataset, batch_size: int, lr: float) -> float:
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, lr_reference_batch=batch_size,
                         warmup_iters=0, workers=0, aspect_grouping=True)
    started = time.perf_counter()
    fit(model, dataset, config, progress=False)
    return time.perf_counter() - started


def naive_predict(model, paths) -> float:
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            model([to_tensor(Image.open(path).convert("RGB"))])
    return time.perf_counter() - started


def alod_predict(model, dataset, batch_size: int, workers: int) -> float:
    started = time.perf_counter()
    for _ in predict(model, dataset, batch_size=batch_size, workers=workers):
        pass
    return time.perf_counter() - started


def eval_inputs(n: int, seed: int = 0) -> tuple[list[Frame], list[Frame]]:
    """n 1280x720 frames of ~20 boxes, and jittered predictions with some misses and false positives."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for i in range(n):
        k = int(rng.integers(0, 40))
        xy = rng.uniform([0, 0], [1200, 660], size=(k, 2))
        wh = rng.uniform(4, 200, size=(k, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [1280, 720])], axis=1)
        labels = rng.integers(1, 11, size=k)
        gts.append(Frame(f"im{i:06d}.jpg", boxes, labels, width=1280, height=720))
        keep = rng.random(k) > 0.2
        jitter = rng.normal(0, 4, size=(int(keep.sum()), 4))
        fp = int(rng.integers(0, 5))
        pboxes = np.concatenate([boxes[keep] + jitter, rng.uniform(0, 600, size=(fp, 4)) + [0, 0, 40, 40]])
        pboxes[:, 2:] = np.maximum(pboxes[:, 2:], pboxes[:, :2] + 1)
        plabels = np.concatenate([labels[keep], rng.integers(1, 11, size=fp)])
        preds.append(Frame(gts[-1].name, pboxes, plabels, scores=rng.uniform(0.05, 1, size=len(plabels))))
    return gts, preds


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--infer-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-images", type=int, default=10000)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--log", action="store_true", help="log the table to MLflow (alod-benchmarks)")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    torch.set_num_threads(torch.get_num_threads())
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, train=max(args.train_images, args.infer_images), val=0, seed=0, size=(width, height))
        frames, _ = load_labels(root / "labels" / "det_20" / "det_train.json")
        images = root / "images" / "100k" / "train"
        train_set = DetectionDataset(frames[: args.train_images], images, train=True)
        infer_frames = frames[: args.infer_images]
        infer_set = DetectionDataset(infer_frames, images, train=False)

        torch.manual_seed(0)
        model = build_detector(args.arch)
        bare_train_epoch(model, DetectionDataset(frames[:8], images, train=True), args.batch_size, 0.01)  # warm-up
        ours, bare = [], []
        for _ in range(args.repeats):
            ours.append(alod_train_epoch(model, train_set, args.batch_size, 0.01))
            bare.append(bare_train_epoch(model, train_set, args.batch_size, 0.01))
        n = len(train_set)
        rows.append(("train images/s", f"alod fit ({args.arch})", n / statistics.median(ours),
                     "bare torchvision loop", n / statistics.median(bare),
                     f"overhead {100 * (median_ratio(ours, bare) - 1):+.1f} %"))

        model.eval()
        ours, naive = [], []
        paths = [images / f.name for f in infer_frames]
        for _ in range(args.repeats):
            ours.append(alod_predict(model, infer_set, batch_size=8, workers=1))
            naive.append(naive_predict(model, paths))
        n = len(infer_frames)
        rows.append(("ranking inference images/s", "alod predict (batch 8, 1 worker)", n / statistics.median(ours),
                     "one image at a time, PIL", n / statistics.median(naive),
                     f"speed-up x{median_ratio(naive, ours):.2f}"))

    gts, preds = eval_inputs(args.eval_images)
    seconds, results = {}, {}
    for backend in ("pycocotools", "faster_coco_eval"):
        try:
            started = time.perf_counter()
            results[backend] = evaluate(gts, preds, backend=backend)
            seconds[backend] = time.perf_counter() - started
        except ImportError:
            seconds[backend] = float("nan")
    diff = abs(results["pycocotools"].mAP50 - results["faster_coco_eval"].mAP50) if len(results) == 2 else float("nan")
    rows.append((f"evaluation seconds, {args.eval_images} images", "faster-coco-eval",
                 seconds["faster_coco_eval"], "pycocotools", seconds["pycocotools"],
                 f"|ΔmAP50| {diff:.1e}"))

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    header = ("measure", "alod", "value", "baseline", "value", "")
    lines = [f"machine: {machine}; median of {args.repeats} alternating runs",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for measure, a, av, b, bv, note in rows:
        lines.append(f"| {measure} | {a} | {av:.2f} | {b} | {bv:.2f} | {note} |")
    table = "\n".join(lines)
    print(table)
    if args.log:
        from alod import tracking

        tracking.setup("alod-benchmarks")
        with tracking.run("benchmark", run_name="throughput", tags={"alod.benchmark": "throughput"}):
            tracking.log_params(vars(args))
            tracking.log_dict({"table": table}, "throughput.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
