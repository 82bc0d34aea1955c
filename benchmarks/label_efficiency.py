"""Label efficiency: test mAP50 of every sampler against labels bought, beside zero labels and the whole pool.

The headline setting (default) is transfer, as real use is: the detector
starts from weights trained elsewhere (COCO for BDD100K; here the tiny
detector's shipped starting weights, trained on the synthetic *source* domain)
and the pool is the *urban* domain (`--domain`), which holds classes and
conditions the source lacks (riders, signs, two-wheelers, trains; night, rain,
fog, snow), each class common enough to be learned from the pool (in the
BDD100K-like `target` four classes have 3-8 boxes in 300 images). Every
cycle resets the detector to the starting weights and fine-tunes it on the
labeled images. `--from-scratch` keeps the earlier setting (random init, a
smaller pool), where the tiny detector learns little from a few hundred images.

Synthetic BDD100K-format scenes with three disjoint splits: `train` is the
unlabeled pool the oracle reveals, `val` is what the cycle step evaluates on
(the MLflow `mAP50` metric; the split for any choice one tunes), `test` is used
for the reported numbers only and is never used to choose anything. Every
sampler runs over several seeds with the same budget schedule (`--cycles` x
`--per-cycle` images), for each protocol in `--protocols`: `pool` re-scores the
whole remaining pool with the current model every cycle; `batches` is the
original study's (the `pretrain` model ranks the pool once, cycle n unveils the
top k of batch n; with `--pretrain-epochs 0`, the default in transfer, the
ranking model is the starting weights themselves, as a COCO model would rank
BDD100K). After each cycle run the benchmark evaluates that run's cycle
checkpoints on `test` and logs `test_mAP50` / `test_mAP50_95` on the cycle run
(`step` = cycle), and per class and per condition for the final cycle.

References, per seed, on test: zero labels (the starting weights alone: a
`pretrain` run with 0 epochs, tagged `alod.role=zero_label_reference`) and the
full pool (the same recipe on every pool image for `--reference-epochs`,
`alod.role=full_pool_reference`). `--loops warm` runs every sampler with the
detector kept between cycles (reset=false) instead, at the same steps per
cycle; `--loops reset,warm` reports both, each with its own table, verdict and
figure. The loop's cost is compared too: with `--warm-start-samplers`, those
samplers also run warm-started at `--warm-start-iterations` SGD steps per cycle.

    python benchmarks/label_efficiency.py [--out DIR] [--small | --from-scratch] [--protocols pool,batches]
        [--samplers random,boxcount,...] [--seeds 0,1,2] [--train 300 --val 60 --test 250]
        [--cycles 3 --per-cycle 20] [--epochs 1 --min-iterations 100] [--lr 0.04] [--threads 1]
        [--loops reset,warm]
        [--auto-samplers random,entropy,boxcount]

`auto` in `--samplers` (pool protocol only; skipped under batches) lets a bandit choose each cycle's
sampler among `--auto-samplers`; the verdict then ranks it against random and the best fixed sampler
seed by seed and lists its choices (`curves.csv` column `auto_choice`).

Printed and written to OUT (default ./label-efficiency): `table.md` /
`table.csv` (per protocol: test mAP50 at each budget, mean ± std over seeds;
area under the learning curve, normalised so it reads as mean mAP50 over the
budget range; the fraction of the pool needed to reach 95 % of the full-pool
test mAP50; training image-iterations), `breakdown.csv` (final test AP50 per
class and per condition), `cost.csv` (reset against warm start), `verdict.txt`
(does the best sampler beat random at equal budget by more than the spread
over seeds? is the bar "95 % of full pool with <= 20 % labeled" met?),
`curves.csv`, `reference.csv`, `learning_curve.png`, `summary.json`. The same
files are logged to a `benchmark` run in the experiment. MLflow goes to
$MLFLOW_TRACKING_URI (default sqlite:///mlflow.db; artifacts under ./mlruns).
A finished run with identical parameters and code is reused, so an
interrupted benchmark restarts where it stopped (`--fresh`: never).
`--replot OUT` re-makes OUT's tables, verdict and figures from its curves.csv,
reference.csv and summary.json alone (nothing trained, nothing logged).

Measured settings and times are in the README (Benchmarks: label efficiency).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from alod import tracking
from alod.engine.infer import predict_all
from alod.params import SHARED, argparse_kwargs
from alod.report import curve_auc, labels_to_reach, markdown_table
from alod.data.splits import load_split

DEFAULT_SAMPLERS = ("random", "boxcount", "entropy", "coreset", "hybrid")
EXPERIMENT = "alod-label-efficiency"
REFERENCE = "full pool (reference)"
ZERO = "zero labels (starting weights)"
LOOPS = {"reset": True, "warm": False}  # --loops name -> CycleParams.reset
BAR_FRACTION = 0.20  # the bar: 95 % of full-pool mAP50 with at most 20 % of the pool
# Metric-name-safe condition names (MLflow allows no commas) -> (attribute, values).
CONDITIONS = {"daytime": ("timeofday", {"daytime"}), "night": ("timeofday", {"night"}),
              "dawn-dusk": ("timeofday", {"dawn/dusk"}),
              "clear or cloudy": ("weather", {"clear", "partly cloudy", "overcast"}),
              "rain fog or snow": ("weather", {"rainy", "foggy", "snowy"})}

# Values of the options a setting fills in when the command line leaves them out.
# Transfer: a 300-image urban pool, 3 cycles x 20 images (20 %), 100 SGD steps per cycle at lr 0.04 (the
# best of benchmarks/finetune_recipe.py on *val*; README: Fine-tuning recipe).
TRANSFER = {"domain": "urban", "train": 300, "val": 60, "test": 250, "samplers": ",".join(DEFAULT_SAMPLERS), "seeds": "0,1,2",
            "protocols": "pool,batches", "cycles": 3, "per_cycle": 20, "epochs": 1, "min_iterations": 100,
            "lr": 0.04, "reference_epochs": 12, "pretrain_epochs": 0, "weights": None,
            "warm_start_samplers": "random", "warm_start_iterations": 50}
FROM_SCRATCH = {"domain": "target", "train": 200, "val": 40, "test": 80, "samplers": "random,boxcount,entropy,margin,coreset,hybrid",
                "seeds": "0,1,2", "protocols": "pool", "cycles": 4, "per_cycle": 10, "epochs": 8,
                "min_iterations": 0, "lr": 0.16, "reference_epochs": 8, "pretrain_epochs": 8, "weights": "none",
                "warm_start_samplers": "", "warm_start_iterations": 0}
SMALL = {"domain": "urban", "train": 40, "val": 12, "test": 12, "samplers": "random,boxcount", "seeds": "0", "protocols": "pool",
         "cycles": 2, "per_cycle": 8, "epochs": 1, "min_iterations": 3, "lr": 0.04, "reference_epochs": 1,
         "pretrain_epochs": 0, "weights": None, "warm_start_samplers": "", "warm_start_iterations": 2}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="label-efficiency", help="folder for data, checkpoints and results")
    setting = parser.add_mutually_exclusive_group()
    setting.add_argument("--small", action="store_true", help="the CI-size setting (about a minute)")
    setting.add_argument("--from-scratch", action="store_true",
                         help="the earlier setting: random init (no starting weights), 200-image pool")
    parser.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")
    parser.add_argument("--replot", metavar="OUT", help="only re-make the tables, verdict and figures of the "
                        "finished benchmark in OUT from its curves.csv, reference.csv and summary.json (no "
                        "training, no MLflow); the other options are ignored")
    parser.add_argument("--data", default=None,
                        help="an existing data root with train, val and test splits (default: synthesize into OUT/data)")
    size = parser.add_argument_group("data and budget (defaults: the transfer setting; --small, --from-scratch: theirs)")
    size.add_argument("--train", type=int, help=f"pool images (transfer {TRANSFER['train']})")
    size.add_argument("--val", type=int, help=f"val images (transfer {TRANSFER['val']})")
    size.add_argument("--test", type=int, help=f"test images (transfer {TRANSFER['test']})")
    size.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic target scenes")
    size.add_argument("--domain", help=f"synthetic domain of the scenes (transfer {TRANSFER['domain']}, "
                      f"from scratch {FROM_SCRATCH['domain']}; see `alod synth --help`)")
    size.add_argument("--samplers", help=f"comma-separated (transfer {TRANSFER['samplers']}); see `alod samplers`")
    size.add_argument("--seeds", help=f"comma-separated run seeds: cycle-1 pick, shuffling (transfer {TRANSFER['seeds']})")
    size.add_argument("--protocols", help=f"comma-separated: pool, batches (transfer {TRANSFER['protocols']})")
    size.add_argument("--cycles", type=int, help=f"cycles (transfer {TRANSFER['cycles']})")
    size.add_argument("--per-cycle", type=int, help=f"images unveiled per cycle (transfer {TRANSFER['per_cycle']})")
    size.add_argument("--epochs", type=int, help=f"epochs per cycle (transfer {TRANSFER['epochs']})")
    size.add_argument("--min-iterations", type=int,
                      help=f"at least this many SGD steps per cycle (transfer {TRANSFER['min_iterations']}): "
                           "without it the first, small cycles barely train and every sampler looks like random")
    size.add_argument("--reference-epochs", type=int,
                      help=f"epochs of the full-pool reference (transfer {TRANSFER['reference_epochs']})")
    train = parser.add_argument_group("training")
    train.add_argument("--pretrain-fraction", type=float, default=0.3,
                       help="batches protocol: pretrain fraction (unused with --pretrain-epochs 0)")
    train.add_argument("--pretrain-epochs", type=int,
                       help="batches protocol: epochs of the ranking model (0: the starting weights rank)")
    train.add_argument("--tune-epochs", default=None,
                       help="comma-separated candidates: train the full pool with each (seed of --seeds' first), "
                            "keep the one with the best *val* mAP50 for the reference")
    train.add_argument("--roi-samples", **argparse_kwargs("roi_samples"))
    train.add_argument("--freeze-batchnorm", **argparse_kwargs("freeze_batchnorm", action="store_true"))
    train.add_argument("--loops", default="reset",
                       help="comma-separated: how every sampler's cycles train, each reported on its own: `reset` "
                            "(back to the starting weights every cycle, the study's) and/or `warm` (the detector "
                            "kept between cycles, reset=false), both with --min-iterations steps per cycle")
    train.add_argument("--warm-start-samplers",
                       help="comma-separated samplers also run with the detector kept between cycles (pool protocol) "
                            "at --warm-start-iterations steps: the loop-cost comparison")
    train.add_argument("--warm-start-iterations", type=int, help="SGD steps per warm-started cycle")
    train.add_argument("--arch", **argparse_kwargs("arch", default="tiny"))
    train.add_argument("--weights", **argparse_kwargs(
        "weights", help="starting weights for every cycle and the references: " + SHARED["weights"][1]["help"]))
    train.add_argument("--batch-size", **argparse_kwargs("batch_size"))
    train.add_argument("--lr", type=float, help="for a total batch of 16 (scaled: 0.01 at batch 4 for 0.04)")
    train.add_argument("--eval-batch-size", **argparse_kwargs("eval_batch_size"))
    train.add_argument("--workers", **argparse_kwargs("workers", default=0))
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    train.add_argument("--target", type=float, default=0.95, help="fraction of the full-pool mAP50 to reach")
    train.add_argument("--auto-samplers", **argparse_kwargs("auto_samplers"))
    train.add_argument("--fresh", action="store_true", help="never reuse finished runs")
    args = parser.parse_args(argv)
    preset = SMALL if args.small else FROM_SCRATCH if args.from_scratch else TRANSFER
    args.setting = "small" if args.small else "from scratch" if args.from_scratch else "transfer"
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.protocols = [s.strip() for s in args.protocols.split(",") if s.strip()]
    args.warm_start_samplers = [s.strip() for s in args.warm_start_samplers.split(",") if s.strip()]
    args.loops = [s.strip() for s in args.loops.split(",") if s.strip()]
    if not args.loops or not set(args.loops) <= set(LOOPS) or len(set(args.loops)) != len(args.loops):
        parser.error(f"--loops must be reset and/or warm, got {args.loops}")
    if "warm" in args.loops and args.warm_start_samplers:
        parser.error("--warm-start-samplers adds warm-started runs beside reset ones: not with --loops warm")
    if len(set(args.samplers)) != len(args.samplers) or not args.samplers:
        parser.error(f"--samplers must name distinct samplers, got {args.samplers}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct integers, got {args.seeds}")
    if not args.protocols or not set(args.protocols) <= {"pool", "batches"}:
        parser.error(f"--protocols must be pool and/or batches, got {args.protocols}")
    if args.cycles * args.per_cycle > args.train:
        parser.error(f"budget {args.cycles} x {args.per_cycle} exceeds the pool of {args.train} images")
    from alod.starting_weights import weights_choice

    args.weights = weights_choice(args.arch, args.weights)
    return args


# --------------------------------------------------------------------------- runs


def _stamp(started: float) -> str:
    s = int(time.perf_counter() - started)
    return f"[{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}]"


def step_settings(args, data: Path, work: Path):
    """The benchmark's settings as `main`'s parameters: each step takes its fields from them by name
    (`subset_for`), as under `alod run`, and runs through `main`'s chaining (`run_step`: reused when a
    finished run has the same parameters and code)."""
    from alod.params import MainParams

    return MainParams(data=str(data), samplers=tuple(args.samplers), seeds=tuple(args.seeds), arch=args.arch,
                      fraction=args.pretrain_fraction, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs,
                      min_iterations=args.min_iterations, batch_size=args.batch_size,
                      roi_samples=args.roi_samples, freeze_batchnorm=args.freeze_batchnorm, lr=args.lr,
                      cycles=args.cycles, per_cycle=args.per_cycle, batches=args.cycles,
                      batch_images=args.train // args.cycles, weights=args.weights, workers=args.workers,
                      auto_samplers=args.auto_samplers, experiment=args.experiment, work_dir=str(work))


def _run_step(args, step: str, params) -> tuple[str, bool]:
    from alod.steps.main import run_step

    return run_step(step, params, fresh=args.fresh)


def _evaluate_checkpoint(path: Path, split, args):
    """(EvalResult, predictions) of a checkpoint on a split."""
    from alod.engine.evaluate import evaluate
    from alod.models import detector_from_checkpoint

    model = detector_from_checkpoint(path)
    preds = predict_all(model, split.frames, split.images, device=torch.device("cpu"),
                        batch_size=args.eval_batch_size, workers=args.workers)
    return evaluate(split.frames, preds), preds


def breakdown(split, preds, result) -> dict[str, float]:
    """Test AP50 per class and mAP50 per condition (time of day, weather) of one model's predictions."""
    from alod.engine.evaluate import evaluate

    out = {f"test_AP50.{k}": v for k, v in result.ap50_per_class.items()}
    by_name = {f.name: f for f in preds}
    for name, (attribute, values) in CONDITIONS.items():
        frames = [f for f in split.frames if f.attributes.get(attribute) in values]
        if frames:
            out[f"test_mAP50.{name}"] = evaluate(frames, [by_name[f.name] for f in frames if f.name in by_name]).mAP50
    return out


