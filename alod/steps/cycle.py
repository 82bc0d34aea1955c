"""The `cycle` step's launcher: N active-learning cycles; the oracle unveils ground truth or asks people.

The launcher (always rank 0 of the user's process) validates every input,
opens the MLflow run and, for nproc > 1, starts `torchrun` workers that read the
run id from the environment. Worker rank 0 is the only process that logs. The
cycles themselves, as named phases, are in `alod.steps.cycle_loop`.

With `oracle="files"` the labels come from people: after selecting, the run
exports the batch (`annotation/cycle_NNN/`: image list, COCO and Label Studio
tasks with the model's predictions as pre-annotations), tags itself
`alod.waiting_for_labels` and ends with status SCHEDULED. `alod import-labels`
merges what comes back into the run's label store (`labels/labels.json`);
resuming the run trains on exactly those labels once every selected image has one.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pandas as pd

from alod import annotation, locks, run_folder, tracking
from alod.active import protocol as protocols
from alod.active.bandit import AUTO, Exp3, parse_arms
from alod.active.samplers import get_sampler
from alod.engine import distributed
from alod.engine.distributed import default_device
from alod.oracles import ORACLE_TYPES, labeled_state_of_run
from alod.params import ORACLES, CycleParams
from alod.run_folder import RunFolder
from alod.starting_weights import weights_choice
from alod.data.splits import load_split
from alod.steps.common import Launch, launch_workers
from alod.steps.cycle_loop import STOPPED_TAG, cycles

PARAMS_ENV = "ALOD_CYCLE_PARAMS"


class CycleInputError(ValueError):
    """Bad cycle input found before any training starts."""


# --- launcher ----------------------------------------------------------------


def run_cycles(p: CycleParams) -> str:
    """Validate, open (or reopen) the run, then run the cycles here or under torchrun."""
    check_settings(p)  # before opening a run or reading data
    protocol = protocols.PROTOCOL_TYPES[p.protocol]
    try:  # a bad file fails here, before anything trains
        p.weights = weights_choice(p.arch, p.weights)
    except (OSError, ValueError) as e:
        raise CycleInputError(str(e)) from None
    oracle = ORACLE_TYPES[p.oracle]
    tracking.setup(p.experiment)
    train = load_split(p.data, "train")
    work = Path(p.work_dir)
    ranking, ranking_tags = _resolve_ranking(p, protocol, train, work)
    if p.sampler is None:
        p.sampler = ranking_tags.get("alod.sampler") or protocol.default_sampler
    check_sampler_and_budget(p, len(train.frames), ranking)

    tags = {"alod.sampler": p.sampler, "alod.protocol": p.protocol, "alod.seed": p.seed,
            "alod.dataset": train.digest, "alod.code_version": tracking.code_version(), "alod.weights": p.weights,
            **({"alod.auto_samplers": ",".join(parse_arms(p.auto_samplers))} if p.sampler == AUTO else {}),
            **ranking_tags.get("lineage", {}), **p.extra_tags}
    resume_state = None
    if p.resume_run_id:
        tracking.get_run(p.resume_run_id)  # fails clearly when unknown
    with contextlib.ExitStack() as held:
        if p.resume_run_id:
            # Before the run's status changes: a second command on a run that is being worked on is
            # refused here, and never trains it twice.
            held.enter_context(locks.run_lock(work, p.resume_run_id))
            _remove_stale_temp_files(work, p.resume_run_id)
            held.enter_context(_run_tempdir(RunFolder(work, p.resume_run_id).path))
        with tracking.run("cycle", run_name=f"{p.sampler}-{p.protocol}-s{p.seed}", tags=tags,
                          run_id=p.resume_run_id) as run_id:
            if p.resume_run_id:
                resume_state = labeled_state_of_run(run_id, work)
            else:
                held.enter_context(locks.run_lock(work, run_id))  # a new run: nobody else knows its id yet
                held.enter_context(_run_tempdir(RunFolder(work, run_id).path))
                tracking.log_params(p.logged_params())
            p.run_id = run_id
            folder = RunFolder(work, run_id)
            folder.create()
            if ranking is not None:
                p.ranking_file = str(folder / run_folder.RANKING)
                ranking.to_parquet(p.ranking_file)
            if resume_state is not None:
                p.state_file = str(resume_state)
            if p.resume_run_id and p.sampler == AUTO:
                auto_state = auto_state_of_run(run_id, work)
                p.auto_state_file = str(auto_state) if auto_state else None
            p.labels_file = oracle.prepare_run(run_id, work)
            if oracle.needs_ranking_model and ranking_tags.get("ranking_model"):  # cycle 1 has no model yet
                ckpt, _ = tracking.download_registered_checkpoint(ranking_tags["ranking_model"], work / "downloads")
                p.ranking_checkpoint, p.ranking_model = str(ckpt), ranking_tags["ranking_model"]
            elif not protocol.scores_each_cycle and ranking_tags.get("ranking_model"):
                try:  # only for pictures: without it, `picked` shows the ranking's scores alone
                    ckpt, _ = tracking.download_registered_checkpoint(ranking_tags["ranking_model"], work / "downloads")
                    p.ranking_checkpoint, p.ranking_model = str(ckpt), ranking_tags["ranking_model"]
                except (tracking.TrackingError, OSError) as e:
                    print(f"warning: the ranking model {ranking_tags['ranking_model']} is not available ({e}); "
                          "the picked sheets show scores without detections", flush=True)
            launch = Launch(p.nproc, p.nnodes, p.rdzv_endpoint, max_restarts=p.max_restarts)
            if launch.needed:
                launch_workers(launch, "alod.steps.cycle", PARAMS_ENV, p, run_id)
            else:
                cycle_worker(p)
            _describe(p, run_id)
        waiting = tracking.waiting_cycle(run_id)
        if waiting is not None:
            tracking.set_status(run_id, "SCHEDULED")
            print(f"run {run_id} waits for the labels of cycle {waiting}: the batch is in its artifacts under "
                  f"annotation/cycle_{waiting:03d}/ ({', '.join(annotation.EXPORT_FILES)}).\n"
                  f"Import them with `alod import-labels {run_id} LABELS`, then continue with "
                  f"`alod cycle --resume-run-id {run_id}` (the run's parameters are reused).", flush=True)
    return run_id


@contextlib.contextmanager
def _run_tempdir(run_dir: Path):
    """Temporary files of this command (MLflow stages every logged image, figure and dict in one) go to
    the run's `tmp/` folder, which the next resume empties: a `kill -9` leaves nothing in /tmp."""
    import tempfile

    tmp = run_dir / run_folder.TMP
    tmp.mkdir(parents=True, exist_ok=True)
    before, env_before = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)  # TMPDIR: for the torchrun workers too
    try:
        yield tmp
    finally:
        tempfile.tempdir = before
        if env_before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env_before


