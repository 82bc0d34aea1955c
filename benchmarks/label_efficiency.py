"""Label efficiency: test mAP50 of every sampler against labels bought, beside a model trained on the whole pool.

On synthetic BDD100K-format scenes with three disjoint splits: `train` is the
unlabeled pool the oracle reveals, `val` is what the cycle step evaluates on
(the MLflow `mAP50` metric; the split for any choice one tunes: `--tune-epochs`),
`test` is used for the reported numbers only and is never used to choose
anything. Every sampler runs over several seeds with the same budget schedule
(`--cycles` x `--per-cycle` images), in one MLflow experiment, one cycle run
per sampler x seed (`alod.steps.cycle.run_cycles`). After each cycle run the
benchmark evaluates that run's cycle checkpoints on `test` and logs
`test_mAP50` / `test_mAP50_95` on the cycle run (`step` = cycle). The reference,
per seed, is the same detector trained on the whole pool for the same epochs
(a `pretrain` run with fraction 1, tagged `alod.role=full_pool_reference`).

    python benchmarks/label_efficiency.py [--out DIR] [--small] [--samplers random,boxcount,...]
        [--seeds 0,1,2] [--train 200 --val 40 --test 80] [--cycles 4 --per-cycle 10] [--epochs 8]
        [--protocol pool|batches] [--tune-epochs 4,8,12] [--experiment alod-label-efficiency]

Protocols: `pool` (default) re-scores the whole remaining pool with the current
model every cycle; `batches` is the original study's (pretrain on
`--pretrain-fraction` of the pool, rank once, cycle n unveils the top k of
batch n; one pretrain per seed, one ranking per sampler x seed).

Printed and written to OUT (default ./label-efficiency): `table.md` /
`table.csv` (test mAP50 at each budget, mean ± std over seeds; area under the
learning curve, normalised so it reads as mean mAP50 over the budget range; the
fraction of the pool needed to reach 95 % of the full-pool test mAP50),
`verdict.txt` (does the best sampler beat random at equal budget by more than
the spread over seeds? is the bar "95 % of full pool with <= 20 % labeled" met?),
`curves.csv`, `reference.csv`, `learning_curve.png`, `summary.json`. The same
files are logged to a `benchmark` run in the experiment. MLflow goes to
$MLFLOW_TRACKING_URI (default sqlite:///mlflow.db; artifacts under ./mlruns).
A finished cycle / pretrain / rank run with identical parameters and code is
reused, so an interrupted benchmark restarts where it stopped (`--fresh`: never).

Settings and run times (tiny detector, CPU, workers 0, batch 4, lr 0.16):

* `--small` (CI): 40 train / 12 val / 12 test, random + boxcount, 1 seed,
  2 cycles x 8 images, 1 epoch: about 1 minute on 2 cores.
* defaults: 200 train / 40 val / 80 test, six samplers (random, boxcount,
  entropy, margin, coreset, hybrid) x 3 seeds, 4 cycles x 10 images (5..20 %
  of the pool), 8 epochs, + 3 full-pool references (200 images x 8 epochs):
  about 40 minutes on 2 cores with `--threads 1` (measured while other jobs
  shared them, load ~3: a reference 2.2 min, a cycle run 1.4-1.7 min). Use
  `--threads 1` on a shared machine: 2 OpenMP threads on oversubscribed cores
  were up to 10x slower here; on idle cores 2 threads gain ~20 %.
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
from alod.report import curve_auc, labels_to_reach
from alod.steps.common import load_split

DEFAULT_SAMPLERS = ("random", "boxcount", "entropy", "margin", "coreset", "hybrid")
EXPERIMENT = "alod-label-efficiency"
REFERENCE = "full pool (reference)"
BAR_FRACTION = 0.20  # the bar: 95 % of full-pool mAP50 with at most 20 % of the pool

# Values of the options a setting fills in when the command line leaves them out.
FULL = {"train": 200, "val": 40, "test": 80, "samplers": ",".join(DEFAULT_SAMPLERS), "seeds": "0,1,2",
        "cycles": 4, "per_cycle": 10, "epochs": 8, "min_iterations": 0}
SMALL = {"train": 40, "val": 12, "test": 12, "samplers": "random,boxcount", "seeds": "0",
         "cycles": 2, "per_cycle": 8, "epochs": 1, "min_iterations": 3}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="label-efficiency", help="folder for data, checkpoints and results")
    parser.add_argument("--small", action="store_true", help="the CI-size setting (about a minute)")
    parser.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")
    parser.add_argument("--data", default=None,
                        help="an existing data root with train, val and test splits (default: synthesize into OUT/data)")
    size = parser.add_argument_group("data and budget (defaults: the full setting; --small: the CI setting)")
    size.add_argument("--train", type=int, help=f"pool images (full {FULL['train']})")
    size.add_argument("--val", type=int, help=f"val images (full {FULL['val']})")
    size.add_argument("--test", type=int, help=f"test images (full {FULL['test']})")
    size.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic scenes")
    size.add_argument("--samplers", help=f"comma-separated (full {FULL['samplers']}); see `alod samplers`")
    size.add_argument("--seeds", help=f"comma-separated run seeds: init, cycle-1 pick, shuffling (full {FULL['seeds']})")
    size.add_argument("--cycles", type=int, help=f"cycles (full {FULL['cycles']})")
    size.add_argument("--per-cycle", type=int, help=f"images unveiled per cycle (full {FULL['per_cycle']})")
    size.add_argument("--epochs", type=int, help=f"epochs per cycle and for the full-pool reference (full {FULL['epochs']})")
    size.add_argument("--min-iterations", type=int,
                      help=f"at least this many SGD steps per cycle (full {FULL['min_iterations']}): "
                           "without it the first, small cycles barely train and every sampler looks like random")
    train = parser.add_argument_group("training")
    train.add_argument("--protocol", choices=("pool", "batches"), default="pool")
    train.add_argument("--pretrain-fraction", type=float, default=0.3, help="batches protocol: pretrain fraction")
    train.add_argument("--pretrain-epochs", type=int, help="batches protocol: pretrain epochs (default: --epochs)")
    train.add_argument("--tune-epochs", default=None,
                       help="comma-separated candidates: train the full pool with each (seed of --seeds' first), "
                            "keep the one with the best *val* mAP50 for everything")
    train.add_argument("--warm-start", action="store_true", help="keep the detector between cycles (reset=false)")
    train.add_argument("--arch", default="tiny")
    train.add_argument("--weights", default=None,
                       help="local initial weights (e.g. COCO-pretrained) for every cycle and the reference")
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--lr", type=float, default=0.16, help="for a total batch of 16 (scaled: 0.04 at batch 4)")
    train.add_argument("--eval-batch-size", type=int, default=8)
    train.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    train.add_argument("--target", type=float, default=0.95, help="fraction of the full-pool mAP50 to reach")
    train.add_argument("--fresh", action="store_true", help="never reuse finished runs")
    args = parser.parse_args(argv)
    preset = SMALL if args.small else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.pretrain_epochs is None:
        args.pretrain_epochs = args.epochs
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    if len(set(args.samplers)) != len(args.samplers) or not args.samplers:
        parser.error(f"--samplers must name distinct samplers, got {args.samplers}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct integers, got {args.seeds}")
    if args.cycles * args.per_cycle > args.train:
        parser.error(f"budget {args.cycles} x {args.per_cycle} exceeds the pool of {args.train} images")
    return args


# --------------------------------------------------------------------------- runs


def _stamp(started: float) -> str:
    s = int(time.perf_counter() - started)
    return f"[{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}]"


def _reuse_or_run(args, step: str, params: dict, run) -> tuple[str, bool]:
    if not args.fresh:
        found = tracking.find_finished_run(args.experiment, step, params, tracking.code_version())
        if found is not None:
            return found.info.run_id, True
    return run(), False


def _evaluate_checkpoint(path: Path, split, args):
    from alod.engine.evaluate import evaluate
    from alod.models import detector_from_checkpoint

    model = detector_from_checkpoint(path)
    preds = predict_all(model, split.frames, split.images, device=torch.device("cpu"),
                        batch_size=args.eval_batch_size, workers=args.workers)
    return evaluate(split.frames, preds)


def _checkpoint(run_id: str, work: Path, local: str, child_tags: dict | None, artifact: str) -> Path:
    """A run's checkpoint: the local copy the step wrote, else its artifact."""
    path = work / "runs" / run_id / local
    if path.is_file():
        return path
    source = tracking.child_run(run_id, child_tags) if child_tags else run_id
    return tracking.download_run_artifact(source, artifact, work / "downloads" / run_id)


