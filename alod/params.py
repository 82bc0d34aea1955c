"""Step parameters, each declared once.

A step's parameters are a dataclass (`PretrainParams`, `RankParams`, ...) whose
fields carry in their metadata everything the other places need: the help text,
whether the run logs the value as an MLflow param, whether a resume may change
it, and whether a person sets it at all (fields a launcher fills in for its
workers are not options). From those fields `entrypoints.options.options_for`
builds the click options and `entrypoints.generated` writes `MLproject` and the
README's parameter tables; `tests/test_generated.py` fails when either file is
stale. A parameter several steps take (`arch`, `lr`, `work_dir`, ...) is
declared once in `SHARED` and used with `shared(name)`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

from alod.names import CHAMPION, DEFAULT_EXPERIMENT, PRETRAINED_MODEL

META_KEY = "alod"


@dataclass(frozen=True)
class ParamInfo:
    help: str = ""
    logged: bool = True  # logged as an MLflow param of the step's run (and compared for run reuse)
    resumable: bool = False  # how the run executes, not what it computes: a resume may change it
    user: bool = True  # False: filled in by a launcher for its workers, never an option
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    option: str | None = None  # the click option when not --field-name
    argument: bool = False  # a positional click argument (MLproject: a required parameter)
    mlproject: bool = True  # an MLproject parameter (`experiment` is not: `mlflow run` chooses it)
    mlproject_type: str | None = None  # e.g. "path" (MLflow resolves it); default: from the Python type
    mlproject_default: Any = None  # what MLproject passes when the CLI has no default (`data`)
    shown_default: str | None = None  # how --help and the README show a default computed at run time
    env_default: str | None = None  # an environment variable that gives the default when set
    directory: bool = False  # the value names an existing-or-new folder, not a file


def param(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, **info: Any) -> Any:
    """A dataclass field carrying its ParamInfo."""
    return field(default=default, default_factory=default_factory,
                 metadata={META_KEY: ParamInfo(help=help, **info)})


def info(f: dataclasses.Field) -> ParamInfo:
    return f.metadata.get(META_KEY, ParamInfo(user=False, logged=False))


_WEIGHTS_HELP = ("local weight file (a state dict, torchvision `.pth` or alod checkpoint; e.g. torchvision's "
                 "COCO-pretrained weights); default: the weights alod ships for the architecture (tiny: "
                 "`alod models weights`), else random init; `none`: random init. Nothing is downloaded")

# The parameters several steps take: (default, ParamInfo fields). A step may give its own help.
SHARED: dict[str, tuple[Any, dict[str, Any]]] = {
    "data": (None, dict(help="BDD100K-layout root: images/100k/{split}, labels/det_20/det_{split}.json "
                             "(what `alod synth` writes)", resumable=True, mlproject_default="data/bdd100k",
                             directory=True)),
    "arch": ("fasterrcnn_resnet50_fpn", dict(help="detector: `fasterrcnn_resnet50_fpn`, "
                                                  "`fasterrcnn_resnet50_fpn_v2`, `fasterrcnn_mobilenet_v3_large_fpn`, "
                                                  "`fasterrcnn_mobilenet_v3_large_320_fpn`, `tiny` (CPU work); see "
                                                  "`alod models archs`")),
    "epochs": (50, dict(help="training epochs", minimum=0)),
    "min_iterations": (0, dict(help="at least this many SGD steps per cycle: small labeled sets train more epochs "
                                    "(early cycles otherwise barely train); 0: exactly `epochs`", minimum=0)),
    "batch_size": (4, dict(help="images per process", minimum=1)),
    "roi_samples": (0, dict(help="proposals sampled per image to train the box head (Faster R-CNN's "
                                 "`box_batch_size_per_image`); 0: the architecture's own (tiny 128, torchvision's "
                                 "512). The ROI head's backward dominates a CPU step: with 32 a tiny detector's "
                                 "step is 1.5-1.7x faster, at equal steps 0.002-0.008 lower val mAP50 (README: "
                                 "Fine-tuning recipe)",
                            minimum=0)),
    "freeze_batchnorm": (False, dict(help="hold every BatchNorm layer at the statistics and scale of the weights "
                                          "training starts from (torchvision's way to fine-tune pretrained "
                                          "backbones); the convolutions train. A few dozen images in batches "
                                          "of 4 otherwise re-estimate them (README: Fine-tuning recipe)")),
    "lr": (0.02, dict(help="learning rate for a total batch of 16, scaled linearly with batch x processes "
                           "(torchvision's rule)")),
    "seed": (0, dict(help="seeds data subsets, selection, initial weights and shuffling")),
    "weights": (None, dict(help=_WEIGHTS_HELP, shown_default="the arch's starting weights")),
    "workers": (2, dict(help="DataLoader workers", resumable=True, minimum=0)),
    "eval_batch_size": (8, dict(help="inference batch size", resumable=True, minimum=1)),
    "score_threshold": (0.05, dict(help="detections scoring below this do not count (boxcount, pre-annotations)")),
    "nproc": (1, dict(help="processes per node under torchrun (one per GPU; gloo on CPU)", resumable=True,
                      minimum=1)),
    "nnodes": (1, dict(help="machines (multi-node torchrun; README: Scaling out): node 0 runs this command, the "
                            "others start the workers it prints", resumable=True, minimum=1)),
    "rdzv_endpoint": (None, dict(help="host:port of node 0's rendezvous, for nnodes > 1", resumable=True,
                                 logged=False)),
    "register": (True, dict(help="register the final model", resumable=True)),
    "max_restarts": (0, dict(help="elastic restarts: a failed worker restarts and the cycle resumes from its "
                                  "checkpoint", resumable=True, minimum=0)),
    "resume_run_id": (None, dict(help="continue an interrupted (killed, SIGTERM-stopped) run from its last "
                                      "checkpoint, with the run's logged parameters (README: Resume)",
                                 logged=False)),
    "fraction": (0.7, dict(help="seeded fraction of the training split to pretrain on")),
    "protocol": ("batches", dict(help="`batches` (the study's: one ranking cut into batches) or `pool` (re-score "
                                      "the unlabeled pool every cycle)", choices=("batches", "pool"))),
    "cycles": (13, dict(help="active-learning cycles", minimum=1)),
    "per_cycle": (1000, dict(help="images unveiled per cycle", minimum=1)),
    "reset": (True, dict(help="re-initialise the detector to its starting weights every cycle "
                              "(false: warm-start from the previous cycle)")),
    "batches": (14, dict(help="batches the ranking is cut into", minimum=1)),
    "batch_images": (5000, dict(help="images per batch of the ranking", minimum=1)),
    "model_uri": (f"models:/{PRETRAINED_MODEL}@{CHAMPION}",
                  dict(help="registered model to rank with (models:/NAME@ALIAS or models:/NAME/VERSION)")),
    "auto_samplers": ("random,entropy,boxcount",
                      dict(help="sampler `auto` (protocol pool): the samplers a bandit (EXP3, after Hsu & Lin's "
                                "'Active learning by learning') chooses among each cycle, by the mAP50 gain each "
                                "brought (README: Forecast, stopping rule and sampler auto)")),
    "target_map50": (0.0, dict(help="forecast the labeled images (and boxes) needed to reach this val mAP50 "
                                    "(metric `forecast_labels_to_target`); 0: no target", minimum=0.0)),
    "stop_when_flat": (False, dict(help="end the run early once the stopping rule fires (the forecast gain per "
                                        "1000 further labels is below `stop_min_gain`); the rule is printed every "
                                        "cycle either way")),
    "stop_min_gain": (0.01, dict(help="stopping rule threshold: forecast val mAP50 gain per 1000 further labeled "
                                      "images", minimum=0.0)),
    "experiment": (DEFAULT_EXPERIMENT, dict(help="MLflow experiment to log to", option="--experiment-name",
                                            mlproject=False, env_default="MLFLOW_EXPERIMENT_NAME",
                                            shown_default="alod or $MLFLOW_EXPERIMENT_NAME", logged=False,
                                            resumable=True)),
    "work_dir": (".alod", dict(help="local folder for checkpoints and state, written before upload",
                               logged=False, resumable=True)),
}


def shared(name: str, **changes: Any) -> Any:
    """The field of a parameter declared in SHARED (`changes`: this step's own help or default)."""
    default, spec = SHARED[name]
    default = changes.pop("default", default)
    return param(default, **{**spec, **changes})


def argparse_kwargs(name: str, **changes: Any) -> dict[str, Any]:
    """`add_argument` keywords (type, default, help) of a SHARED parameter, for the benchmarks' argparse
    command lines: declared once here, as for click. `changes`: that script's own default or help."""
    default, spec = SHARED[name]
    default = changes.pop("default", default)
    kwargs: dict[str, Any] = {"default": default, "help": changes.pop("help", spec["help"]).replace("%", "%%")}
    if default is not None and not isinstance(default, bool):
        kwargs["type"] = type(default)
    return {**kwargs, **changes}


def option_name(name: str, spec: ParamInfo) -> str:
    """The command-line option of a parameter: --field-name unless declared otherwise."""
    return spec.option or "--" + name.replace("_", "-")


def step_fields(cls: type, *, user: bool | None = None) -> list[dataclasses.Field]:
    """The dataclass fields of a params class (only those a person sets with `user=True`)."""
    return [f for f in dataclasses.fields(cls) if user is None or info(f).user == user]


def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def base_type(hint: Any) -> Any:
    """int for `int`, str for `str | None`, (str,) for `tuple[str, ...]`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return (args[0],)
    if args and typing.get_origin(hint) is not tuple:
        return args[0]
    return hint


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


class StepParams:
    """What every step's params dataclass shares: which values its run logs, which a resume may change."""

    def logged_params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if info(f).logged}

    @classmethod
    def resumable(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if info(f).resumable}

    @classmethod
    def defining(cls) -> set[str]:
        """The parameters that define a run's results: a resume must not change them."""
        return {f.name for f in dataclasses.fields(cls) if info(f).logged and not info(f).resumable}

    def subset_for(self, cls: type, **overrides: Any):
        """`cls`'s params built from this object's fields of the same name (plus `overrides`):
        how `main` hands its settings to each step."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return cls(**{**values, **overrides})


# --------------------------------------------------------------------------- the steps' parameters


@dataclass
class BuildSettings:
    """The recipe of the shipped weights (`alod build-weights` options, same defaults;
    `alod.starting_weights.build_starting_weights` follows it)."""

    arch: str = "tiny"
    images: int = 2000  # source training images
    val: int = 300  # source val and target val images (each) for the reported quality
    epochs: int = 10
    batch_size: int = 4
    lr: float = 0.16  # for a total batch of 16 (0.04 at batch 4)
    data_seed: int = 1000  # its target val split stays apart from the demo and benchmark data (small seeds)
    seed: int = 0
    workers: int = 0
    threads: int = 0  # torch threads (0: torch's default)


ORACLES = ("simulated", "files")


@dataclass
class PretrainParams(StepParams):
    """`alod pretrain` / `mlflow run . -e pretrain`."""

    data: str | None = shared("data")
    arch: str = shared("arch")
    fraction: float = shared("fraction")
    epochs: int = shared("epochs", help="training epochs; 0 registers the starting weights as they are (no "
                                        "training: the model that ranks is then what zero labels give, as a "
                                        "COCO model ranking BDD100K)")
    batch_size: int = shared("batch_size")
    roi_samples: int = shared("roi_samples")
    freeze_batchnorm: bool = shared("freeze_batchnorm")
    lr: float = shared("lr")
    seed: int = shared("seed")
    workers: int = shared("workers")
    eval_batch_size: int = shared("eval_batch_size")
    eval_every: int = param(1, "evaluate on val every N epochs", minimum=1)
    weights: str | None = shared("weights", help="starting weights: " + SHARED["weights"][1]["help"])
    register: bool = shared("register", help="register the model as a version of alod-pretrained and point "
                                              "`champion` at it")
    nproc: int = shared("nproc")
    nnodes: int = shared("nnodes")
    rdzv_endpoint: str | None = shared("rdzv_endpoint")
    max_restarts: int = shared("max_restarts", help="elastic restarts: a failed worker restarts and training "
                                                    "resumes from the last epoch's checkpoint")
    experiment: str = shared("experiment")
    work_dir: str = shared("work_dir")
    resume_run_id: str | None = shared("resume_run_id")


@dataclass
class RankParams(StepParams):
    """`alod rank` / `mlflow run . -e rank`."""

    data: str | None = shared("data")
    model_uri: str = shared("model_uri")
    sampler: str = param("boxcount", "how to score pool images (`alod samplers`); higher = label first")
    batches: int = shared("batches")
    batch_images: int = shared("batch_images")
    score_threshold: float = shared("score_threshold")
    seed: int = shared("seed")
    eval_batch_size: int = shared("eval_batch_size")
    workers: int = shared("workers")
    # the ranking does not depend on how the pool is sharded: not logged, so any nproc reuses a run
    nproc: int = shared("nproc", help="processes per node under torchrun; each scores a shard of the pool (one "
                                      "per GPU)", logged=False)
    nnodes: int = shared("nnodes", logged=False)
    rdzv_endpoint: str | None = shared("rdzv_endpoint")
    experiment: str = shared("experiment")
    work_dir: str = shared("work_dir")
    # Set by the launcher so torchrun workers never query the registry themselves:
    checkpoint_file: str | None = None
    model_tags: dict | None = None


@dataclass
class CycleParams(StepParams):
    """`alod cycle` / `mlflow run . -e cycle`."""

    data: str | None = shared("data")
    ranking: str | None = param(None, "a rank run id or a ranking.parquet path; not needed for protocol=pool")
    sampler: str | None = param(None, "scoring for protocol=pool (`alod samplers`); `auto`: a bandit chooses "
                                      "among `auto_samplers` every cycle",
                                shown_default="the ranking's sampler, else boxcount")
    protocol: str = shared("protocol")
    cycles: int = shared("cycles")
    per_cycle: int = shared("per_cycle")
    budget_boxes: int = param(0, "count the budget in boxes: each cycle labels images in selection order (random "
                                 "order in cycle 1) until this many ground-truth boxes, at most `per_cycle` "
                                 "images; the first image is always taken. Crowded driving images cost more to "
                                 "label. Simulated oracle only (the cost of an image is unknown before people "
                                 "label it); 0: count in images", minimum=0)
    epochs: int = shared("epochs")
    min_iterations: int = shared("min_iterations")
    arch: str = shared("arch")
    batch_size: int = shared("batch_size")
    roi_samples: int = shared("roi_samples")
    freeze_batchnorm: bool = shared("freeze_batchnorm")
    lr: float = shared("lr")
    seed: int = shared("seed")
    reset: bool = shared("reset")
    weights: str | None = shared("weights", help="weights every cycle starts from (reset) or cycle 1 does: "
                                                 + SHARED["weights"][1]["help"])
    nproc: int = shared("nproc")
    nnodes: int = shared("nnodes")
    rdzv_endpoint: str | None = shared("rdzv_endpoint")
    max_restarts: int = shared("max_restarts")
    workers: int = shared("workers")
    eval_batch_size: int = shared("eval_batch_size")
    score_threshold: float = shared("score_threshold")
    oracle: str = param("simulated", "`simulated`: unveil the ground truth; `files`: export each batch for "
                                     "annotators and wait for `alod import-labels` (README: People as the oracle)",
                        choices=ORACLES)
    preannotation_threshold: float = param(0.5, "files oracle: predictions scoring at least this become "
                                                "pre-annotations")
    annotation_url_prefix: str = param("", "files oracle: URL prefix of the (URL-encoded) image names in Label "
                                           "Studio tasks, where the labeling page loads them from: e.g. "
                                           "https://host/bdd100k/images/100k/train/, or with Label Studio's "
                                           "local files serving and the BDD100K layout "
                                           "`/data/local-files/?d=images/100k/train/` (README: Label Studio). "
                                           "Empty: bare names, with a warning", resumable=True)
    auto_samplers: str = shared("auto_samplers")
    target_map50: float = shared("target_map50")
    stop_when_flat: bool = shared("stop_when_flat")
    stop_min_gain: float = shared("stop_min_gain")
    register: bool = shared("register", help="register the final model as a version of alod-detector")
    experiment: str = shared("experiment")
    resume_run_id: str | None = shared("resume_run_id")
    work_dir: str = shared("work_dir")
    # Filled in by the launcher for the workers:
    run_id: str | None = None
    ranking_file: str | None = None
    state_file: str | None = None
    labels_file: str | None = None
    auto_state_file: str | None = None  # sampler=auto: the bandit's recorded choices (state/auto.json)
    # The model that ranked the pool (a local copy of its checkpoint, and its models:/ URI): cycle 1's
    # pre-annotations (files oracle) and, under `batches`, the detections drawn on the `picked` sheets.
    ranking_checkpoint: str | None = None
    ranking_model: str | None = None
    extra_tags: dict = field(default_factory=dict)


@dataclass
class MainParams(StepParams):
    """`alod run` / `mlflow run . -e main`: every field a step also has goes to that step."""

    data: str | None = shared("data", help="BDD100K-layout root, for every step")
    samplers: tuple[str, ...] = param(("random", "boxcount"), "comma-separated; one rank + cycle run per sampler "
                                                              "x seed; `auto` (protocol pool) lets a bandit choose "
                                                              "among `auto_samplers` each cycle (its rank step is "
                                                              "random's, reused)")
    seeds: tuple[int, ...] = param((0,), "comma-separated; one pretrain per seed, one rank + cycle run per "
                                         "sampler x seed")
    arch: str = shared("arch")
    fraction: float = shared("fraction")
    pretrain_epochs: int = param(50, "pretrain's epochs; 0: the starting weights are registered as they are "
                                     "and rank the pool (as a COCO model would rank BDD100K)", minimum=0)
    epochs: int = shared("epochs", help="each cycle's training epochs")
    min_iterations: int = shared("min_iterations")
    batch_size: int = shared("batch_size")
    roi_samples: int = shared("roi_samples")
    freeze_batchnorm: bool = shared("freeze_batchnorm")
    lr: float = shared("lr")
    protocol: str = shared("protocol")
    cycles: int = shared("cycles")
    per_cycle: int = shared("per_cycle")
    batches: int = shared("batches")
    batch_images: int = shared("batch_images")
    reset: bool = shared("reset")
    weights: str | None = shared("weights", help="weights pretrain and every cycle start from: "
                                                 + SHARED["weights"][1]["help"])
    nproc: int = shared("nproc")
    jobs: int = param(1, "rank and cycle runs of different samplers and seeds side by side, in this many "
                         "processes on this machine, the torch threads split among them (one CPU training "
                         "process leaves cores idle: the demo ran 1.3x faster with 2 jobs on 2 cores); 1: one "
                         "after another. Not with nproc > 1",
                      resumable=True, minimum=1)
    workers: int = shared("workers")
    auto_samplers: str = shared("auto_samplers")
    target_map50: float = shared("target_map50")
    stop_when_flat: bool = shared("stop_when_flat")
    stop_min_gain: float = shared("stop_min_gain")
    experiment: str = shared("experiment")
    work_dir: str = shared("work_dir")


@dataclass
class ImportLabelsParams(StepParams):
    """`alod import-labels` / `mlflow run . -e import_labels`."""

    run_id: str = param("", "the cycle run waiting for labels (oracle=files)", argument=True)
    labels: str = param("", "labels as the tools export them: Label Studio JSON, JSON-MIN or COCO (the "
                            "downloaded zip or its result.json), CVAT for images 1.1 or COCO 1.0 (the zip, or its "
                            "annotations.xml); or BDD100K / Scalabel "
                            "JSON, a folder of per-image files, COCO JSON. The format is read from the content",
                        argument=True, mlproject_type="path")
    replace: bool = param(False, "overwrite images imported earlier with different labels (otherwise: refused, "
                                 "nothing merged)")
    work_dir: str = shared("work_dir", help="where the run keeps its local state")
