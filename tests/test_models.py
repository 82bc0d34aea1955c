"""Detector builders, weight files and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from alod.models import (
    ARCHITECTURES,
    CheckpointError,
    build_detector,
    detector_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def _images(n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 180, 320, generator=g) for _ in range(n)]


def _targets(n: int = 2) -> list[dict]:
    return [{"boxes": torch.tensor([[10.0, 20, 60, 80], [150, 40, 200, 100]]), "labels": torch.tensor([1, 3])}] * n


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_builds_without_downloads(name: str) -> None:
    model = build_detector(name, num_classes=11)
    assert model.roi_heads.box_predictor.cls_score.out_features == 11
    assert model.alod_config == {"arch": name, "num_classes": 11, "overrides": {}}
    if name.startswith("fasterrcnn_resnet50"):
        # BDD's 1280x720 is kept as is, not upscaled to 800/1333
        assert model.transform.min_size == (720,) and model.transform.max_size == 1280


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_detector("yolo")


def test_overrides_reach_the_detector() -> None:
    model = build_detector("tiny", box_score_thresh=0.3, min_size=360, max_size=640)
    assert model.roi_heads.score_thresh == 0.3
    assert model.transform.min_size == (360,)
    assert model.alod_config["overrides"] == {"box_score_thresh": 0.3, "min_size": 360, "max_size": 640}


def test_training_overrides_set_the_box_heads_samples_and_zero_keeps_the_architectures() -> None:
    from alod.models import training_overrides

    assert training_overrides(0) == {}
    model = build_detector("tiny", **training_overrides(32))
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 32
    assert build_detector("tiny", **training_overrides(0)).roi_heads.fg_bg_sampler.batch_size_per_image == 128
    with pytest.raises(ValueError, match="roi_samples"):
        training_overrides(-1)


def test_tiny_forward_train_and_eval() -> None:
    torch.manual_seed(0)
    model = build_detector("tiny")
    assert model.transform.min_size == (180,) and model.transform.max_size == 320
    model.train()
    losses = model(_images(), _targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.inference_mode():
        out = model(_images())
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}


def _outputs(model: torch.nn.Module) -> list[dict]:
    model.eval()
    with torch.inference_mode():
        return model(_images(1))


def test_weights_from_state_dict_and_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_detector("tiny", box_score_thresh=0.0)
    plain = tmp_path / "state.pth"
    torch.save(src.state_dict(), plain)
    ddp = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, ddp)
    ckpt = save_checkpoint(tmp_path / "ckpt.pth", model=src, epoch=3, config={"note": Path("/x")})
    expected = _outputs(src)[0]
    for f in (plain, ddp, ckpt):
        torch.manual_seed(2)  # different init: equal outputs prove the load
        got = _outputs(build_detector("tiny", weights=f, box_score_thresh=0.0))[0]
        assert torch.equal(got["boxes"], expected["boxes"]) and torch.equal(got["scores"], expected["scores"])


def test_weights_num_classes_mismatch(tmp_path: Path) -> None:
    f = tmp_path / "w.pth"
    torch.save(build_detector("tiny", num_classes=4).state_dict(), f)
    with pytest.raises(CheckpointError, match=r"4 classes.*num_classes=11"):
        build_detector("tiny", weights=f)


def test_weights_missing_and_unexpected_keys_listed(tmp_path: Path) -> None:
    state = build_detector("tiny").state_dict()
    state.pop("rpn.head.conv.0.0.weight")
    state["extra.weight"] = torch.zeros(1)
    f = tmp_path / "w.pth"
    torch.save(state, f)
    with pytest.raises(CheckpointError) as err:
        build_detector("tiny", weights=f)
    msg = str(err.value)
    assert "missing keys (1): rpn.head.conv.0.0.weight" in msg and "unexpected keys (1): extra.weight" in msg


def test_weights_wrong_architecture(tmp_path: Path) -> None:
    f = tmp_path / "w.pth"
    torch.save(build_detector("tiny").state_dict(), f)
    with pytest.raises(CheckpointError, match="missing keys"):
        build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", weights=f)


def test_weights_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_detector("tiny", weights=tmp_path / "nope.pth")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_detector("tiny", box_score_thresh=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    sum(model(_images(), _targets()).values()).backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    path = save_checkpoint(tmp_path / "sub" / "c.pth", model=model, optimizer=opt, scheduler=sched, epoch=5,
                           config={"lr": 0.1, "root": tmp_path})
    assert sorted(os.listdir(path.parent)) == ["c.pth"]  # no temp file left behind
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "config"}
    assert ckpt["epoch"] == 5 and ckpt["scaler"] is None
    assert ckpt["config"]["arch"] == "tiny" and ckpt["config"]["num_classes"] == 11
    assert ckpt["config"]["root"] == str(tmp_path)
    assert ckpt["optimizer"]["state"]  # momentum buffers kept
    rebuilt = detector_from_checkpoint(path)
    assert rebuilt.roi_heads.score_thresh == 0.0  # overrides come back too
    a, b = _outputs(model)[0], _outputs(rebuilt)[0]
    assert torch.equal(a["boxes"], b["boxes"])
    assert isinstance(detector_from_checkpoint(ckpt), torch.nn.Module)


def test_checkpoint_unwraps_wrapper(tmp_path: Path) -> None:
    class Wrapper(torch.nn.Module):  # stands in for DDP: same .module attribute
        def __init__(self, module: torch.nn.Module):
            super().__init__()
            self.module = module

    path = save_checkpoint(tmp_path / "c.pth", model=Wrapper(build_detector("tiny")), epoch=0, config={})
    assert not any(k.startswith("module.") for k in load_checkpoint(path)["model"])


# Crafted pickles (os.system, exec, payloads inside the state dict, legacy pickles) are refused
# by load_checkpoint, build_detector(weights=) and detector_from_checkpoint: the checkpoint cases
# of the hostile input corpus, tests/data/test_bad_inputs.py.


def test_not_a_checkpoint(tmp_path: Path) -> None:
    f = tmp_path / "state.pth"
    torch.save({"a": torch.zeros(1)}, f)
    with pytest.raises(CheckpointError, match="not an alod checkpoint"):
        load_checkpoint(f)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_checkpoint(junk)


def _torchvision_pretrained_layout(arch: str, num_classes: int) -> torch.nn.Module:
    """A detector laid out as torchvision builds it for pretrained weights (COCO's
    fasterrcnn_*_coco files): FrozenBatchNorm2d in the backbone, early stages fixed."""
    from torchvision.models import mobilenet_v3_large, resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if arch == "fasterrcnn_resnet50_fpn":
        backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
        return FasterRCNN(backbone, num_classes=num_classes)
    backbone = _mobilenet_extractor(mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d), True, 3)
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)  # torchvision's for it
    return FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors)


@pytest.mark.parametrize("arch", ["fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_coco_pretrained_weights_fine_tune_as_torchvision_does(arch: str, tmp_path: Path) -> None:
    """The study's start: COCO detection weights (91 classes, frozen BatchNorm) fine-tuned
    on BDD100K's 10. The predictor is trained anew; the rest loads and trains as in torchvision."""
    torch.manual_seed(0)
    coco = _torchvision_pretrained_layout(arch, num_classes=91)
    path = tmp_path / "coco.pth"
    torch.save(coco.state_dict(), path)

    with pytest.raises(CheckpointError, match="91 classes"):  # for inference, a 91-class file is wrong
        build_detector(arch, weights=path)
    model = build_detector(arch, weights=path, finetune=True)
    assert model.roi_heads.box_predictor.cls_score.out_features == 11
    theirs, ours = coco.state_dict(), model.state_dict()
    assert set(theirs) == set(ours)
    for key, value in theirs.items():
        if not key.startswith("roi_heads.box_predictor."):
            assert torch.equal(value, ours[key]), key
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in coco.named_parameters() if not p.requires_grad} != set()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())

    # what alod saves after fine-tuning reloads anywhere, in the same layout
    ckpt = save_checkpoint(tmp_path / "ft.pt", model=model, epoch=0, config={})
    again = detector_from_checkpoint(ckpt)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_from_scratch_weights_keep_trainable_batchnorm(tmp_path: Path) -> None:
    """A state saved from a model trained from scratch (BatchNorm2d) is not frozen on load."""
    source = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn")
    torch.save(source.state_dict(), tmp_path / "scratch.pth")
    model = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", weights=tmp_path / "scratch.pth", finetune=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_fine_tuning_trains_only_what_torchvision_trains(tmp_path: Path) -> None:
    """One epoch from COCO-layout weights: fixed stages and frozen BatchNorm stats stay put,
    the rest (new predictor included) moves."""
    from alod.data.dataset import DetectionDataset
    from alod.data.frames import Frame
    from alod.engine.train import TrainConfig, fit
    from PIL import Image

    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    torch.save(_torchvision_pretrained_layout("fasterrcnn_mobilenet_v3_large_fpn", 91).state_dict(),
               tmp_path / "coco.pth")
    model = build_detector(arch, weights=tmp_path / "coco.pth", finetune=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frames = []
    for i in range(2):
        Image.new("RGB", (320, 180), (90 + 60 * i, 90, 90)).save(tmp_path / f"{i}.png")
        frames.append(Frame(f"{i}.png", [[40.0, 30, 120, 110]], [3], width=320, height=180))
    config = TrainConfig(epochs=1, batch_size=2, lr=0.02, warmup_iters=0, workers=0, device="cpu")
    (stats,) = fit(model, DetectionDataset(frames, tmp_path, train=True), config, progress=False)
    assert torch.isfinite(torch.tensor(stats["loss"]))
    after = model.state_dict()
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}
    frozen_norm = {k for k in after if "backbone.body" in k and ("running_" in k or k.endswith((".weight", ".bias")))
                   and not any(k.startswith(n.rsplit(".", 1)[0] + ".") for n, p in model.named_parameters())}
    assert fixed and frozen_norm
    for key in fixed | frozen_norm:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["roi_heads.box_predictor.cls_score.weight"],
                           after["roi_heads.box_predictor.cls_score.weight"])
    assert not torch.equal(before["backbone.fpn.layer_blocks.0.0.weight"], after["backbone.fpn.layer_blocks.0.0.weight"])