def _checkpoint(run_id: str, work: Path, entry, artifact_run: str | None = None) -> Path:
    """A run's checkpoint by the run folder's rule: the local copy the step wrote, else its artifact
    (on `artifact_run`: a cycle's checkpoint lives on the cycle's child run)."""
    from alod.run_folder import RunFolder

    path = RunFolder(work, run_id).local_or_artifact(entry, artifact_run=artifact_run)
    if path is None:
        raise SystemExit(f"run {run_id}: no {entry.local} in {RunFolder(work, run_id).path} and no artifact "
                         f"{entry.artifact}" + (f" on run {artifact_run}" if artifact_run else ""))
    return path


def log_test_metrics(run_id: str, step_name: str, results: dict[int, object], tags: dict | None = None,
                     extra: dict | None = None) -> None:
    """test_mAP50 / test_mAP50_95 on an existing run, `step` = cycle (or epochs for a reference)."""
    with tracking.run(step_name, run_id=run_id):
        if tags:
            tracking.set_tags(tags)
        for step, r in results.items():
            tracking.log_metrics({"test_mAP50": r.mAP50, "test_mAP50_95": r.mAP50_95}, step=step)
        if extra:
            tracking.log_metrics(extra, step=max(results))


def _logged_breakdown(run_id: str) -> dict[str, float]:
    metrics = tracking.get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith(("test_AP50.", "test_mAP50."))}


