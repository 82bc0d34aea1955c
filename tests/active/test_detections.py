import numpy as np
import pytest
import torch

from alod.active.detections import DetailedRoIHeads, detailed_heads, predict_detailed
from alod.active.samplers import distinct_detections, mutual_information_of
from alod.data.dataset import DetectionDataset
from alod.engine.infer import predict
from alod.models import build_detector


def _images(frames, root):
    ds = DetectionDataset(frames, root, train=False)
    return ds, [ds[i][0] for i in range(len(ds))]


def test_plain_outputs_identical_to_torchvision(synthetic_pool, tiny_model):
    frames, root = synthetic_pool
    ds, images = _images(frames[:3], root)
    original = tiny_model.roi_heads
    keys = list(tiny_model.state_dict())
    with torch.inference_mode():
        reference = tiny_model(images)
    with torch.inference_mode(), detailed_heads(tiny_model, detection_features=True) as m:
        assert isinstance(m.roi_heads, DetailedRoIHeads)
        assert list(m.state_dict()) == keys  # same parameters, same names
        detailed = m(images)
    assert tiny_model.roi_heads is original  # restored
    for ref, det in zip(reference, detailed):
        assert len(ref["boxes"]) > 0
        for k in ("boxes", "labels", "scores"):
            assert torch.equal(ref[k], det[k]), k
    # The same through the Frame-yielding functions.
    plain = list(predict(tiny_model, ds, batch_size=2))
    rich = list(predict_detailed(tiny_model, ds, batch_size=2, detection_features=True))
    for a, b in zip(plain, rich):
        assert a.name == b.name
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_probs_rows_proposals_and_features(synthetic_pool, tiny_model):
    frames, root = synthetic_pool
    ds, _ = _images(frames[:2], root)
    num_classes = tiny_model.roi_heads.box_predictor.cls_score.out_features
    for f in predict_detailed(tiny_model, ds, detection_features=True):
        n = len(f)
        assert f.probs.shape == (n, num_classes)  # C+1 columns, background first
        np.testing.assert_allclose(f.probs.sum(1), 1.0, atol=1e-5)
        # each detection's score is its own class's entry of its softmax row
        np.testing.assert_allclose(f.probs[np.arange(n), f.labels], f.scores, rtol=1e-6)
        assert f.proposal.shape == (n,) and f.proposal.min() >= 0
        assert f.proposal.max() < tiny_model.rpn._post_nms_top_n["testing"]
        assert f.features.shape == (n, 256) and f.image_feature.shape == (256,)
        for p in np.unique(f.proposal):  # one feature vector per proposal
            rows = f.features[f.proposal == p]
            assert np.array_equal(rows, np.broadcast_to(rows[0], rows.shape))


def _two_class_model():
    """Every proposal says 'class 1 or 2, 45 % each', with an unchanged box:
    torchvision then emits two detections per proposal (one per class)."""
    torch.manual_seed(0)
    model = build_detector("tiny", num_classes=4, box_detections_per_img=1000).eval()
    pred = model.roi_heads.box_predictor
    with torch.no_grad():
        pred.cls_score.weight.zero_()
        pred.cls_score.bias.copy_(torch.log(torch.tensor([0.05, 0.45, 0.45, 0.05])))
        pred.bbox_pred.weight.zero_()
        pred.bbox_pred.bias.zero_()
    return model


def test_detections_from_one_proposal_are_deduplicated(synthetic_pool):
    frames, root = synthetic_pool
    ds, images = _images(frames[:1], root)
    model = _two_class_model()
    with torch.inference_mode():
        reference = model(images)[0]
    frame = next(predict_detailed(model, ds))
    np.testing.assert_array_equal(frame.scores, reference["scores"].numpy())
    np.testing.assert_array_equal(frame.labels, reference["labels"].numpy())
    counts = np.bincount(frame.proposal)
    assert counts.max() == 2  # two detections (class 1 and 2) share a proposal
    keep = distinct_detections(frame)
    assert len(keep) == len(np.unique(frame.proposal)) < len(frame)
    assert len(np.unique(frame.proposal[keep])) == len(keep)
    # kept = the highest-scoring detection of each proposal
    for j in keep:
        same = frame.proposal == frame.proposal[j]
        assert frame.scores[j] == frame.scores[same].max()


def test_dropout_passes_and_flip_tta(synthetic_pool, tiny_model):
    frames, root = synthetic_pool
    ds, _ = _images(frames[:2], root)
    a = list(predict_detailed(tiny_model, ds, stochastic_passes=4, tta=("hflip",), seed=3, keep_passes=True))
    b = list(predict_detailed(tiny_model, ds, stochastic_passes=4, seed=3, batch_size=1))
    for f, g in zip(a, b):
        mc = f.extra["mc_probs"]
        assert mc.shape == (4, len(f), f.probs.shape[1])
        np.testing.assert_allclose(mc.sum(-1), 1.0, atol=1e-5)
        assert not np.allclose(mc[0], mc[1])  # passes differ
        mi = f.extra["mc_mutual_information"]
        np.testing.assert_allclose(mi, mutual_information_of(mc), atol=1e-5)
        assert "mc_probs" not in g.extra and g.extra["mc_mutual_information"].shape == (len(g),)
        assert (mi > 0).all()
        flip = f.extra["tta"]["hflip"]
        assert set(flip) == {"boxes", "labels", "scores", "probs", "proposal"}
        assert flip["probs"].shape == (len(flip["scores"]), f.probs.shape[1])
        assert (flip["boxes"][:, 0] >= 0).all() and (flip["boxes"][:, 2] <= f.width).all()
        assert (flip["boxes"][:, 2] >= flip["boxes"][:, 0]).all()
    with pytest.raises(ValueError, match="augmentation"):
        next(predict_detailed(tiny_model, ds, tta=("rotate",)))


def test_dropout_passes_are_seeded(synthetic_pool, tiny_model):
    frames, root = synthetic_pool
    ds, _ = _images(frames[:2], root)
    runs = [list(predict_detailed(tiny_model, ds, stochastic_passes=3, seed=s)) for s in (5, 5, 6)]
    for f, g, h in zip(*runs):
        np.testing.assert_array_equal(f.extra["mc_mutual_information"], g.extra["mc_mutual_information"])
        assert not np.array_equal(f.extra["mc_mutual_information"], h.extra["mc_mutual_information"])