def test_freezing_backbone_stages_keeps_them_fixed_and_checkpoints_reload(tmp_path: Path) -> None:
    from alod.models import freeze_backbone_stages

    torch.manual_seed(0)
    model = build_detector("tiny")
    keys = list(model.state_dict())
    assert freeze_backbone_stages(model, 2) == ["stem", "c2"]
    assert list(model.state_dict()) == keys  # the usual layout: checkpoints and the registry see no change
    body = model.backbone.body
    before = {k: v.clone() for k, v in body.state_dict().items()}
    assert not any(p.requires_grad for p in body.stem.parameters()) and not any(
        p.requires_grad for p in body.c2.parameters())
    assert all(p.requires_grad for p in body.c3.parameters())
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(model(_images(), _targets()).values()).backward()
    opt.step()
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("stem.", "c2.")))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("c3."))
    save_checkpoint(tmp_path / "frozen.pt", model=model, epoch=1, config={})
    reloaded = detector_from_checkpoint(tmp_path / "frozen.pt")  # strict: the frozen layout is recognised
    assert torch.equal(reloaded.backbone.body.stem[0].weight, body.stem[0].weight)
    # only what was frozen stays frozen (a warm-started cycle trains the rest)
    assert all(p.requires_grad for p in reloaded.backbone.body.c3.parameters())
    assert freeze_backbone_stages(build_detector("tiny"), 0) == []
    with pytest.raises(ValueError, match="cannot freeze 9 backbone stages"):
        freeze_backbone_stages(build_detector("tiny"), 9)