def test_curve(run_id: str, args, test, work: Path) -> dict[int, float]:
    """Test mAP50 of every cycle checkpoint of a cycle run (evaluated once, then read back);
    the final cycle's per-class and per-condition AP50 are logged beside it."""
    done = tracking.metric_steps(run_id, "test_mAP50")
    todo = [c for c in range(1, args.cycles + 1) if c not in done]
    results, extra = {}, None
    from alod import run_folder

    for cycle in todo:
        ckpt = _checkpoint(run_id, work, run_folder.cycle_checkpoint(cycle),
                           tracking.child_run(run_id, {"alod.cycle": cycle}))
        results[cycle], preds = _evaluate_checkpoint(ckpt, test, args)
        if cycle == args.cycles:
            extra = breakdown(test, preds, results[cycle])
    if results:
        log_test_metrics(run_id, "cycle", results, extra=extra)
    return {**done, **{c: r.mAP50 for c, r in results.items()}}


def reference_run(args, seed: int, epochs: int, data: Path, work: Path, test, role: str) -> dict:
    """A `pretrain` run on the whole pool (`epochs` > 0) or the starting weights as they are (0), on test."""
    from alod import run_folder
    from alod.params import PretrainParams

    p = step_settings(args, data, work).subset_for(
        PretrainParams, fraction=1.0, epochs=epochs, seed=seed, eval_batch_size=args.eval_batch_size,
        eval_every=max(1, epochs), register=False)
    started = time.perf_counter()
    run_id, reused = _run_step(args, "pretrain", p)
    seconds = time.perf_counter() - started
    val = tracking.metric_steps(run_id, "mAP50").get(epochs, float("nan"))
    test_map = tracking.metric_steps(run_id, "test_mAP50").get(epochs)
    if test_map is None:
        result, preds = _evaluate_checkpoint(
            _checkpoint(run_id, work, run_folder.PRETRAINED), test, args)
        log_test_metrics(run_id, "pretrain", {epochs: result},
                         tags={"alod.benchmark": "label_efficiency", "alod.role": role},
                         extra=breakdown(test, preds, result))
        test_map = result.mAP50
    return {"run_id": run_id, "role": role, "seed": seed, "epochs": epochs, "val_mAP50": val,
            "test_mAP50": test_map, "train_image_iterations": epochs * args.train, "seconds": seconds,
            "reused": reused, **_logged_breakdown(run_id)}