def log_test_metrics(run_id: str, step_name: str, results: dict[int, object], tags: dict | None = None) -> None:
    """test_mAP50 / test_mAP50_95 on an existing run, `step` = cycle (or epochs for a reference)."""
    with tracking.run(step_name, run_id=run_id):
        if tags:
            tracking.set_tags(tags)
        for step, r in results.items():
            tracking.log_metrics({"test_mAP50": r.mAP50, "test_mAP50_95": r.mAP50_95}, step=step)


def test_curve(run_id: str, args, test, work: Path) -> dict[int, float]:
    """Test mAP50 of every cycle checkpoint of a cycle run (evaluated once, then read back)."""
    done = tracking.metric_steps(run_id, "test_mAP50")
    todo = [c for c in range(1, args.cycles + 1) if c not in done]
    results = {}
    for cycle in todo:
        name = f"cycle_{cycle:03d}.pt"
        ckpt = _checkpoint(run_id, work, name, {"alod.cycle": cycle}, f"checkpoints/{name}")
        results[cycle] = _evaluate_checkpoint(ckpt, test, args)
    if results:
        log_test_metrics(run_id, "cycle", results)
    return {**done, **{c: r.mAP50 for c, r in results.items()}}


def full_pool_reference(args, seed: int, epochs: int, data: Path, work: Path, test) -> dict:
    from alod.steps.pretrain import PretrainParams, run_pretrain

    p = PretrainParams(data=str(data), arch=args.arch, weights=args.weights, fraction=1.0, epochs=epochs,
                       batch_size=args.batch_size, lr=args.lr, seed=seed, workers=args.workers,
                       eval_batch_size=args.eval_batch_size, eval_every=epochs, register=False, experiment=args.experiment, work_dir=str(work))
    started = time.perf_counter()
    run_id, reused = _reuse_or_run(args, "pretrain", p.logged_params(), lambda: run_pretrain(p)[0])
    seconds = time.perf_counter() - started
    val = tracking.metric_steps(run_id, "mAP50").get(epochs, float("nan"))
    test_map = tracking.metric_steps(run_id, "test_mAP50").get(epochs)
    if test_map is None:
        result = _evaluate_checkpoint(_checkpoint(run_id, work, "pretrained.pt", None, "checkpoints/pretrained.pt"),
                                      test, args)
        log_test_metrics(run_id, "pretrain", {epochs: result},
                         tags={"alod.benchmark": "label_efficiency", "alod.role": "full_pool_reference"})
        test_map = result.mAP50
    return {"run_id": run_id, "seed": seed, "epochs": epochs, "val_mAP50": val, "test_mAP50": test_map,
            "seconds": seconds, "reused": reused}


