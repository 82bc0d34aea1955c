"""Starting weights: what "reset the model" goes back to.

For real use that is a COCO-pretrained torchvision file given with `--weights`.
For the embedded default (`--arch tiny`) alod ships its own: the tiny detector
trained on the synthetic *source* domain (`alod.data.synthetic.DOMAINS`), which
lacks classes and conditions of the *target* pool the way COCO lacks
BDD100K's. `build_starting_weights` is the one recipe that makes the shipped
file (`alod build-weights`); its provenance (data seed, sizes, epochs, wall
time, source and target mAP50) travels inside the file and in a JSON file
beside it.

Weight choice, one rule for every step (`resolve_weights`):
  * a path: that local file (checked before anything trains);
  * nothing given: the shipped starting weights of the architecture, if it has
    any (only `tiny` does), else random init;
  * ``none`` (or ``scratch``): random init, on purpose.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from alod.models import (
    ARCHITECTURES,
    CheckpointError,
    build_detector,
    load_checkpoint,
    save_checkpoint,
)
from alod.params import BuildSettings  # declared with the other parameters

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Architecture -> the file alod ships for it.
SHIPPED = {"tiny": WEIGHTS_DIR / "tiny-source.pt"}
RANDOM_INIT = ("none", "scratch")


def shipped_weights(arch: str) -> Path | None:
    """The starting weights alod ships for `arch` (None: it ships none)."""
    path = SHIPPED.get(arch)
    return path if path is not None and path.is_file() else None


def resolve_weights(arch: str, weights: str | Path | None) -> str | None:
    """The weight file a step starts from (None: random init); see the module docstring.

    Raises CheckpointError / FileNotFoundError for a file that cannot be used with
    `arch`, before anything trains."""
    if weights is None or str(weights) == "":
        path = shipped_weights(arch)
        return str(path) if path is not None else None
    if str(weights).lower() in RANDOM_INIT:
        return None
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--weights {weights}: file not found (give a local weight file, "
                                f"or 'none' for random init)")
    if path.is_dir():
        raise CheckpointError(f"--weights {weights} is a folder, not a weight file")
    check_weights(arch, path)
    return str(path)


def weights_choice(arch: str, weights: str | Path | None) -> str:
    """`resolve_weights` as a parameter value to log and pass on: the file, or "none" for random init."""
    return resolve_weights(arch, weights) or RANDOM_INIT[0]


def model_weights(choice: str | None) -> str | None:
    """A `weights_choice` value as build_detector's `weights` (None: random init)."""
    return None if choice is None or str(choice).lower() in RANDOM_INIT else str(choice)


def check_weights(arch: str, path: str | Path) -> None:
    """Load `path` into a fresh `arch` model as training would; a clear error if it does not fit."""
    from alod.models import _state_dict_of, _torch_load, load_state_strict

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    obj = _torch_load(path)  # read once: its build config (an alod checkpoint's) and its tensors
    config = obj["config"] if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else {}
    saved_arch = config.get("arch")
    if saved_arch is not None and saved_arch != arch:
        raise CheckpointError(f"{path} holds weights of a {saved_arch!r} detector, not of {arch!r}: "
                              f"use --arch {saved_arch} or another weight file")
    saved_classes = config.get("num_classes")
    model = build_detector(arch)  # the det_20 classes + background
    own = model.roi_heads.box_predictor.cls_score.out_features
    if saved_classes is not None and int(saved_classes) != own:
        raise CheckpointError(f"{path} is an alod checkpoint for {saved_classes} classes (background included), "
                              f"but alod detects {own}: it was trained on another label set")
    load_state_strict(model, _state_dict_of(obj, str(path)), source=str(path), finetune=True)


def provenance(path: str | Path) -> dict:
    """The provenance a shipped weight file carries ({} for other files)."""
    ckpt = load_checkpoint(path)
    return dict(ckpt.get("provenance") or {})


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_starting_weights(out: str | Path, settings: BuildSettings, *, work: str | Path | None = None,
                           progress: bool = True) -> dict:
    """Synthesize the source corpus, train `arch` on it from random init, save the weights to `out`.

    Returns the provenance written into the file (and to `out` with suffix .json):
    settings, wall time, source and target val mAP50 (and per class), sha256."""
    from alod.data.dataset import DetectionDataset
    from alod.data.synthetic import DOMAINS, write_dataset
    from alod.engine.evaluate import evaluate
    from alod.engine.infer import predict_all
    from alod.engine.train import TrainConfig, fit
    from alod.data.splits import load_split

    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(out)
    scratch = Path(tempfile.mkdtemp(prefix="alod-build-weights-", dir=work))
    started = time.perf_counter()
    try:
        source, target = scratch / "source", scratch / "target"
        write_dataset(source, train=settings.images, val=settings.val, seed=settings.data_seed, domain="source",
                      workers=max(1, settings.workers))
        write_dataset(target, train=0, val=settings.val, seed=settings.data_seed, domain="target",
                      workers=max(1, settings.workers))
        synth_seconds = time.perf_counter() - started

        train = load_split(source, "train")
        torch.manual_seed(settings.seed)
        model = build_detector(settings.arch)
        config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                             seed=settings.seed, workers=settings.workers, device="cpu", clip_grad_norm=10.0)
        t0 = time.perf_counter()
        fit(model, DetectionDataset(train.frames, train.images, train=True), config,
            checkpoint_path=scratch / "training.pt", resume=False, progress=progress)
        train_seconds = time.perf_counter() - t0
        quality = {}
        for domain, root in (("source", source), ("target", target)):
            val = load_split(root, "val")  # loaded as every evaluation loads it (exact, unclipped)
            result = evaluate(val.frames, predict_all(model, val.frames, val.images, device=torch.device("cpu"),
                                                      batch_size=8, workers=settings.workers))
            quality[domain] = {"mAP50": result.mAP50, "mAP50_95": result.mAP50_95,
                               "ap50_per_class": {k: (None if v != v else v)
                                                  for k, v in result.ap50_per_class.items()}}
        record: dict[str, Any] = {
            "recipe": "alod.starting_weights.build_starting_weights",
            "command": command_line(settings),
            "settings": asdict(settings),
            "source_domain": DOMAINS["source"].description,
            "target_domain": DOMAINS["target"].description,
            "synth_seconds": round(synth_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
            "train_image_iterations": settings.images * settings.epochs,
            "source_val_mAP50": quality["source"]["mAP50"],
            "target_val_mAP50": quality["target"]["mAP50"],
            "quality": quality,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
            "built": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        # Only the weights and the record: no optimizer state (a few MB, not three times that).
        save_checkpoint(out, model=model, epoch=settings.epochs, config={"recipe": record["recipe"]},
                        extra={"provenance": record})
        record["sha256"] = file_digest(out)
        out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        return record
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def command_line(settings: BuildSettings) -> str:
    defaults = BuildSettings()
    parts = ["alod build-weights"]
    for key, value in asdict(settings).items():
        if value != getattr(defaults, key):
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)