def tune_epochs(args, data: Path, work: Path, test, started: float) -> int:
    """The candidate epochs whose full-pool model has the best val mAP50 (test is not looked at)."""
    candidates = [int(e) for e in args.tune_epochs.split(",") if e.strip()]
    scores = {}
    for epochs in candidates:
        ref = reference_run(args, args.seeds[0], epochs, data, work, test, "full_pool_reference")
        scores[epochs] = ref["val_mAP50"]
        print(f"{_stamp(started)} tune: {epochs} epochs -> full-pool val mAP50 {scores[epochs]:.4f}", flush=True)
    best = max(candidates, key=lambda e: (np.nan_to_num(scores[e], nan=-1.0), -e))
    print(f"{_stamp(started)} tune: using {best} epochs (best val mAP50)", flush=True)
    return best


def batches_ranking(args, sampler: str, seed: int, data: Path, work: Path, pretrained: dict) -> str:
    """The study's ranking for `batches`: the seed's pretrain model, from the registry, ranks the pool."""
    from alod.params import PretrainParams, RankParams
    from alod.steps.main import pretrained_model_uri

    settings = step_settings(args, data, work)
    if seed not in pretrained:
        p = settings.subset_for(PretrainParams, epochs=args.pretrain_epochs, seed=seed,
                                eval_batch_size=args.eval_batch_size, eval_every=max(1, args.pretrain_epochs),
                                register=True)
        pretrained[seed] = pretrained_model_uri(_run_step(args, "pretrain", p)[0])
    r = settings.subset_for(RankParams, model_uri=pretrained[seed], sampler=sampler, seed=seed,
                            eval_batch_size=args.eval_batch_size)
    return _run_step(args, "rank", r)[0]


def cycle_run(args, sampler: str, seed: int, protocol: str, data: Path, work: Path, ranking: str | None,
              reset: bool = True, iterations: int | None = None) -> tuple[str, bool]:
    from alod.params import CycleParams

    p = step_settings(args, data, work).subset_for(
        CycleParams, ranking=ranking, sampler=sampler, protocol=protocol, seed=seed, reset=reset,
        min_iterations=args.min_iterations if iterations is None else iterations,
        eval_batch_size=args.eval_batch_size, register=False, extra_tags={"alod.benchmark": "label_efficiency"})
    return _run_step(args, "cycle", p)


# --------------------------------------------------------------------------- report


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else float("nan"))


def _fmt(values, digits: int = 4) -> str:
    mean, std = _mean_std(values)
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _budget_label(n: float, pool: int) -> str:
    return f"{round(n)} ({100 * n / pool:.0f} %)"


def per_seed_stats(curves: pd.DataFrame, pool: int, target: float) -> pd.DataFrame:
    """One row per sampler x seed: AUC of test mAP50 over labeled images, fraction of the pool to reach target."""
    rows = []
    for (sampler, seed), g in curves.groupby(["sampler", "seed"], sort=False):
        needed = labels_to_reach(g["labeled_images"], g["test_mAP50"], target)
        rows.append({"sampler": sampler, "seed": seed, "auc": curve_auc(g["labeled_images"], g["test_mAP50"]),
                     "fraction_to_target": needed / pool if np.isfinite(needed) else float("nan"),
                     "train_image_iterations": g["train_image_iterations"].sum()})
    return pd.DataFrame(rows, columns=["sampler", "seed", "auc", "fraction_to_target", "train_image_iterations"])


