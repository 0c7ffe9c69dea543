from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss, DiceFocalLoss

from monai_medspike.losses import DistributionAlignmentLoss, SegmentationAlignmentLoss
from monai_medspike.networks.nets import AlignmentOutput


def binary_case():
    logits = torch.randn(2, 1, 8, 8) * 3
    label = (torch.rand(2, 1, 8, 8) > 0.5).float()
    return logits, label


def test_one_sigmoid_on_logits_not_two():
    logits, label = binary_case()
    loss = SegmentationAlignmentLoss(lambda_align=0.0)(logits, label)
    torch.testing.assert_close(loss, DiceCELoss(sigmoid=True)(logits, label))
    double = DiceCELoss(sigmoid=True)(torch.sigmoid(logits), label)  # the public code's bug
    assert not torch.allclose(loss, double)


def test_softmax_with_class_index_labels():
    logits = torch.randn(2, 3, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8)).float()
    loss = SegmentationAlignmentLoss(seg_loss="dice_focal", activation="softmax", lambda_align=0.0)
    torch.testing.assert_close(loss(logits, label), DiceFocalLoss(softmax=True, to_onehot_y=True)(logits, label))


def test_total_is_weighted_sum_of_both_terms():
    logits, label = binary_case()
    student = [torch.randn(2, 1, 8, 8, requires_grad=True), torch.randn(2, 1, 4, 4, requires_grad=True)]
    teacher = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
    pred = AlignmentOutput(logits, student, teacher)
    loss = SegmentationAlignmentLoss(lambda_seg=0.7, lambda_align=2.5)
    total = loss(pred, label)
    seg = DiceCELoss(sigmoid=True)(logits, label)
    align = DistributionAlignmentLoss()(student, teacher)
    torch.testing.assert_close(total, 0.7 * seg + 2.5 * align)
    torch.testing.assert_close(loss.components["seg"], seg)
    torch.testing.assert_close(loss.components["align"], align.detach())


def test_custom_alignment_and_seg_loss_module():
    logits, label = binary_case()
    pred = AlignmentOutput(logits, [torch.zeros(2, 1, 4, 4)], [torch.ones(2, 1, 4, 4)])
    alignment = DistributionAlignmentLoss(stages=(0,), kl_weight=0.0)
    loss = SegmentationAlignmentLoss(seg_loss=DiceCELoss(sigmoid=True, lambda_ce=0.0), alignment=alignment)
    expected = DiceCELoss(sigmoid=True, lambda_ce=0.0)(logits, label) + alignment(pred[1], pred[2])
    torch.testing.assert_close(loss(pred, label), expected)


def test_plain_tensor_while_aligning_is_an_error_but_fine_for_validation():
    logits, label = binary_case()
    loss = SegmentationAlignmentLoss(lambda_align=1.0)
    with pytest.raises(ValueError, match="DistributionAlignmentNet"):
        loss(logits, label)
    with torch.no_grad():  # e.g. a validation loss on the student's eval output
        torch.testing.assert_close(loss(logits, label), DiceCELoss(sigmoid=True)(logits, label))
    assert "align" not in loss.components


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lambda_seg": -1.0}, "lambda_seg"),
        ({"lambda_align": -0.5}, "lambda_align"),
        ({"seg_loss": "bce"}, "seg_loss"),
        ({"activation": "tanh"}, "activation"),
        ({"seg_loss": DiceCELoss(sigmoid=True), "seg_loss_kwargs": {"lambda_ce": 1.0}}, "seg_loss_kwargs"),
        ({"activation": "softmax", "alignment": DistributionAlignmentLoss()}, "alignment.activation"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentationAlignmentLoss(**kwargs)


def test_side_term_is_the_mean_seg_loss_of_the_side_outputs_against_the_label_resized_by_nearest_neighbour():
    logits, label = binary_case()
    side = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
    pred = AlignmentOutput(logits, side, [])
    loss = SegmentationAlignmentLoss(lambda_align=0.0, lambda_side=0.4)
    small = label.reshape(2, 1, 4, 2, 4, 2)[:, :, :, 1, :, 1]  # nearest-exact, 2x smaller: pixel 2i + 1 of 2i, 2i + 1
    dice_ce = DiceCELoss(sigmoid=True)
    expected_side = (dice_ce(side[0], label) + dice_ce(side[1], small)) / 2
    torch.testing.assert_close(loss(pred, label), dice_ce(logits, label) + 0.4 * expected_side)
    torch.testing.assert_close(loss.components["side"], expected_side)
    # off by default; a plain tensor while training the side heads is an error, fine without gradients
    SegmentationAlignmentLoss(lambda_align=0.0)(pred, label)
    with pytest.raises(ValueError, match="lambda_side=0.4 but pred is a plain tensor"):
        loss(logits, label)
    with torch.no_grad():
        loss(logits, label)
    with pytest.raises(ValueError, match="lambda_side"):
        SegmentationAlignmentLoss(lambda_side=-1.0)