def tune_epochs(args, data: Path, work: Path, test, started: float) -> int:
    """The candidate epochs whose full-pool model has the best val mAP50 (test is not looked at)."""
    candidates = [int(e) for e in args.tune_epochs.split(",") if e.strip()]
    scores = {}
    for epochs in candidates:
        ref = full_pool_reference(args, args.seeds[0], epochs, data, work, test)
        scores[epochs] = ref["val_mAP50"]
        print(f"{_stamp(started)} tune: {epochs} epochs -> full-pool val mAP50 {scores[epochs]:.4f}", flush=True)
    best = max(candidates, key=lambda e: (np.nan_to_num(scores[e], nan=-1.0), -e))
    print(f"{_stamp(started)} tune: using {best} epochs (best val mAP50)", flush=True)
    return best


def batches_ranking(args, sampler: str, seed: int, data: Path, work: Path, pretrained: dict) -> str:
    from alod.steps.pretrain import PretrainParams, run_pretrain
    from alod.steps.rank import RankParams, run_rank

    if seed not in pretrained:
        p = PretrainParams(data=str(data), arch=args.arch, weights=args.weights, fraction=args.pretrain_fraction,
                           epochs=args.pretrain_epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                           workers=args.workers, eval_batch_size=args.eval_batch_size,
                           eval_every=args.pretrain_epochs, register=True, experiment=args.experiment,
                           work_dir=str(work))
        pre_id, _ = _reuse_or_run(args, "pretrain", p.logged_params(), lambda: run_pretrain(p)[0])
        pretrained[seed] = tracking.registered_version_of_run(tracking.PRETRAINED_MODEL, pre_id)
    r = RankParams(data=str(data), model_uri=f"models:/{tracking.PRETRAINED_MODEL}/{pretrained[seed]}",
                   sampler=sampler, batches=args.cycles, batch_images=args.train // args.cycles, seed=seed,
                   eval_batch_size=args.eval_batch_size, workers=args.workers, experiment=args.experiment,
                   work_dir=str(work))
    rank_id, _ = _reuse_or_run(args, "rank", r.logged_params(), lambda: run_rank(r))
    return rank_id


