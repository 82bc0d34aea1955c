"""Class probabilities, proposal indices and box-head features from Faster R-CNN.

torchvision's `RoIHeads.postprocess_detections` keeps only the winning class
score of each box. `DetailedRoIHeads` is a drop-in replacement for a model's
`roi_heads` that runs the very same post-processing (score threshold, removal
of tiny boxes, per-class NMS, top-k), carrying along for every kept detection:

* ``probs``: the full softmax row over the C+1 classes (column 0 = background),
* ``proposal``: the index of the RPN proposal the detection came from (one
  proposal yields one detection per class over the threshold, so several
  detections can share a proposal; samplers de-duplicate them, see
  `alod.active.samplers.distinct_detections`),
* ``features`` (optional): the box-head feature vector of that proposal,

plus per image an ``image_feature`` (box-head features of *all* proposals,
averaged with foreground probability as weight: defined even when nothing is
detected) and, when asked, ``mc_mutual_information``: the BALD mutual
information of each detection's class distributions over several passes of
dropout on its box-head features (MC dropout; the box head itself has no
dropout, so this perturbs the classifier input), optionally with the raw
passes ``mc_probs``.

`detailed_heads(model)` swaps the heads in for a block and restores the
original afterwards; the submodules are shared, so the state dict keys and the
plain outputs (boxes, labels, scores) are exactly torchvision's.
`predict_detailed` is `alod.engine.infer.predict` with these extras in each
`Frame`, optionally with a horizontal-flip test-time augmentation pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops
from tqdm.auto import tqdm

from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.engine.infer import inference_loader
from alod.active.samplers import mutual_information_of
from alod.engine.distributed import resolve_device
from alod.models import unwrap
from alod.engine import progress_bars

TTA_AUGMENTATIONS = ("hflip",)


class DetailedRoIHeads(RoIHeads):
    """`RoIHeads` whose inference outputs carry probs, proposal, features.

    Built from an existing `RoIHeads`; shares its box_roi_pool, box_head and
    box_predictor (same parameters, same state-dict keys) and its thresholds.
    Training mode is the parent's forward, unchanged.
    """

    def __init__(
        self,
        base: RoIHeads,
        *,
        detection_features: bool = False,
        stochastic_passes: int = 0,
        dropout: float = 0.5,
        keep_passes: bool = False,
        seed: int = 0,
    ):
        if base.has_mask() or base.has_keypoint():
            raise ValueError("DetailedRoIHeads supports Faster R-CNN heads only (no mask/keypoint branch)")
        if stochastic_passes < 0:
            raise ValueError(f"stochastic_passes must be >= 0, got {stochastic_passes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(
            base.box_roi_pool,
            base.box_head,
            base.box_predictor,
            fg_iou_thresh=base.proposal_matcher.high_threshold,
            bg_iou_thresh=base.proposal_matcher.low_threshold,
            batch_size_per_image=base.fg_bg_sampler.batch_size_per_image,
            positive_fraction=base.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=base.box_coder.weights,
            score_thresh=base.score_thresh,
            nms_thresh=base.nms_thresh,
            detections_per_img=base.detections_per_img,
        )
        # The very same helper objects, so nothing can drift from the original.
        self.box_coder = base.box_coder
        self.proposal_matcher = base.proposal_matcher
        self.fg_bg_sampler = base.fg_bg_sampler
        self.train(base.training)
        self.detection_features = bool(detection_features)
        self.stochastic_passes = int(stochastic_passes)
        self.dropout = float(dropout)
        self.keep_passes = bool(keep_passes)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def forward(self, features, proposals, image_shapes, targets=None):  # type: ignore[override]
        if self.training:
            return super().forward(features, proposals, image_shapes, targets)
        box_features = self.box_roi_pool(features, proposals, image_shapes)
        box_features = self.box_head(box_features)
        class_logits, box_regression = self.box_predictor(box_features)
        result = self.postprocess_detailed(
            class_logits, box_regression, proposals, image_shapes, box_features.flatten(start_dim=1)
        )
        return result, {}

    def postprocess_detailed(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        box_features: torch.Tensor,
    ) -> list[dict[str, torch.Tensor]]:
        """`RoIHeads.postprocess_detections`, step for step, plus a flat index
        (proposal * (C) + class - 1) carried through every filter."""
        device = class_logits.device
        num_classes = class_logits.shape[-1]

        boxes_per_image = [boxes_in_image.shape[0] for boxes_in_image in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)
        pred_scores = F.softmax(class_logits, -1)

        pred_boxes_list = pred_boxes.split(boxes_per_image, 0)
        pred_scores_list = pred_scores.split(boxes_per_image, 0)
        features_list = box_features.split(boxes_per_image, 0)

        results = []
        for boxes, scores, feats, image_shape in zip(pred_boxes_list, pred_scores_list, features_list, image_shapes):
            probs = scores  # (P, C+1) softmax rows, background included
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)

            labels = torch.arange(num_classes, device=device)
            labels = labels.view(1, -1).expand_as(scores)

            boxes = boxes[:, 1:]
            scores = scores[:, 1:]
            labels = labels[:, 1:]

            boxes = boxes.reshape(-1, 4)
            scores = scores.reshape(-1)
            labels = labels.reshape(-1)
            flat = torch.arange(scores.shape[0], device=device)

            inds = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels, flat = boxes[inds], scores[inds], labels[inds], flat[inds]

            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels, flat = boxes[keep], scores[keep], labels[keep], flat[keep]

            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            boxes, scores, labels, flat = boxes[keep], scores[keep], labels[keep], flat[keep]

            proposal = torch.div(flat, num_classes - 1, rounding_mode="floor")
            out = {
                "boxes": boxes,
                "labels": labels,
                "scores": scores,
                "probs": probs[proposal],
                "proposal": proposal,
                "image_feature": _pooled(feats, probs),
            }
            if self.detection_features:
                out["features"] = feats[proposal]
            if self.stochastic_passes:
                passes = self._mc_probs(feats[proposal])
                out["mc_mutual_information"] = mutual_information(passes)
                if self.keep_passes:
                    out["mc_probs"] = passes
            results.append(out)
        return results

    def _mc_probs(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, N, C+1) softmax rows with dropout on the box-head features."""
        gen = self._generator(feats.device)
        keep = 1.0 - self.dropout
        passes = []
        for _ in range(self.stochastic_passes):
            mask = torch.rand(feats.shape, generator=gen, device=feats.device) < keep
            logits, _ = self.box_predictor(feats * mask / keep)
            passes.append(F.softmax(logits, -1))
        return torch.stack(passes)