def comparison_table(curves: pd.DataFrame, refs: pd.DataFrame, samplers, pool: int,
                     target_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Rows: every sampler (in the order asked), the zero-label and the full-pool reference; columns:
    test mAP50 at each budget (mean ± std over seeds), AUC, fraction of the pool to reach target x full
    pool, training image-iterations of the whole run."""
    full = refs[refs["role"] == "full_pool_reference"]
    zero = refs[refs["role"] == "zero_label_reference"]
    ref_mean = _mean_std(full["test_mAP50"])[0]
    target = target_fraction * ref_mean
    stats = per_seed_stats(curves, pool, target)
    budgets = sorted(curves["labeled_images"].unique())
    max_fraction = max(budgets) / pool
    pct = round(100 * target_fraction)
    reach_col = f"pool to {pct} % of full"
    rows = []
    blank = {_budget_label(b, pool): "—" for b in budgets}
    if not zero.empty:
        rows.append({"sampler": ZERO, "seeds": zero["seed"].nunique(), _budget_label(0, pool): _fmt(zero["test_mAP50"]),
                     **blank, _budget_label(pool, pool): "—", "AUC": "—", reach_col: "—",
                     "train image-iterations": "0"})
    for sampler in samplers:
        g = curves[curves["sampler"] == sampler]
        s = stats[stats["sampler"] == sampler]
        row = {"sampler": sampler, "seeds": g["seed"].nunique()}
        if not zero.empty:
            row[_budget_label(0, pool)] = "—"
        for b in budgets:
            row[_budget_label(b, pool)] = _fmt(g.loc[g["labeled_images"] == b, "test_mAP50"])
        row[_budget_label(pool, pool)] = "—"
        row["AUC"] = _fmt(s["auc"])
        reached = s["fraction_to_target"].dropna()
        if reached.empty:
            row[reach_col] = f"not reached (> {100 * max_fraction:.0f} %)"
        else:
            text = _fmt(100 * reached, 0) + " %"
            if len(reached) < len(s):
                text += f" ({len(reached)}/{len(s)} seeds; others > {100 * max_fraction:.0f} %)"
            row[reach_col] = text
        row["train image-iterations"] = f"{s['train_image_iterations'].mean():.0f}"
        rows.append(row)
    ref_row = {"sampler": REFERENCE, "seeds": full["seed"].nunique(), **blank}
    if not zero.empty:
        ref_row[_budget_label(0, pool)] = "—"
    ref_row[_budget_label(pool, pool)] = _fmt(full["test_mAP50"])
    ref_row["AUC"] = "—"
    ref_row[reach_col] = "100 %"
    ref_row["train image-iterations"] = f"{full['train_image_iterations'].mean():.0f}"
    rows.append(ref_row)
    return pd.DataFrame(rows), stats, target


def verdict(curves: pd.DataFrame, stats: pd.DataFrame, samplers, pool: int, target: float,
            target_fraction: float, zero: float = float("nan")) -> list[str]:
    """Plain statements: the best sampler against random at equal budget, and the issue's bar."""
    lines = [f"target: {100 * target_fraction:.0f} % of the full-pool test mAP50 = {target:.4f}"]
    full = target / target_fraction
    if np.isfinite(zero):
        lines.append(f"room to learn: zero labels {zero:.4f}, full pool {full:.4f} "
                     f"({full / zero if zero > 0 else float('inf'):.1f}x)")
        means = curves.groupby(["sampler", "labeled_images"])["test_mAP50"].mean()
        below = [f"{s}@{int(b)}" for (s, b), v in means.items() if v < zero]
        # the mean over seeds can hide a seed that ended below: count the single runs too
        # (cycle 1 under `pool` is one random pick shared by every sampler of a seed: counted once)
        points = curves.drop_duplicates(["seed", "labeled_images", "test_mAP50"])
        low = points[points["test_mAP50"] < zero]
        runs = ("every run above it at every budget" if low.empty else
                f"single runs below it: {len(low)} of {len(points)} points: "
                + ", ".join(f"seed {r.seed} at {int(r.labeled_images)} ({r.test_mAP50:.4f})" for r in low.itertuples()))
        lines.append("every budget above the zero-label model: " + ("yes" if not below else
                                                                    "no (" + ", ".join(below) + ")")
                     + f" on the mean over seeds; {runs}")
    auc = stats.groupby("sampler")["auc"].mean()
    others = [s for s in samplers if s != "random" and s in auc.index]
    if not others:
        return lines + ["only random was run: nothing to compare"]
    best = max(others, key=lambda s: auc[s])
    lines.append(f"best sampler by AUC: {best} ({auc[best]:.4f}; random {auc.get('random', float('nan')):.4f})")
    if "random" in samplers:
        seeds = curves["seed"].nunique()
        budgets = sorted(curves["labeled_images"].unique())
        # Cycle 1 is the same seeded random pick for every sampler: compare from cycle 2 on.
        compared = budgets[1:] if len(budgets) > 1 else budgets
        wins = 0
        for b in compared:
            at = curves[curves["labeled_images"] == b]
            mb, sb = _mean_std(at.loc[at["sampler"] == best, "test_mAP50"])
            mr, sr = _mean_std(at.loc[at["sampler"] == "random", "test_mAP50"])
            spread = max(sb, sr) if seeds > 1 else float("nan")
            beat = np.isfinite(spread) and mb - mr > spread
            wins += bool(beat)
            lines.append(f"  at {_budget_label(b, pool)}: {best} {mb:.4f} vs random {mr:.4f}: "
                         f"{mb - mr:+.4f} (seed spread, larger std of the two: "
                         f"{'n/a, one seed' if not np.isfinite(spread) else f'{spread:.4f}'})"
                         f"{' -> beats random' if beat else ''}")
        ab, asd = _mean_std(stats.loc[stats["sampler"] == best, "auc"])
        ar, ars = _mean_std(stats.loc[stats["sampler"] == "random", "auc"])
        auc_spread = max(asd, ars) if seeds > 1 else float("nan")
        auc_beat = bool(np.isfinite(auc_spread) and ab - ar > auc_spread)
        if seeds < 2:
            lines.append("beats random by more than the spread over seeds: cannot tell with one seed")
        else:
            answer = "yes" if auc_beat and wins == len(compared) else (
                "partly" if auc_beat or wins else "no")
            lines.append(f"beats random at equal budget by more than the spread over seeds: {answer} "
                         f"({wins}/{len(compared)} budgets after cycle 1; AUC {ab - ar:+.4f} vs spread "
                         f"{auc_spread:.4f})")
    last = curves[curves["labeled_images"] == curves["labeled_images"].max()]
    share = last.groupby("sampler")["test_mAP50"].mean() / full if full > 0 else None
    if share is not None:
        lines.append(f"at the largest budget ({_budget_label(last['labeled_images'].max(), pool)}) the samplers "
                     f"reach {100 * share.min():.0f}-{100 * share.max():.0f} % of the full-pool test mAP50 "
                     f"({full:.4f}); {best}: {100 * share.get(best, float('nan')):.0f} %")
    reached = stats.loc[stats["sampler"] == best, "fraction_to_target"]
    ok = bool(len(reached) and reached.notna().all() and (reached <= BAR_FRACTION + 1e-9).all())
    lines.append(f"bar ({100 * target_fraction:.0f} % of full pool with <= {100 * BAR_FRACTION:.0f} % labeled, "
                 f"best sampler, every seed): {'met' if ok else 'not met'}")
    return lines


def auto_verdict(curves: pd.DataFrame, stats: pd.DataFrame) -> list[str]:
    """`auto` against random and the best fixed sampler: AUC difference and its rank among all samplers,
    seed by seed, and what it chose."""
    if "auto" not in set(stats["sampler"]):
        return []
    auc = stats.pivot_table(index="seed", columns="sampler", values="auc")
    fixed = [s for s in auc.columns if s != "auto"]
    if not fixed:
        return ["auto ran alone: nothing to rank it against"]
    best = max(fixed, key=lambda s: auc[s].mean())
    ranks = auc.rank(axis=1, ascending=False)["auto"]
    lines = [f"auto: AUC rank among {len(auc.columns)} samplers per seed "
             f"{', '.join(f'{int(r)}' for r in ranks)} (mean {ranks.mean():.1f}); "
             f"AUC auto - {best} (best fixed) {(auc['auto'] - auc[best]).mean():+.4f}"
             + (f", auto - random {(auc['auto'] - auc['random']).mean():+.4f}" if "random" in auc.columns else "")
             + f" (mean over {len(auc)} seed(s))"]
    if "auto_choice" in curves.columns:
        for seed, g in curves[curves["sampler"] == "auto"].groupby("seed"):
            lines.append(f"  auto seed {seed} chose: " + ", ".join(
                f"c{int(c)} {a}" for c, a in zip(g["cycle"], g["auto_choice"])))
    return lines


def breakdown_table(curves: pd.DataFrame, refs: pd.DataFrame, cycles: int) -> pd.DataFrame:
    """Final-cycle test AP50 per class and per condition, mean over seeds: one row per sampler/protocol/reset,
    and the references."""
    final = curves[curves["cycle"] == cycles]
    cols = [c for c in final.columns if c.startswith(("test_AP50.", "test_mAP50."))]
    rows = []
    for role, g in refs.groupby("role", sort=False):
        rows.append({"run": ZERO if role == "zero_label_reference" else REFERENCE,
                     "test mAP50": g["test_mAP50"].mean(),
                     **{c.split("test_", 1)[1]: g[c].mean() for c in cols if c in g}})
    for (sampler, protocol, reset), g in final.groupby(["sampler", "protocol", "reset"], sort=False):
        rows.append({"run": f"{sampler} / {protocol}" + ("" if reset else " / warm start"),
                     "test mAP50": g["test_mAP50"].mean(), **{c.split("test_", 1)[1]: g[c].mean() for c in cols}})
    table = pd.DataFrame(rows)
    return table.round(4)


def _paired_gain(finals: dict) -> str:
    """Warm start's final test mAP50 minus reset's, seed by seed (the same cycle-1 pick and data order): mean
    ± std of the differences and in how many seeds warm start was ahead; "" without both loops."""
    if True not in finals or False not in finals:
        return ""
    diff = (finals[False] - finals[True]).dropna()
    if diff.empty:
        return ""
    mean, std = _mean_std(diff)
    spread = f" ± {std:.4f}" if np.isfinite(std) else ""
    return f"{mean:+.4f}{spread} (ahead in {int((diff > 0).sum())}/{len(diff)})"


def cost_table(curves: pd.DataFrame, refs: pd.DataFrame, cycles: int) -> pd.DataFrame:
    """Reset-to-starting-weights against warm start, at equal budget: final test mAP50 and what the loop cost."""
    rows = []
    warm = curves[~curves["reset"]]
    for sampler in warm["sampler"].unique():
        finals = {}
        for reset in (True, False):
            g = curves[(curves["sampler"] == sampler) & (curves["protocol"] == "pool") & (curves["reset"] == reset)]
            if g.empty:
                continue
            per_run = g.groupby("seed").agg(iters=("train_image_iterations", "sum"),
                                            scored=("images_scored", "sum"))
            finals[reset] = g[g["cycle"] == cycles].set_index("seed")["test_mAP50"]
            rows.append({"sampler": sampler, "cycles": "reset to starting weights" if reset else "warm start",
                         "final test mAP50": _fmt(finals[reset]),
                         "warm - reset (same seeds)": _paired_gain(finals) if not reset else "",
                         "train image-iterations": f"{per_run['iters'].mean():.0f}",
                         "images scored": f"{per_run['scored'].mean():.0f}", "seeds": len(per_run)})
    full = refs[refs["role"] == "full_pool_reference"]
    if rows and not full.empty:
        rows.append({"sampler": REFERENCE, "cycles": "once", "final test mAP50": _fmt(full["test_mAP50"]),
                     "warm - reset (same seeds)": "",
                     "train image-iterations": f"{full['train_image_iterations'].mean():.0f}",
                     "images scored": "0", "seeds": len(full)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- main


def make_data(args, out: Path) -> Path:
    if args.data:
        data = Path(args.data)
    else:
        from alod.data.synthetic import write_dataset

        data = out / "data"
        write_dataset(data, train=args.train, val=args.val, test=args.test, seed=args.data_seed, domain=args.domain)
    for split in ("train", "val", "test"):
        frames = load_split(data, split).frames
        if split == "train":
            args.train = len(frames)
    return data


def loop_curves(curves: pd.DataFrame, loop: str) -> pd.DataFrame:
    """The compared runs of one `--loops` entry (not the extra warm-start runs of the cost table)."""
    return curves[curves["compared"] & (curves["reset"] == LOOPS[loop])]


def collect_curves(runs: dict, args) -> pd.DataFrame:
    curves = tracking.cycle_curves(args.experiment)
    curves = curves[curves["run_id"].isin(runs)].rename(columns={"mAP50": "val_mAP50"}).copy()
    curves["seed"] = curves["seed"].astype(int)
    curves["reset"] = [runs[r]["reset"] for r in curves["run_id"]]
    curves["compared"] = [runs[r]["compared"] for r in curves["run_id"]]
    for key in ("test_mAP50", "train_image_iterations", "images_scored"):
        curves[key] = [tracking.metric_steps(r, key).get(int(c), float("nan"))
                       for r, c in zip(curves["run_id"], curves["cycle"])]
    tags = {r: tracking.get_run(r).data.tags for r in runs}
    curves["auto_choice"] = [tags[r].get(f"alod.auto.cycle_{int(c):03d}", "random" if int(c) == 1 else "")
                             if runs[r]["sampler"] == "auto" else "" for r, c in zip(curves["run_id"], curves["cycle"])]
    final = {r: _logged_breakdown(r) for r in runs}
    for col in sorted({k for v in final.values() for k in v}):
        curves[col] = [final[r].get(col, float("nan")) if int(c) == args.cycles else float("nan")
                       for r, c in zip(curves["run_id"], curves["cycle"])]
    return curves.sort_values(["protocol", "reset", "sampler", "seed", "cycle"]).reset_index(drop=True)


def write_report(args, curves: pd.DataFrame, refs: pd.DataFrame, test_images: int, total: float, machine: str,
                 out: Path) -> tuple[list[str], list[str], dict, float]:
    """Print and write the tables, verdict and figures of finished runs (curves.csv, reference.csv as
    collected); returns (verdict lines, figure names, references, zero-label test mAP50)."""
    zero_refs = refs[refs["role"] == "zero_label_reference"]
    zero = float(zero_refs["test_mAP50"].mean()) if not zero_refs.empty else float("nan")
    sections, lines, tables = [], [], []
    for protocol in args.protocols:
        for loop in args.loops:
            pc = loop_curves(curves[curves["protocol"] == protocol], loop)
            samplers = [s for s in args.samplers if s in set(pc["sampler"])]
            table, stats, target = comparison_table(pc, refs, samplers, args.train, args.target)
            table.insert(0, "protocol", protocol)
            table.insert(1, "loop", loop)
            tables.append(table)
            said = verdict(pc, stats, samplers, args.train, target, args.target, zero)
            said += auto_verdict(pc, stats)
            name = protocol if args.loops == ["reset"] else f"{protocol}, {loop}"
            lines += [f"[{name}] {line}" for line in said]
            sections.append(f"### protocol {name}\n\n"
                            f"{markdown_table(table.drop(columns=['protocol', 'loop']))}\n\n" + "\n".join(said))
    header = (f"test mAP50 (mean ± std over {len(args.seeds)} seed(s)) at each labeled budget, {args.setting} "
              f"setting, {args.arch} detector (weights {Path(args.weights).name if args.weights != 'none' else 'none'}), "
              f"{args.epochs} epoch(s) and at least {args.min_iterations} SGD steps per cycle, lr {args.lr}"
              f"{', BatchNorm held (--freeze-batchnorm)' if args.freeze_batchnorm else ''}; "
              f"pool {args.train}, test {test_images} images; AUC = mean test mAP50 over the budget range; "
              f"{total / 60:.1f} min on {machine}")
    extra = []
    bd = breakdown_table(curves, refs, args.cycles)
    extra.append("### final test AP50 per class and per condition (mean over seeds)\n\n" + markdown_table(bd))
    cost = cost_table(curves, refs, args.cycles)
    if not cost.empty:
        extra.append("### what the loop costs: reset to the starting weights against warm start (pool protocol)\n\n"
                     + markdown_table(cost))
    text = header + "\n\n" + "\n\n".join(sections + extra)
    print("\n" + text, flush=True)

    from alod.plots import learning_curves

    reference = {"full pool": float(refs.loc[refs["role"] == "full_pool_reference", "test_mAP50"].mean())}
    if np.isfinite(zero):
        reference["zero labels"] = zero
    figures = []
    for loop in args.loops:  # learning_curve.png: the first loop; learning_curve_warm.png beside it
        name = "learning_curve.png" if loop == args.loops[0] else f"learning_curve_{loop}.png"
        fig = learning_curves(loop_curves(curves, loop),
                              x=("labeled_images", "labeled_boxes"), y="test_mAP50", reference=reference,
                              title=f"test mAP50, {args.setting}" + ("" if loop == "reset" else f", {loop} start"))
        fig.savefig(out / name, dpi=120)
        figures.append(name)
    (out / "table.md").write_text(text + "\n")
    pd.concat(tables).to_csv(out / "table.csv", index=False)
    bd.to_csv(out / "breakdown.csv", index=False)
    cost.to_csv(out / "cost.csv", index=False)
    (out / "verdict.txt").write_text("\n".join(lines) + "\n")
    return lines, figures, reference, zero


def replot(out: Path) -> int:
    """Re-make the tables, verdict and figures of a finished benchmark folder from its curves.csv,
    reference.csv and summary.json: no training, no MLflow. For a change to the report or the plots,
    which a re-run could not apply to finished runs (the alod code digest decides reuse)."""
    out = Path(out).resolve()
    missing = [name for name in ("summary.json", "curves.csv", "reference.csv") if not (out / name).is_file()]
    if missing:
        raise SystemExit(f"--replot {out}: no {', '.join(missing)} there (the folder a finished benchmark "
                         f"wrote with --out)")
    summary = json.loads((out / "summary.json").read_text())
    args = parse_args([])
    for key, value in summary["settings"].items():  # older summaries lack newer options: the defaults stand
        setattr(args, key, value)
    curves = pd.read_csv(out / "curves.csv")
    curves["auto_choice"] = curves.get("auto_choice", pd.Series("", index=curves.index)).fillna("")
    for key in ("reset", "compared"):
        curves[key] = curves[key].astype(bool)
    refs = pd.read_csv(out / "reference.csv")
    test_images = int(summary["settings"].get("test_images", args.test))
    lines, figures, _, _ = write_report(args, curves, refs, test_images, float(summary["seconds"]),
                                        summary["machine"], out)
    print(f"\nre-made in {out} (table.md, table.csv, breakdown.csv, cost.csv, verdict.txt, {', '.join(figures)}) "
          f"from curves.csv and reference.csv: nothing trained, nothing logged", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args.replot)
    if args.threads:
        torch.set_num_threads(args.threads)
    from alod.active.samplers import get_sampler

    from alod.active.bandit import AUTO, parse_arms

    for s in [*args.samplers, *args.warm_start_samplers, *parse_arms(args.auto_samplers)]:
        if s != AUTO:
            get_sampler(s)  # an unknown name fails now, not an hour in
    started = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    data = make_data(args, out)
    test = load_split(data, "test")
    if args.cycles * args.per_cycle > args.train:
        raise SystemExit(f"budget {args.cycles} x {args.per_cycle} exceeds the pool of {args.train} images")
    if "batches" in args.protocols and args.per_cycle > args.train // args.cycles:
        raise SystemExit(f"batches protocol: per-cycle {args.per_cycle} exceeds a batch of "
                         f"{args.train // args.cycles} images (pool / cycles)")
    tracking.setup(args.experiment)
    print(f"{_stamp(started)} label efficiency ({args.setting}): pool {args.train}, test {len(test.frames)}, "
          f"samplers {','.join(args.samplers)}, seeds {args.seeds}, protocols {','.join(args.protocols)}, "
          f"{args.cycles} cycles x {args.per_cycle}, weights {args.weights}, tracking {tracking.tracking_uri()} "
          f"experiment {args.experiment}", flush=True)

    epochs = tune_epochs(args, data, work, test, started) if args.tune_epochs else args.reference_epochs
    refs = []
    for seed in args.seeds:
        roles = [("full_pool_reference", epochs)]
        if args.weights != "none":
            roles.insert(0, ("zero_label_reference", 0))
        for role, ref_epochs in roles:
            ref = reference_run(args, seed, ref_epochs, data, work, test, role)
            refs.append(ref)
            print(f"{_stamp(started)} {role.replace('_', ' ')}, seed {seed}: test mAP50 {ref['test_mAP50']:.4f} "
                  f"(val {ref['val_mAP50']:.4f}){' (reused)' if ref['reused'] else ''}", flush=True)
    refs = pd.DataFrame(refs)

    runs, timings, pretrained = {}, [], {}
    # `auto` chooses a sampler every cycle: the pool protocol only (one ranking fixes every batch of `batches`)
    # (protocol, seed, sampler, reset, SGD steps per cycle, reported in the comparison tables)
    jobs = [(protocol, seed, sampler, LOOPS[loop], args.min_iterations, True) for protocol in args.protocols
            for loop in args.loops for seed in args.seeds for sampler in args.samplers
            if not (sampler == AUTO and protocol == "batches")]
    jobs += [("pool", seed, sampler, False, args.warm_start_iterations, False) for seed in args.seeds
             for sampler in args.warm_start_samplers]
    for i, (protocol, seed, sampler, reset, iterations, compared) in enumerate(jobs):
        t0 = time.perf_counter()
        ranking = batches_ranking(args, sampler, seed, data, work, pretrained) if protocol == "batches" else None
        run_id, reused = cycle_run(args, sampler, seed, protocol, data, work, ranking, reset=reset,
                                   iterations=iterations)
        test_curve(run_id, args, test, work)
        runs[run_id] = {"sampler": sampler, "seed": seed, "protocol": protocol, "reset": reset, "compared": compared}
        seconds = time.perf_counter() - t0
        if not reused:
            timings.append(seconds)
        left = len(jobs) - i - 1
        eta = f", about {left * np.mean(timings) / 60:.0f} min left" if timings and left else ""
        print(f"{_stamp(started)} {protocol} {sampler}{'' if reset else ' warm start'} seed {seed}: run {run_id} "
              f"in {seconds:.0f}s{' (reused)' if reused else ''} [{i + 1}/{len(jobs)}{eta}]", flush=True)

    curves = collect_curves(runs, args)
    total = time.perf_counter() - started
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}")
    curves.to_csv(out / "curves.csv", index=False)
    refs.to_csv(out / "reference.csv", index=False)
    lines, figures, reference, zero = write_report(args, curves, refs, len(test.frames), total, machine, out)
    settings = {k: v for k, v in vars(args).items()}
    settings["reference_epochs_used"] = epochs
    settings["test_images"] = len(test.frames)
    summary = {"settings": settings, "seconds": total, "machine": machine,
               "reference_test_mAP50": reference["full pool"], "zero_label_test_mAP50": zero, "verdict": lines,
               "runs": runs}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    with tracking.run("benchmark", run_name=f"label-efficiency-{args.setting.replace(' ', '-')}",
                      tags={"alod.benchmark": "label_efficiency", "alod.protocol": ",".join(args.protocols)}):
        tracking.log_params({k: v for k, v in settings.items() if k not in ("out", "data", "experiment", "replot")})
        tracking.log_metrics({"seconds": total, "reference_test_mAP50": summary["reference_test_mAP50"],
                              **({"zero_label_test_mAP50": zero} if np.isfinite(zero) else {})})
        for name in ("table.md", "table.csv", "breakdown.csv", "cost.csv", "curves.csv", "reference.csv",
                     "verdict.txt", "summary.json", *figures):
            tracking.log_artifact(out / name, "label_efficiency")
    print(f"\nresults in {out} (table.md, table.csv, breakdown.csv, cost.csv, curves.csv, {', '.join(figures)}); "
          f"{total / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