def cycle_run(args, sampler: str, seed: int, epochs: int, data: Path, work: Path, ranking: str | None) -> tuple[str, bool]:
    from alod.steps.cycle import CycleParams, run_cycles

    p = CycleParams(data=str(data), ranking=ranking, sampler=sampler, protocol=args.protocol, cycles=args.cycles,
                    per_cycle=args.per_cycle, epochs=epochs, min_iterations=args.min_iterations, arch=args.arch,
                    batch_size=args.batch_size, lr=args.lr, seed=seed, reset=not args.warm_start, weights=args.weights,
                    workers=args.workers,
                    eval_batch_size=args.eval_batch_size, register=False, experiment=args.experiment,
                    work_dir=str(work), extra_tags={"alod.benchmark": "label_efficiency"})
    return _reuse_or_run(args, "cycle", p.logged_params(), lambda: run_cycles(p))


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
                     "fraction_to_target": needed / pool if np.isfinite(needed) else float("nan")})
    return pd.DataFrame(rows, columns=["sampler", "seed", "auc", "fraction_to_target"])


def comparison_table(curves: pd.DataFrame, refs: pd.DataFrame, samplers, pool: int,
                     target_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Rows: every sampler (in the order asked) and the full-pool reference; columns: test mAP50
    at each budget (mean ± std over seeds), AUC, fraction of the pool to reach target x full pool."""
    ref_mean = _mean_std(refs["test_mAP50"])[0]
    target = target_fraction * ref_mean
    stats = per_seed_stats(curves, pool, target)
    budgets = sorted(curves["labeled_images"].unique())
    max_fraction = max(budgets) / pool
    pct = round(100 * target_fraction)
    reach_col = f"pool to {pct} % of full"
    rows = []
    for sampler in samplers:
        g = curves[curves["sampler"] == sampler]
        s = stats[stats["sampler"] == sampler]
        row = {"sampler": sampler, "seeds": g["seed"].nunique()}
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
        rows.append(row)
    ref_row = {"sampler": REFERENCE, "seeds": refs["seed"].nunique()}
    for b in budgets:
        ref_row[_budget_label(b, pool)] = "—"
    ref_row[_budget_label(pool, pool)] = _fmt(refs["test_mAP50"])
    ref_row["AUC"] = "—"
    ref_row[reach_col] = "100 %"
    rows.append(ref_row)
    return pd.DataFrame(rows), stats, target


def verdict(curves: pd.DataFrame, stats: pd.DataFrame, samplers, pool: int, target: float,
            target_fraction: float) -> list[str]:
    """Plain statements: the best sampler against random at equal budget, and the issue's bar."""
    lines = [f"target: {100 * target_fraction:.0f} % of the full-pool test mAP50 = {target:.4f}"]
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
    full = target / target_fraction
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


def markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def make_data(args, out: Path) -> Path:
    if args.data:
        data = Path(args.data)
    else:
        from alod.data.synthetic import write_dataset

        data = out / "data"
        write_dataset(data, train=args.train, val=args.val, test=args.test, seed=args.data_seed)
    for split in ("train", "val", "test"):
        frames = load_split(data, split).frames
        if split == "train":
            args.train = len(frames)
    return data


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from alod.active.samplers import get_sampler

    for s in args.samplers:
        get_sampler(s)  # an unknown name fails now, not an hour in
    started = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    data = make_data(args, out)
    test = load_split(data, "test")
    if args.cycles * args.per_cycle > args.train:
        raise SystemExit(f"budget {args.cycles} x {args.per_cycle} exceeds the pool of {args.train} images")
    if args.protocol == "batches" and args.per_cycle > args.train // args.cycles:
        raise SystemExit(f"batches protocol: per-cycle {args.per_cycle} exceeds a batch of "
                         f"{args.train // args.cycles} images (pool / cycles)")
    tracking.setup(args.experiment)
    print(f"{_stamp(started)} label efficiency: pool {args.train}, test {len(test.frames)}, samplers "
          f"{','.join(args.samplers)}, seeds {args.seeds}, protocol {args.protocol}, {args.cycles} cycles x "
          f"{args.per_cycle}, tracking {tracking.tracking_uri()} experiment {args.experiment}", flush=True)

    epochs = tune_epochs(args, data, work, test, started) if args.tune_epochs else args.epochs
    refs = []
    for seed in args.seeds:
        ref = full_pool_reference(args, seed, epochs, data, work, test)
        refs.append(ref)
        print(f"{_stamp(started)} full pool, seed {seed}: test mAP50 {ref['test_mAP50']:.4f} "
              f"(val {ref['val_mAP50']:.4f}){' (reused)' if ref['reused'] else ''}", flush=True)
    refs = pd.DataFrame(refs)

    runs, timings, pretrained = {}, [], {}
    jobs = [(seed, sampler) for seed in args.seeds for sampler in args.samplers]
    for i, (seed, sampler) in enumerate(jobs):
        t0 = time.perf_counter()
        ranking = batches_ranking(args, sampler, seed, data, work, pretrained) if args.protocol == "batches" else None
        run_id, reused = cycle_run(args, sampler, seed, epochs, data, work, ranking)
        test_curve(run_id, args, test, work)
        runs[run_id] = (sampler, seed)
        seconds = time.perf_counter() - t0
        if not reused:
            timings.append(seconds)
        left = len(jobs) - i - 1
        eta = f", about {left * np.mean(timings) / 60:.0f} min left" if timings and left else ""
        print(f"{_stamp(started)} {sampler} seed {seed}: run {run_id} in {seconds:.0f}s"
              f"{' (reused)' if reused else ''} [{i + 1}/{len(jobs)}{eta}]", flush=True)

    curves = tracking.cycle_curves(args.experiment)
    curves = curves[curves["run_id"].isin(runs)].rename(columns={"mAP50": "val_mAP50"}).copy()
    curves["seed"] = curves["seed"].astype(int)
    curves["test_mAP50"] = [tracking.metric_steps(r, "test_mAP50").get(int(c), float("nan"))
                            for r, c in zip(curves["run_id"], curves["cycle"])]
    curves = curves.sort_values(["sampler", "seed", "cycle"]).reset_index(drop=True)

    table, stats, target = comparison_table(curves, refs, args.samplers, args.train, args.target)
    lines = verdict(curves, stats, args.samplers, args.train, target, args.target)
    total = time.perf_counter() - started
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}")
    header = (f"test mAP50 (mean ± std over {len(args.seeds)} seed(s)) at each labeled budget, protocol "
              f"{args.protocol}, {args.arch} detector, {epochs} epochs; pool {args.train}, test "
              f"{len(test.frames)} images; AUC = mean test mAP50 over the budget range; "
              f"{total / 60:.1f} min on {machine}")
    md = markdown(table)
    print("\n" + header + "\n\n" + md + "\n\n" + "\n".join(lines), flush=True)

    from alod.plots import learning_curves

    fig = learning_curves(curves, x=("labeled_images", "labeled_boxes"), y="test_mAP50",
                          reference=float(refs["test_mAP50"].mean()),
                          title=f"test mAP50, {args.protocol} protocol")
    fig.savefig(out / "learning_curve.png", dpi=120)
    (out / "table.md").write_text(header + "\n\n" + md + "\n")
    table.to_csv(out / "table.csv", index=False)
    curves.to_csv(out / "curves.csv", index=False)
    refs.to_csv(out / "reference.csv", index=False)
    stats.to_csv(out / "per_seed.csv", index=False)
    (out / "verdict.txt").write_text("\n".join(lines) + "\n")
    settings = {k: v for k, v in vars(args).items()}
    settings["epochs_used"] = epochs
    summary = {"settings": settings, "seconds": total, "machine": machine, "target": target,
               "reference_test_mAP50": float(refs["test_mAP50"].mean()), "verdict": lines,
               "runs": {r: {"sampler": s, "seed": seed} for r, (s, seed) in runs.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    with tracking.run("benchmark", run_name="label-efficiency",
                      tags={"alod.benchmark": "label_efficiency", "alod.protocol": args.protocol}):
        tracking.log_params({k: v for k, v in settings.items() if k not in ("out", "data", "experiment")})
        tracking.log_metrics({"seconds": total, "reference_test_mAP50": summary["reference_test_mAP50"]})
        for name in ("table.md", "table.csv", "curves.csv", "reference.csv", "per_seed.csv", "verdict.txt",
                     "summary.json", "learning_curve.png"):
            tracking.log_artifact(out / name, "label_efficiency")
    print(f"\nresults in {out} (table.md, table.csv, curves.csv, learning_curve.png); "
          f"{total / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
