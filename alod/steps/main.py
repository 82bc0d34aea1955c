"""The `main` step: pretrain -> rank -> cycle for several samplers and seeds, then compare.

Like MLflow's multistep_workflow, a step whose finished run has identical
parameters and code version is reused instead of run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from alod import tracking
from alod.engine import distributed
from alod.plots import learning_curves
from alod.active.bandit import AUTO
from alod.active.protocol import PROTOCOL_TYPES, make_ranking
from alod.active.samplers import get_sampler
from alod.data.splits import load_split
from alod.params import MainParams
from alod.run_folder import RunFolder
from alod.report import compare_table, curve_auc, forecast_table, markdown_table
from alod.steps.cycle import CycleParams, check_inputs, run_cycles
from alod.steps.pretrain import PretrainParams, run_pretrain
from alod.steps.rank import RankParams, run_rank
from alod.starting_weights import weights_choice


def reuse_or_run(experiment: str, step: str, params: dict, run, *, fresh: bool = False) -> tuple[str, bool]:
    """(run id, reused): a FINISHED run of `step` with these logged params and this code version
    (MLflow's multistep_workflow `_get_or_run`), else the run id `run()` returns. `fresh`: always run."""
    found = None if fresh else tracking.find_finished_run(experiment, step, params, tracking.code_version())
    if found is not None:
        print(f"reusing finished {step} run {found.info.run_id} (same parameters and code)", flush=True)
        return found.info.run_id, True
    return run(), False


# Each step's runner, returning its run id: what `main` and the label-efficiency benchmark chain.
STEP_RUNNERS = {
    "pretrain": lambda p: run_pretrain(p)[0],
    "rank": run_rank,
    "cycle": run_cycles,
}


def run_step(step: str, params, *, fresh: bool = False) -> tuple[str, bool]:
    """(run id, reused) of `step` with these parameters: a finished run with the same logged parameters
    and code is reused, else the step runs as its own top-level run (beside any open one)."""
    return reuse_or_run(params.experiment, step, params.logged_params(),
                        lambda: _detached(STEP_RUNNERS[step], params), fresh=fresh)


class StepJobs:
    """Runs a list of steps one after another (jobs=1) or side by side in `jobs` spawned processes on
    this machine, each with its share of the torch threads and its output prefixed by what it runs
    (steps with identical logged parameters then run once: `auto` and `random` share a ranking)."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.pool = None

    def __enter__(self) -> "StepJobs":
        if self.jobs > 1:
            import torch

            threads = max(1, torch.get_num_threads() // self.jobs)
            self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_job_process, initargs=(threads,))
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            # On an error or Ctrl-C nothing queued starts; running steps end (or die with the signal) first.
            self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, step: str, params_list: list) -> list[str]:
        """The run id of each step, in order."""
        if self.pool is None:  # one after another: a repeated step finds the finished run and reuses it
            return [run_step(step, params)[0] for params in params_list]
        unique: dict[str, object] = {}
        for params in params_list:
            unique.setdefault(_params_key(params), params)
        futures = {key: self.pool.submit(_run_step_job, step, params) for key, params in unique.items()}
        # In submission order: the first failure raises (the others are cancelled or finish).
        ids = {}
        for key, future in futures.items():
            try:
                ids[key] = future.result()
            except BrokenProcessPool as e:
                # The pool kills every other job process too: name all steps left unfinished.
                unfinished = [_job_label(unique[k]) for k, f in futures.items()
                              if k not in ids and (f.cancelled() or f.exception() is not None)]
                raise RuntimeError(
                    f"a {step} job process ended abruptly (killed by a signal, or out of memory) and took the "
                    f"other jobs down with it; unfinished {step} steps: {'; '.join(unfinished)} (runs they had "
                    "started are left RUNNING in MLflow). Run the same command again: every step that finished is reused, "
                    "the others start over (fewer --jobs need less memory)") from e
            except Exception:
                print(f"{step} for {_job_label(unique[key])} failed:", file=sys.stderr, flush=True)
                raise
        return [ids[_params_key(params)] for params in params_list]


def _params_key(params) -> str:
    return type(params).__name__ + repr(sorted(params.logged_params().items()))


def _start_job_process(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # Bars of processes side by side would overwrite each other (MLflow's artifact downloads too);
    # every cycle still prints its line.
    os.environ["ALOD_PROGRESS"] = "0"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def _job_label(params) -> str:
    return f"{params.sampler}, seed {params.seed}"


def _run_step_job(step: str, params) -> str:
    with contextlib.redirect_stdout(_PrefixedLines(sys.stdout, f"[{_job_label(params)}] ")):
        return run_step(step, params)[0]


class _PrefixedLines(io.TextIOBase):
    """A text stream that writes whole lines to `stream`, each behind `prefix`."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.partial = stream, prefix, ""

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            self.stream.write(self.prefix + line + "\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def pretrained_model_uri(pretrain_run_id: str) -> str:
    """The registry URI of the model a pretrain run registered (what `rank` loads)."""
    version = tracking.registered_version_of_run(tracking.PRETRAINED_MODEL, pretrain_run_id)
    return f"models:/{tracking.PRETRAINED_MODEL}/{version}"


def run_main(p: MainParams) -> str:
    p.weights = weights_choice(p.arch, p.weights)  # resolved once, so run reuse compares like with like
    if p.jobs > 1 and p.nproc > 1:
        raise ValueError(f"jobs {p.jobs} runs steps side by side in processes of this machine, nproc {p.nproc} "
                         "runs each step in several: choose one of the two")
    _check_before_training(p)
    experiment_id = tracking.setup(p.experiment)
    if experiment_id is not None:
        # Under `mlflow run` the main run already exists in the experiment MLflow chose (its
        # Default one, or --experiment-name): the steps and the search for reusable runs
        # follow it, so every run of this comparison lands beside main.
        p = dataclasses.replace(p, experiment=tracking.experiment_name(experiment_id))
    with tracking.run("main", run_name="main", tags={"alod.samplers": ",".join(p.samplers),
                                                      "alod.seeds": ",".join(map(str, p.seeds))}) as main_id:
        tracking.log_params(p.logged_params())
        cycle_runs, pretrain_runs, used = [], [], []

        def linked(step: str, run_id: str, what: str) -> str:
            tracking.link_to_main(run_id, main_id)
            used.append((step, what, run_id))
            return run_id

        chains = []  # (seed, sampler, rank params): one rank + cycle chain each
        for seed in p.seeds:
            pre = p.subset_for(PretrainParams, epochs=p.pretrain_epochs, seed=seed)
            pre_id = linked("pretrain", run_step("pretrain", pre)[0], f"seed {seed}")
            pretrain_runs.append(pre_id)
            model_uri = pretrained_model_uri(pre_id)
            for sampler in p.samplers:
                # `auto` (pool only) picks cycle 1 at random and scores with its arms later: rank as random does
                chains.append((seed, sampler, p.subset_for(RankParams, model_uri=model_uri, seed=seed,
                                                           sampler="random" if sampler == AUTO else sampler)))
        with StepJobs(p.jobs) as jobs:
            rank_ids = jobs.run("rank", [rank for _seed, _sampler, rank in chains])
            for (seed, sampler, _rank), rank_id in zip(chains, rank_ids):
                linked("rank", rank_id, f"{sampler}, seed {seed}")
            cycle_ids = jobs.run("cycle", [p.subset_for(CycleParams, ranking=rank_id, sampler=sampler, seed=seed)
                                           for (seed, sampler, _rank), rank_id in zip(chains, rank_ids)])
        for (seed, sampler, _rank), cycle_id in zip(chains, cycle_ids):
            cycle_runs.append(linked("cycle", cycle_id, f"{sampler}, seed {seed}"))
        curves = tracking.cycle_curves(p.experiment)
        curves = curves[curves["run_id"].isin(cycle_runs)]
        table, png = write_comparison(curves, RunFolder(p.work_dir, main_id) / "compare", log=True)
        if distributed.is_main_process():
            print("\nsamplers compared (mAP50 on val; AUC = mean mAP50 over the budget range):", flush=True)
            print(table.to_string(index=False), flush=True)
            print_forecast(curves, p.target_map50 or None)
            zero = _print_ranking_model(p, pretrain_runs)
            print(f"learning curve: {png}", flush=True)
            _log_result(p, curves, table, zero, used, experiment_id)
    return main_id


def _check_before_training(p: MainParams) -> None:
    """What a later step would refuse is refused now, before pretrain trains anything: unknown samplers,
    repeated samplers or seeds, a budget the pool or the ranking's batches cannot give."""
    for what, values in (("sampler", p.samplers), ("seed", p.seeds)):
        if not values:
            raise ValueError(f"no {what}s given: name at least one (--{what}s)")
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            raise ValueError(f"{what}s {','.join(map(str, values))} name {', '.join(repeated)} more than once")
    for sampler in p.samplers:
        if sampler != AUTO:
            get_sampler(sampler)  # rank scores with it under either protocol
    names = [f.name for f in load_split(p.data, "train").frames]
    # rank cuts the pool into batches by rank alone, so a ranking of equal scores has the real batch sizes
    protocol = PROTOCOL_TYPES.get(p.protocol)  # unknown: check_inputs says so
    ranking = (make_ranking(names, [0.0] * len(names), batches=p.batches, batch_images=p.batch_images)
               if protocol is not None and protocol.needs_ranking else None)
    for sampler in p.samplers:
        check_inputs(p.subset_for(CycleParams, ranking=None, sampler=sampler, seed=p.seeds[0]), len(names), ranking)


def _print_ranking_model(p: MainParams, pretrain_runs: list[str]) -> float | None:
    """The pretrain model's val mAP50: with 0 pretrain epochs, the starting weights, i.e. what zero labels give
    (returned then, else None)."""
    scores = [max(tracking.metric_steps(r, "mAP50").items(), default=(0, float("nan")))[1] for r in pretrain_runs]
    mean = sum(scores) / len(scores) if scores else float("nan")
    if p.pretrain_epochs == 0:
        print(f"zero labels (the starting weights, which also ranked the pool): mAP50 {mean:.4f}", flush=True)
        return mean
    print(f"ranking model (pretrained on {p.fraction:.0%} of the pool, {p.pretrain_epochs} epochs): "
          f"mAP50 {mean:.4f}", flush=True)
    return None


def _log_result(p: MainParams, curves, table, zero: float | None, used=(), experiment_id=None) -> None:
    """The decisive numbers on the main run itself: per sampler final mAP50 and AUC, and a description."""
    metrics = {} if zero is None else {"zero_label_mAP50": zero}
    for sampler, g in curves.groupby("sampler"):
        finals = g[g["cycle"] == g["cycle"].max()]["mAP50"]
        aucs = [curve_auc(s["labeled_images"], s["mAP50"]) for _seed, s in g.groupby("seed")]
        metrics[f"final_mAP50.{sampler}"] = float(finals.mean())
        metrics[f"AUC.{sampler}"] = float(sum(aucs) / len(aucs))
    tracking.log_metrics(metrics)
    zero_text = f" Zero labels (the starting weights): mAP50 {zero:.4f}." if zero is not None else ""
    tracking.set_tags({"mlflow.note.content": (
        f"**{', '.join(p.samplers)}** compared on `{p.data}` ({p.arch}, protocol {p.protocol}, {p.cycles} cycles "
        f"x {p.per_cycle} images, seeds {', '.join(map(str, p.seeds))}); mAP50 on val.{zero_text}\n\n"
        + markdown_table(table) + _runs_text(used, experiment_id))})


def _runs_text(used, experiment_id) -> str:
    """The step runs this main used, as links in the UI (each also carries `alod.main_run`)."""
    if not used:
        return ""
    base = f"#/experiments/{experiment_id}/runs/" if experiment_id else None
    lines = [f"- {step} ({what}): " + (f"[{run_id}]({base}{run_id})" if base else f"`{run_id}`")
             for step, what, run_id in used]
    return (f"\n\nRuns (filter the runs table with `tags.{tracking.MAIN_RUN_TAG} = '<this run id>'`):\n"
            + "\n".join(lines))


def _detached(fn, params):
    """Run a step as its own top-level run while the main run stays open."""
    with tracking.suspended():
        return fn(params)


def print_forecast(curves, target: float | None) -> None:
    """Per sampler: the learning-curve forecast at 1.5x, 2x, 5x the last budget (alod.forecast)."""
    table = forecast_table(curves, target=target)
    if table.empty:
        return
    print("\nforecast (val mAP50 = a - b*n^-c fitted to every seed's cycles; [80 % bootstrap band]):", flush=True)
    print(table.to_string(index=False), flush=True)
    if "fit" in table and table["fit"].astype(str).str.contains("at bound", regex=False).any():
        print("(a at bound: the fitted asymptote hit mAP50's ceiling of 1, i.e. the points show no flattening "
              "yet; the values beyond them extrapolate their slope and are no estimate of where mAP50 levels off)",
              flush=True)


def write_comparison(curves, out: Path, *, log: bool = False) -> tuple:
    out.mkdir(parents=True, exist_ok=True)
    table = compare_table(curves)
    table.to_csv(out / "comparison.csv", index=False)
    curves.to_csv(out / "curves.csv", index=False)
    fig = learning_curves(curves, x=("labeled_images", "labeled_boxes"), title="mAP50")
    fig.savefig(out / "learning_curve.png", dpi=120)
    if log:
        for name in ("comparison.csv", "curves.csv", "learning_curve.png"):
            tracking.log_artifact(out / name, "compare")
    return table, out / "learning_curve.png"