def mutual_information(passes: torch.Tensor) -> torch.Tensor:
    """BALD per detection from (T, N, C+1) softmax passes: the samplers' one definition
    (samplers.mutual_information_of), on this device's tensors."""
    mi = mutual_information_of(passes.detach().double().cpu().numpy())
    return torch.as_tensor(mi, dtype=torch.float32, device=passes.device)


def _pooled(feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Box-head features of all proposals, weighted by foreground probability."""
    if feats.shape[0] == 0:
        return feats.new_zeros(feats.shape[1:])
    weight = 1.0 - probs[:, 0]
    total = weight.sum()
    if float(total) <= 1e-6:
        weight, total = torch.ones_like(weight), weight.new_tensor(float(len(weight)))
    return (weight[:, None] * feats).sum(0) / total


@contextmanager
def detailed_heads(model: nn.Module, **options: Any) -> Iterator[nn.Module]:
    """Within the block, `model.roi_heads` is a `DetailedRoIHeads` sharing the
    original's modules; the original heads are restored on exit."""
    bare = unwrap(model)
    original = bare.roi_heads
    if isinstance(original, DetailedRoIHeads):
        raise RuntimeError("detailed_heads() is already active on this model")  # noqa: TRY004
    bare.roi_heads = DetailedRoIHeads(original, **options)
    try:
        yield bare
    finally:
        bare.roi_heads = original


def _hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def predict_detailed(
    model: nn.Module,
    dataset: DetectionDataset,
    *,
    device: str | torch.device | None = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    stochastic_passes: int = 0,
    dropout: float = 0.5,
    keep_passes: bool = False,
    tta: Sequence[str] = (),
    detection_features: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> Iterator[Frame]:
    """Yield one Frame per dataset image, in order, with boxes/labels/scores
    identical to `alod.engine.infer.predict` plus `probs`, `proposal`,
    `image_feature` and, when asked, `features` (per detection; D floats each,
    so off by default), ``extra["mc_mutual_information"]`` (N,) from
    `stochastic_passes` dropout passes (plus the passes themselves,
    ``extra["mc_probs"]`` (T, N, C+1), with `keep_passes`: T times the size of
    `probs`, too much to keep for a whole pool), and ``extra["tta"][aug]`` (a dict of
    boxes in original coordinates, labels, scores, probs, proposal) for each
    test-time augmentation in `tta` (only "hflip": the detector's transform
    resizes every input to its min_size, so a scale augmentation would be undone).
    """
    unknown = [a for a in tta if a not in TTA_AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown test-time augmentation(s) {unknown}; supported: {TTA_AUGMENTATIONS}")
    device = resolve_device(device)
    loader = inference_loader(dataset, device=device, batch_size=batch_size, workers=workers,
                              caller="predict_detailed")
    model = unwrap(model).to(device).eval()
    nb = device.type == "cuda"
    options = {"detection_features": detection_features, "stochastic_passes": stochastic_passes,
               "dropout": dropout, "keep_passes": keep_passes}
    with tqdm(total=len(dataset), desc="predict", unit="img", disable=not progress_bars(progress),
              mininterval=2.0) as bar:
        for step, (images, targets) in enumerate(loader):
            batch = [im.to(device, non_blocking=nb) for im in images]
            # dropout masks: reproducible for (seed, batch), fresh for every batch
            batch_seed = (int(seed) * 1_000_003 + step) % (2**63)
            with torch.inference_mode(), detailed_heads(model, seed=batch_seed, **options):
                outputs = model(batch)
            augmented: dict[str, list[dict[str, torch.Tensor]]] = {}
            if "hflip" in tta:
                with torch.inference_mode(), detailed_heads(model):
                    augmented["hflip"] = model([im.flip(-1) for im in batch])
            for i, (image, target, out) in enumerate(zip(images, targets, outputs)):
                width = int(image.shape[-1])
                extra: dict[str, Any] = {}
                if "mc_mutual_information" in out:
                    extra["mc_mutual_information"] = _np(out["mc_mutual_information"])
                if "mc_probs" in out:
                    extra["mc_probs"] = _np(out["mc_probs"])
                if augmented:
                    extra["tta"] = {}
                    for aug, outs in augmented.items():
                        o = outs[i]
                        extra["tta"][aug] = {
                            "boxes": _np(_hflip_boxes(o["boxes"], width)),
                            "labels": o["labels"].cpu().numpy(),
                            "scores": _np(o["scores"]),
                            "probs": _np(o["probs"]),
                            "proposal": o["proposal"].cpu().numpy(),
                        }
                yield Frame(
                    name=dataset.frames[target["image_id"]].name,
                    boxes=_np(out["boxes"]),
                    labels=out["labels"].cpu().numpy(),
                    scores=_np(out["scores"]),
                    width=width,
                    height=int(image.shape[-2]),
                    probs=_np(out["probs"]),
                    proposal=out["proposal"].cpu().numpy(),
                    features=_np(out["features"]) if "features" in out else None,
                    image_feature=_np(out["image_feature"]),
                    extra=extra,
                )
            bar.update(len(images))