def test_freeze_batchnorm_keeps_statistics_and_trains_the_convolutions(tmp_path) -> None:
    from alod.models import freeze_batchnorm

    torch.manual_seed(0)
    model = build_detector("tiny")
    keys = list(model.state_dict())
    held = {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
            or (k.rsplit(".", 1)[0] in dict(model.named_modules())
                and isinstance(model.get_submodule(k.rsplit(".", 1)[0]), torch.nn.BatchNorm2d))}
    names = freeze_batchnorm(model)
    assert names and freeze_batchnorm(model) == names  # again: nothing changes (one hook per layer)
    assert list(model.state_dict()) == keys
    model.train()
    bn = model.get_submodule(names[0])
    x = torch.randn(2, bn.num_features, 5, 5)
    assert torch.equal(bn(x), torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                                                             bn.bias, training=False, eps=bn.eps))
    conv = model.backbone.body.c3[0][0].weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(model(_images(), _targets()).values()).backward()
    opt.step()
    after = model.state_dict()
    # a training step on a few images leaves the starting weights' statistics and scales as they were
    assert all(torch.equal(held[k], after[k]) for k in held) and any(k.endswith(".weight") for k in held)
    assert not torch.equal(conv, model.backbone.body.c3[0][0].weight)
    save_checkpoint(tmp_path / "frozen_bn.pt", model=model, epoch=1, config={})
    reloaded = detector_from_checkpoint(tmp_path / "frozen_bn.pt")
    assert torch.equal(reloaded.backbone.body.c3[0][0].weight, model.backbone.body.c3[0][0].weight)