def _remove_stale_temp_files(work: Path, run_id: str) -> None:
    """What atomic writes a kill interrupted left in the run's folder, and what the killed command had
    in its temporary folder (the run lock is held: no other command of this run is writing)."""
    import shutil

    with locks.labels_lock(work, run_id):
        folder = RunFolder(work, run_id)
        removed = locks.remove_stale_temp_files(folder.path)
        tmp = folder / run_folder.TMP
        for entry in (tmp.iterdir() if tmp.is_dir() else []):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        print(f"removed {len(removed)} temporary file(s) of interrupted writes in {work / 'runs' / run_id}",
              flush=True)


def _describe(p: CycleParams, run_id: str) -> None:
    """A short description for the MLflow UI: what ran, on what, and the curve so far."""
    curve = tracking.metric_steps(run_id, "mAP50")
    labeled = tracking.metric_steps(run_id, "labeled_images")
    points = ", ".join(f"{int(labeled.get(c, 0))}: {v:.4f}" for c, v in sorted(curve.items()))
    start = Path(p.weights).name if p.weights not in (None, "none") else "random init"
    stopped = tracking.get_run(run_id).data.tags.get(STOPPED_TAG)
    tracking.set_tags({"mlflow.note.content": (
        f"**{p.sampler}**, protocol {p.protocol}, seed {p.seed}: {len(curve)} of {p.cycles} cycles x "
        f"{p.per_cycle} images on `{p.data}`, {p.arch} from {start}"
        f"{', reset every cycle' if p.reset else ', warm-started'}.\n\nval mAP50 by labeled images: "
        f"{points or 'no cycle finished yet'}" + (f"\n\nStopped early {stopped}" if stopped else ""))})


def _resolve_ranking(p: CycleParams, protocol: type[protocols.Protocol], train,
                     work: Path) -> tuple[pd.DataFrame | None, dict]:
    if p.ranking is None:
        if protocol.needs_ranking:
            raise CycleInputError(f"protocol {protocol.name!r} needs a ranking: a rank run id or a parquet path")
        return None, {}
    tags: dict = {}
    source = p.ranking
    if Path(p.ranking).suffix == ".parquet" or Path(p.ranking).exists():
        if not Path(p.ranking).is_file():
            raise CycleInputError(f"ranking file {p.ranking} not found")
        frame = pd.read_parquet(p.ranking)
    else:
        run = tracking.get_run(p.ranking)
        if run.data.tags.get("alod.step") != "rank":
            raise CycleInputError(f"run {p.ranking} is a {run.data.tags.get('alod.step')!r} run, not a rank run")
        if run.data.tags.get("alod.dataset") not in (None, train.digest):
            raise CycleInputError(
                f"ranking run {p.ranking} was made on dataset {run.data.tags['alod.dataset']}, "
                f"but the training labels here have digest {train.digest}: rank this dataset first")
        path = tracking.download_run_artifact(p.ranking, "ranking/ranking.parquet", work / "downloads")
        frame = pd.read_parquet(path)
        tags["alod.sampler"] = run.data.tags.get("alod.sampler")
        tags["lineage"] = {"alod.rank_run": p.ranking}
        if run.data.tags.get("alod.model_name") and run.data.tags.get("alod.model_version"):
            tags["ranking_model"] = f"models:/{run.data.tags['alod.model_name']}/{run.data.tags['alod.model_version']}"
        source = f"run {p.ranking}"
    frame = protocols.validate_ranking(frame, source)
    pool = {f.name for f in train.frames}
    foreign = [n for n in frame["image"] if n not in pool]
    if foreign:
        raise CycleInputError(
            f"ranking ({source}) names {len(foreign)} image(s) that are not in the training labels, "
            f"e.g. {foreign[0]!r}: it was made on another dataset")
    return frame, tags


