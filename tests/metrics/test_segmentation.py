"""The paper's per-image scores against hand counts, the empty-image convention and per-class scoring."""

from __future__ import annotations

import pytest
import torch

from monai_medspike.metrics import PerImageScore


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    # image 0: TP 2, FP 1, FN 1, TN 12 (4 x 4); image 1: empty ground truth, empty prediction
    pred = torch.zeros(2, 1, 4, 4)
    label = torch.zeros(2, 1, 4, 4)
    pred[0, 0, 0, :3] = 1
    label[0, 0, 0, 1:4] = 1
    return pred, label


@pytest.mark.parametrize(
    "score, first",
    [("iou", 2 / 4), ("dice", 4 / 6), ("accuracy", 14 / 16), ("specificity", 12 / 13), ("sensitivity", 2 / 3)],
)
def test_scores_match_hand_counts_and_empty_images_follow_the_convention(score, first):
    pred, label = masks()
    metric = PerImageScore(score)
    metric(pred, label)
    per_image = metric.get_buffer().flatten().tolist()
    assert per_image == pytest.approx([first, 1.0])
    assert float(metric.aggregate()) == pytest.approx((first + 1.0) / 2)
    original = PerImageScore(score, empty_score=0.0)
    original(pred, label)
    # accuracy and specificity are never 0 / 0 here (the empty image has 16 true negatives)
    expected = 1.0 if score in ("accuracy", "specificity") else 0.0
    assert original.get_buffer().flatten().tolist() == pytest.approx([first, expected])


def test_multiclass_scores_each_foreground_class_and_skips_background():
    label = torch.zeros(1, 3, 2, 2)
    label[0, 0] = 1
    label[0, 0, 0, 0], label[0, 1, 0, 0] = 0, 1  # class 1 at one pixel
    label[0, 0, 1, 1], label[0, 2, 1, 1] = 0, 1  # class 2 at one pixel
    pred = label.clone()
    pred[0, 2, 1, 1], pred[0, 0, 1, 1] = 0, 1  # class 2 missed
    metric = PerImageScore("dice")
    metric(pred, label)
    assert metric.get_buffer().tolist() == [[1.0, 0.0]]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="score must be one of"):
        PerImageScore("f1")
    with pytest.raises(ValueError, match="empty_score"):
        PerImageScore(empty_score=0.5)
    with pytest.raises(ValueError, match="same shape"):
        PerImageScore()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
