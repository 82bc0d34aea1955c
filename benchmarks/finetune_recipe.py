"""Fine-tuning recipe: which way of training from the starting weights keeps what they know and learns the target.

Every active-learning cycle resets the detector to its starting weights and
trains on the labeled images. With a few dozen images, training as from
scratch (full learning rate, a warm-up capped at epoch 0's handful of steps)
can end below the starting weights themselves. This benchmark measures, on a
synthetic target pool, random labeled subsets of several sizes trained with
each recipe (learning rate, SGD steps, frozen backbone stages, proposals sampled per image
for the box head (`rois`; 0: the detector's own 128), warm-up steps:
torchvision's linear warm-up, capped at epoch 0's length; 0: none), over seeds, on
the *val* split (the split one may choose on), beside the zero-label model
(the starting weights alone) and the full pool:

    python benchmarks/finetune_recipe.py [--pool 500] [--val 200] [--budgets 25,100]
        [--seeds 0,1] [--recipes "lr=0.04,steps=150,freeze=0;lr=0.16,steps=150,freeze=0"] [--threads 1]

It prints a table (val mAP50 mean ± std over seeds, training image-iterations,
seconds) and writes it to OUT/recipes.md and recipes.csv. No MLflow.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from alod.params import argparse_kwargs

DEFAULT_RECIPES = ("lr=0.16,steps=150,freeze=0;lr=0.04,steps=150,freeze=0;lr=0.01,steps=150,freeze=0;"
                   "lr=0.04,steps=150,freeze=2;lr=0.04,steps=75,freeze=0")


def parse_recipe(text: str) -> dict:
    recipe = {"lr": 0.04, "steps": 150, "freeze": 0, "epochs": 1, "warmup": 1000, "frozen_bn": 0, "rois": 0}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in recipe:
            raise SystemExit(f"recipe {text!r}: unknown key {key!r} ({', '.join(recipe)})")
        recipe[key] = type(recipe[key])(float(value)) if key != "lr" else float(value)
    return recipe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="finetune-recipe")
    parser.add_argument("--data", default=None, help="a data root with train and val (default: synthesize)")
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--budgets", default="25,100")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help="';'-separated recipes of key=value pairs")
    parser.add_argument("--full-pool", default="lr=0.04,steps=750,freeze=0",
                        help="recipe for the full-pool model ('' to skip)")
    parser.add_argument("--weights", default=None, help="starting weights (default: the shipped tiny ones)")
    parser.add_argument("--batch-size", **argparse_kwargs("batch_size"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--full-pool-curve", action="store_true",
                        help="also score val after every epoch of the full-pool run (its learning curve; "
                             "mid-schedule points are under a learning rate not yet decayed, so they are "
                             "lower bounds on a run of that length)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from alod.data.dataset import DetectionDataset
    from alod.data.synthetic import write_dataset
    from alod.engine.evaluate import evaluate
    from alod.engine.infer import predict_all
    from alod.engine.train import TrainConfig, epochs_for_min_steps, fit
    from alod.models import build_detector, freeze_backbone_stages, freeze_batchnorm, training_overrides
    from alod.report import markdown_table
    from alod.starting_weights import model_weights, weights_choice
    from alod.data.splits import load_split

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else out / "data"
    if not args.data:
        write_dataset(data, train=args.pool, val=args.val, seed=args.data_seed)
    train, val = load_split(data, "train"), load_split(data, "val")
    weights = model_weights(weights_choice("tiny", args.weights))
    cpu = torch.device("cpu")

    def val_map(model) -> float:
        return evaluate(val.frames, predict_all(model, val.frames, val.images, device=cpu, batch_size=8,
                                                workers=0)).mAP50

    rows = []
    started = time.perf_counter()
    zero = val_map(build_detector("tiny", weights=weights).eval())
    rows.append({"recipe": "zero labels (starting weights)", "budget": 0, "seed": "-", "val_mAP50": zero,
                 "image_iterations": 0, "seconds": 0.0})
    print(f"zero labels: val mAP50 {zero:.4f}", flush=True)

    def run(recipe_text: str, frames, seed: int, budget: int, curve: bool = False) -> None:
        r = parse_recipe(recipe_text)
        torch.manual_seed(seed)
        # rois: proposals sampled per image for the box head (the tiny detector's default 128); the ROI
        # head's backward dominates a CPU step, so fewer samples buy steps.
        model = build_detector("tiny", weights=weights, finetune=True, **training_overrides(r["rois"]))
        freeze_backbone_stages(model, r["freeze"])
        if r["frozen_bn"]:
            freeze_batchnorm(model)
        epochs = epochs_for_min_steps(r["epochs"], r["steps"], len(frames), args.batch_size)
        config = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=r["lr"], seed=seed, workers=0,
                             device="cpu", clip_grad_norm=10.0, warmup_iters=r["warmup"])
        t0 = time.perf_counter()
        steps_per_epoch = -(-len(frames) // args.batch_size)

        def score_epoch(epoch: int, _stats: dict) -> None:
            if epoch + 1 < epochs:
                score = val_map(model)
                rows.append({"recipe": f"{recipe_text} (after {(epoch + 1) * steps_per_epoch} steps)",
                             "budget": budget, "seed": seed, "val_mAP50": score,
                             "image_iterations": (epoch + 1) * len(frames), "seconds": None})
                print(f"  epoch {epoch + 1}/{epochs}: val mAP50 {score:.4f}", flush=True)

        stats = fit(model, DetectionDataset(frames, train.images, train=True), config, progress=False,
                    on_epoch_end=score_epoch if curve else None)
        seconds = time.perf_counter() - t0
        score = val_map(model)
        rows.append({"recipe": recipe_text, "budget": budget, "seed": seed, "val_mAP50": score,
                     "image_iterations": sum(s["images"] for s in stats), "seconds": round(seconds, 1)})
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {recipe_text} budget {budget} seed {seed}: "
              f"val mAP50 {score:.4f} ({seconds:.0f} s)", flush=True)

    seeds = [int(s) for s in args.seeds.split(",")]
    for budget in [int(b) for b in args.budgets.split(",")]:
        for seed in seeds:
            pick = np.sort(np.random.default_rng(seed).choice(len(train.frames), size=budget, replace=False))
            frames = [train.frames[i] for i in pick]
            for recipe in [r for r in args.recipes.split(";") if r.strip()]:
                run(recipe.strip(), frames, seed, budget)
    if args.full_pool:
        run(args.full_pool, train.frames, seeds[0], len(train.frames), curve=args.full_pool_curve)

    table = pd.DataFrame(rows)
    summary = (table.groupby(["recipe", "budget"], sort=False)
               .agg(seeds=("seed", "count"), val_mAP50=("val_mAP50", "mean"), std=("val_mAP50", "std"),
                    image_iterations=("image_iterations", "mean"), seconds=("seconds", "mean"))
               .round({"image_iterations": 0, "seconds": 1})
               .reset_index())
    summary["val_mAP50"] = [f"{m:.4f} ± {s:.4f}" if s == s else f"{m:.4f}"
                            for m, s in zip(summary["val_mAP50"], summary["std"])]
    summary = summary.drop(columns="std")
    text = (f"val mAP50 of the tiny detector fine-tuned from its starting weights on random target subsets "
            f"(pool {len(train.frames)}, val {len(val.frames)}, {torch.get_num_threads()} torch threads, "
            f"{(time.perf_counter() - started) / 60:.1f} min)\n\n" + markdown_table(summary))
    print("\n" + text, flush=True)
    (out / "recipes.md").write_text(text + "\n")
    table.to_csv(out / "recipes.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