def check_inputs(p: CycleParams, pool_size: int, ranking: pd.DataFrame | None) -> None:
    """Every check of a cycle's input that needs no trained model (`main` runs them before anything
    trains; `ranking`: what the protocol cycles over, None for `pool`)."""
    check_settings(p)
    check_sampler_and_budget(p, pool_size, ranking)


def check_settings(p: CycleParams) -> None:
    """The checks that need neither data nor a ranking."""
    if p.protocol not in protocols.PROTOCOLS:
        raise CycleInputError(f"protocol must be one of {protocols.PROTOCOLS}, got {p.protocol!r}")
    if p.oracle not in ORACLES:
        raise CycleInputError(f"oracle must be one of {ORACLES}, got {p.oracle!r}")
    if p.budget_boxes < 0:
        raise CycleInputError(f"budget_boxes must be >= 0, got {p.budget_boxes}")
    if p.budget_boxes and not ORACLE_TYPES[p.oracle].knows_boxes_before_labeling:
        raise CycleInputError("budget_boxes needs the box count of an image before it is labeled: "
                              "use it with the simulated oracle, or budget in images (per_cycle) with files")
    if not 0 <= p.target_map50 < 1:
        raise CycleInputError(f"target_map50 must be in [0, 1) (0: no target), got {p.target_map50}")
    if p.stop_min_gain < 0:
        raise CycleInputError(f"stop_min_gain must be >= 0, got {p.stop_min_gain}")


def check_sampler_and_budget(p: CycleParams, pool_size: int, ranking: pd.DataFrame | None) -> None:
    """The sampler (or `auto`'s arms) and whether the pool and the ranking give the budget."""
    protocol = protocols.PROTOCOL_TYPES[p.protocol]
    if p.sampler == AUTO:
        if not protocol.scores_each_cycle:
            raise CycleInputError("sampler 'auto' chooses a sampler every cycle, so it needs protocol 'pool' "
                                  "(under 'batches' one ranking, made by one sampler, fixes every cycle's batch)")
        try:
            Exp3(parse_arms(p.auto_samplers), seed=p.seed)
            for arm in parse_arms(p.auto_samplers):
                get_sampler(arm)
        except ValueError as e:
            raise CycleInputError(str(e)) from None
    elif protocol.scores_each_cycle:
        try:
            get_sampler(p.sampler)
        except ValueError as e:
            raise CycleInputError(str(e)) from None
    _check_budget(p, protocol, pool_size, ranking)


def _check_budget(p: CycleParams, protocol: type[protocols.Protocol], pool_size: int,
                  ranking: pd.DataFrame | None) -> None:
    if p.cycles < 1 or p.per_cycle < 1:
        raise CycleInputError("cycles and per_cycle must be >= 1")
    if p.cycles * p.per_cycle > pool_size:
        raise CycleInputError(
            f"budget {p.cycles} cycles x {p.per_cycle} images = {p.cycles * p.per_cycle} "
            f"exceeds the pool of {pool_size} training images")
    if ranking is not None:
        try:
            protocol.over(ranking=ranking, names=()).check_budget(p.cycles, p.per_cycle)
        except ValueError as e:
            raise CycleInputError(str(e)) from None


def auto_state_of_run(run_id: str, work: Path) -> Path | None:
    """The bandit's recorded choices of an interrupted `auto` run: local copy first, else its artifact."""
    return RunFolder(work, run_id).local_or_artifact(run_folder.AUTO)


# --- worker (every rank) -----------------------------------------------------


def cycle_worker(p: CycleParams) -> None:
    distributed.init_distributed()
    device = default_device()
    train = load_split(p.data, "train")
    val = load_split(p.data, "val")
    ranking = pd.read_parquet(p.ranking_file) if p.ranking_file else None
    run_dir = RunFolder(p.work_dir, p.run_id).path

    with tracking.attached(p.run_id):
        cycles(p, device, train, val, ranking, run_dir)
    distributed.cleanup()


def _worker_main() -> None:
    params = json.loads(os.environ[PARAMS_ENV])
    cycle_worker(CycleParams(**params))


if __name__ == "__main__":
    _worker_main()
