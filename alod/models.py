"""Detector builders by plain name, and checkpoint save/load.

`build_detector("fasterrcnn_resnet50_fpn")` is the study's model; `tiny` is a
small Faster R-CNN for CPU tests and demos. Nothing is downloaded: torchvision
builders always get weights=None, weights_backbone=None; pretrained weights
come only from a local file.

A checkpoint is one dict (as in torchvision's detection references):
``{"model", "optimizer", "lr_scheduler", "scaler", "epoch", "config"}`` where
``config`` holds ``arch``, ``num_classes`` and ``overrides`` so that
`detector_from_checkpoint` can rebuild the model without other input. Files are
read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import detection as tvdet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import (
    FasterRCNN,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from alod.data.categories import NUM_CLASSES
from alod.fileio import disk_full

DEFAULT_NUM_CLASSES = NUM_CLASSES + 1  # det_20 classes + background
PREDICTOR_KEY = "roi_heads.box_predictor.cls_score.weight"


class CheckpointError(ValueError):
    """A weights or checkpoint file that cannot be used as asked."""


# --------------------------------------------------------------------------- builders

# BDD100K images are 1280x720: keep them at native size instead of torchvision's
# 800/1333 default, which would upscale every image by 11 %.
_FULL_RES = {"min_size": 720, "max_size": 1280}


def _tv(builder: Callable[..., nn.Module], defaults: Mapping[str, Any]) -> Callable[..., nn.Module]:
    def build(num_classes: int, **overrides: Any) -> nn.Module:
        return builder(weights=None, weights_backbone=None, num_classes=num_classes, **{**defaults, **overrides})

    return build


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def build_tiny(
    num_classes: int,
    *,
    channels: tuple[int, ...] = (16, 32, 64, 128),
    fpn_channels: int = 64,
    representation_size: int = 256,
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128),
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    **kwargs: Any,
) -> FasterRCNN:
    """A CPU-sized Faster R-CNN: 4-stage plain CNN (strides 4..32) + FPN.

    Trained from scratch (BatchNorm, not frozen). Anchors start at 8 px because
    BDD-like scenes at 320x180 are full of tiny lights and signs.
    """
    c2, c3, c4, c5 = channels
    body = nn.Sequential(
        OrderedDict(
            stem=_conv(3, c2 // 2, 2),
            c2=nn.Sequential(_conv(c2 // 2, c2, 2), _conv(c2, c2, 1)),
            c3=nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3, 1)),
            c4=nn.Sequential(_conv(c3, c4, 2), _conv(c4, c4, 1)),
            c5=nn.Sequential(_conv(c4, c5, 2), _conv(c5, c5, 1)),
        )
    )
    backbone = BackboneWithFPN(
        body,
        return_layers={"c2": "0", "c3": "1", "c4": "2", "c5": "3"},
        in_channels_list=list(channels),
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    # One anchor size per FPN level ("0".."3" + "pool").
    anchors = AnchorGenerator(
        sizes=tuple((int(s),) for s in anchor_sizes),
        aspect_ratios=(tuple(float(a) for a in aspect_ratios),) * len(anchor_sizes),
    )
    roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    predictor = FastRCNNPredictor(representation_size, num_classes)
    # Fewer proposals and samples than the R50 defaults: the ROI head dominates
    # CPU time, and a few objects per small image need no 2000 proposals.
    settings: dict[str, Any] = {
        "min_size": 180,
        "max_size": 320,
        "rpn_pre_nms_top_n_train": 1000,
        "rpn_post_nms_top_n_train": 500,
        "rpn_pre_nms_top_n_test": 500,
        "rpn_post_nms_top_n_test": 300,
        "rpn_batch_size_per_image": 128,
        "box_batch_size_per_image": 128,
    }
    settings.update(kwargs)
    return FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=predictor,
        **settings,
    )


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "fasterrcnn_resnet50_fpn": _tv(tvdet.fasterrcnn_resnet50_fpn, _FULL_RES),
    "fasterrcnn_resnet50_fpn_v2": _tv(tvdet.fasterrcnn_resnet50_fpn_v2, _FULL_RES),
    "fasterrcnn_mobilenet_v3_large_fpn": _tv(tvdet.fasterrcnn_mobilenet_v3_large_fpn, _FULL_RES),
    # The 320 variant is the low-resolution model by design: keep torchvision's sizes.
    "fasterrcnn_mobilenet_v3_large_320_fpn": _tv(tvdet.fasterrcnn_mobilenet_v3_large_320_fpn, {}),
    "tiny": build_tiny,
}


def build_detector(
    name: str,
    num_classes: int = DEFAULT_NUM_CLASSES,
    weights: str | Path | None = None,
    *,
    finetune: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build a detector by name; `weights` is a local file (state dict, torchvision
    .pth or our checkpoint) loaded strictly. With `finetune` (training from the
    weights), a box predictor for another number of classes, e.g. COCO's 91, is
    left out and trained anew. `overrides` go to the builder (FasterRCNN keyword
    arguments such as min_size, box_score_thresh)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[name](num_classes, **overrides)
    # Remembered so checkpoints can rebuild the same model.
    model.alod_config = {"arch": name, "num_classes": int(num_classes), "overrides": checkpoint_safe(dict(overrides))}
    if weights is not None:
        load_weights(model, weights, finetune=finetune)
    return model


# --------------------------------------------------------------------------- weights


def training_overrides(roi_samples: int = 0) -> dict[str, int]:
    """`build_detector` overrides for how a Faster R-CNN trains: `roi_samples` proposals sampled per
    image for the box head (0: the architecture's own). Inference does not change."""
    if roi_samples < 0:
        raise ValueError(f"roi_samples must be >= 0, got {roi_samples}")
    return {"box_batch_size_per_image": int(roi_samples)} if roi_samples else {}


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights/checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read {path} as a torch file: empty file (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"so unpickling it could run code (torch.load weights_only=True). Only tensors, "
            f"numbers, strings, lists and dicts are accepted. {_unpickling_reason(e)}"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch.load raises KeyError, EOFError, RuntimeError... on junk
        reason = " ".join(str(e).split())[:300] or "no detail"
        raise CheckpointError(
            f"cannot read {path} as a torch file (truncated or not a torch file): {type(e).__name__}: {reason}"
        ) from None


def _unpickling_reason(e: Exception) -> str:
    """The line of torch's weights_only error that names the refused object.

    The rest of torch's message suggests weights_only=False, which is exactly
    what must not be done with a file of unknown origin."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1]
    else:  # torch's own paragraphs around the reason are advice, not the reason
        boiler = ("Weights only load failed", "Check the documentation", "Please file an issue")
        reason = " ".join(p for p in text.split("\n\n") if p.strip() and not p.strip().startswith(boiler))
    for end in ("Please use", "Check the documentation"):
        reason = reason.split(end, 1)[0]
    reason = " ".join(reason.split())[:300]
    return f"Refused: {reason or type(e).__name__}"


def _state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]  # our checkpoint dict
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} is neither a state dict nor a checkpoint dict with a 'model' key")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from a DDP wrapper
    return state


def _list(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# torchvision trains from pretrained detection weights with the backbone's BatchNorm
# frozen and only its last 3 stages trainable (trainable_backbone_layers=3).
PRETRAINED_TRAINABLE_STAGES = 3


def adopt_pretrained_layout(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Make `model` take `state` the way torchvision's pretrained detectors are built.

    Their backbones use FrozenBatchNorm2d (no `num_batches_tracked`) where a model
    built from scratch has trainable BatchNorm2d: those modules become frozen, and
    the backbone stages torchvision keeps fixed stop training (resnet: conv1 and
    layer1; mobilenet: all but the last 3 stages). Returns the swapped module names
    (none for a state saved from a from-scratch model, which loads as it is)."""
    model = unwrap(model)
    swapped = []
    for name, module in list(model.named_modules()):
        if (isinstance(module, nn.BatchNorm2d) and f"{name}.running_mean" in state
                and f"{name}.num_batches_tracked" not in state):
            frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, frozen)
            swapped.append(name)
    body = getattr(getattr(model, "backbone", None), "body", None)
    if swapped and body is not None:
        for block in _fixed_backbone_blocks(body):
            block.requires_grad_(False)
    return swapped


def _fixed_backbone_blocks(body: nn.Module) -> list[nn.Module]:
    children = dict(body.named_children())
    if "layer4" in children:  # resnet: layer4, layer3, layer2 train
        trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:PRETRAINED_TRAINABLE_STAGES]
        return [m for n, m in children.items() if n not in trainable]
    blocks = list(children.values())  # mobilenet features, as torchvision's _mobilenet_extractor counts stages
    if not any(getattr(b, "_is_cn", False) for b in blocks):
        return []  # not a torchvision backbone (e.g. tiny): which stages train is the caller's choice
    stages = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
    return blocks[:stages[len(stages) - PRETRAINED_TRAINABLE_STAGES]]


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights", *,
                      finetune: bool = False) -> None:
    """load_state_dict(strict) with errors a person can act on. With `finetune`, a
    box predictor for another number of classes is left out (the model keeps its
    own, freshly initialised) and said so."""
    model = unwrap(model)
    adopt_pretrained_layout(model, state)
    own = model.state_dict()
    if PREDICTOR_KEY in state and PREDICTOR_KEY in own and state[PREDICTOR_KEY].shape[0] != own[PREDICTOR_KEY].shape[0]:
        if not finetune:
            raise CheckpointError(
                f"{source} has a box predictor for {state[PREDICTOR_KEY].shape[0]} classes (background included), "
                f"but the model was built with num_classes={own[PREDICTOR_KEY].shape[0]}; "
                f"build it with num_classes={state[PREDICTOR_KEY].shape[0]} or use matching weights"
            )
        print(f"{source}: box predictor for {state[PREDICTOR_KEY].shape[0]} classes left out; "
              f"training a new one for {own[PREDICTOR_KEY].shape[0]} (background included)", flush=True)
        predictor = PREDICTOR_KEY.rsplit(".", 2)[0] + "."
        state = {**{k: v for k, v in state.items() if not k.startswith(predictor)},
                 **{k: v for k, v in own.items() if k.startswith(predictor)}}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match the model ({type(model).__name__}):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_list(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_list(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_list(mismatched)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def load_weights(model: nn.Module, weights: str | Path, *, finetune: bool = False) -> nn.Module:
    """Load a local state dict / torchvision .pth / checkpoint dict into `model`."""
    obj = _torch_load(weights)
    load_state_strict(model, _state_dict_of(obj, str(weights)), source=str(weights), finetune=finetune)
    return model


def freeze_backbone_stages(model: nn.Module, stages: int) -> list[str]:
    """Stop training the first `stages` blocks of the backbone body (a fine-tuning choice).

    Their parameters stop receiving gradients and their BatchNorm layers keep their
    statistics (`freeze_batchnorm`), so a few target images cannot shift what the
    starting weights learned there. Returns the frozen block names."""
    body = getattr(getattr(unwrap(model), "backbone", None), "body", None)
    if stages <= 0:
        return []
    if body is None:
        raise ValueError(f"{type(unwrap(model)).__name__} has no backbone.body whose stages could be frozen")
    blocks = list(body.named_children())
    if stages > len(blocks):
        raise ValueError(f"cannot freeze {stages} backbone stages: the body has {len(blocks)} "
                         f"({', '.join(n for n, _ in blocks)})")
    frozen = []
    for name, block in blocks[:stages]:
        freeze_batchnorm(block)
        block.requires_grad_(False)
        frozen.append(name)
    return frozen


def freeze_batchnorm(model: nn.Module) -> list[str]:
    """Hold every BatchNorm2d of `model` at the statistics and scale it has now (torchvision fine-tunes
    pretrained backbones so, with FrozenBatchNorm2d): in training mode too it normalises with its running
    statistics and updates neither them nor its affine parameters; the convolutions keep training.

    Fine-tuning on a few dozen images in batches of 4, trainable BatchNorm re-estimates its running
    statistics from those images and drifts away from what the starting weights were trained with. The
    layers stay BatchNorm2d, so checkpoints, the registry and serving see the usual state dict.
    Idempotent; returns the names of the held layers."""
    held = []
    for name, module in unwrap(model).named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.requires_grad_(False)
            if not getattr(module, "_alod_held", False):
                module.register_forward_pre_hook(_use_running_statistics)
                module._alod_held = True
            module.eval()
            held.append(name)
    return held


def _use_running_statistics(module: nn.Module, args) -> None:
    module.training = False  # model.train() set it again: a held BatchNorm normalises as in eval


# --------------------------------------------------------------------------- checkpoints


def checkpoint_safe(obj: Any) -> Any:
    """Config values as types weights_only loading accepts (Paths become str)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): checkpoint_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(checkpoint_safe(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint config value {obj!r} ({type(obj).__name__}) is not a plain type")


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one checkpoint dict atomically (temp file + os.replace).

    The model's own build config (arch, num_classes, overrides) is merged under
    `config`, so a checkpoint always knows how to rebuild its model. `extra`
    adds keys (e.g. the mid-epoch state of a preempted run); values must be
    tensors or plain data so that `weights_only` loading accepts them."""
    path = Path(path)
    bare = unwrap(model)
    cfg = {**getattr(bare, "alod_config", {}), **checkpoint_safe(dict(config))}
    if "arch" not in cfg or "num_classes" not in cfg:
        raise ValueError("checkpoint config needs 'arch' and 'num_classes' (build the model with build_detector)")
    ckpt = {
        "model": bare.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "config": cfg,
        **dict(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half
    except (OSError, RuntimeError) as e:
        full = disk_full(e, path)  # before the temp file goes: the free space the write ran into
        if tmp.exists():
            tmp.unlink()
        if full is not None:
            raise full from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict safely (weights_only); raises CheckpointError."""
    obj = _torch_load(path, map_location)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), Mapping):
        raise CheckpointError(f"{path} is not an alod checkpoint (a dict with a 'model' state dict)")
    return obj


def detector_from_checkpoint(path_or_dict: str | Path | Mapping[str, Any], map_location: Any = "cpu") -> nn.Module:
    """Rebuild the detector a checkpoint was saved from and load its weights."""
    ckpt = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(path_or_dict, map_location)
    cfg = ckpt.get("config") or {}
    if "arch" not in cfg or "num_classes" not in cfg:
        raise CheckpointError("checkpoint config lacks 'arch'/'num_classes'; cannot rebuild the model")
    model = build_detector(cfg["arch"], num_classes=int(cfg["num_classes"]), **dict(cfg.get("overrides") or {}))
    source = str(path_or_dict) if not isinstance(path_or_dict, Mapping) else "checkpoint"
    load_state_strict(model, _state_dict_of(ckpt, source), source=source)
    return model
