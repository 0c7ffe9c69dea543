from __future__ import annotations

import math

import pytest
import torch

from monai_medspike.losses import DistributionAlignmentLoss

LOG3 = math.log(3.0)
# p_s = sigmoid(0) = 0.5, p_a = sigmoid(log 3) = 0.75
BERNOULLI_KL = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = 0.5 * log(4 / 3)
SQUARED = (0.5 - 0.75) ** 2


def sides(*shapes, value=0.0):
    return [torch.full(s, value) for s in shapes]


def test_zero_for_identical_inputs():
    z = [torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8)]
    assert DistributionAlignmentLoss()(z, [t.clone() for t in z]).item() == pytest.approx(0.0, abs=1e-7)
    zc = [torch.randn(2, 3, 8, 8)]
    assert DistributionAlignmentLoss(activation="softmax")(zc, [zc[0].clone()]).item() == pytest.approx(0, abs=1e-7)


@pytest.mark.parametrize("activation, channels", [("sigmoid", 1), ("sigmoid", 3), ("softmax", 3)])
def test_positive_for_different_inputs(activation, channels):
    loss = DistributionAlignmentLoss(activation=activation)
    for _ in range(5):
        zs, za = [torch.randn(2, channels, 8, 8)], [torch.randn(2, channels, 8, 8)]
        assert loss(zs, za).item() > 0


def test_matches_hand_computation_sigmoid():
    loss = DistributionAlignmentLoss(kl_weight=2.0, l2_weight=3.0)
    value = loss(sides((2, 1, 4, 4)), sides((2, 1, 4, 4), value=LOG3))
    assert value.item() == pytest.approx(2.0 * BERNOULLI_KL + 3.0 * SQUARED, rel=1e-5)


def test_matches_hand_computation_softmax():
    # two classes with logits (0, 0) and (0, log 3): probabilities (0.5, 0.5) and (0.25, 0.75)
    zs = [torch.zeros(1, 2, 2, 2)]
    za = [torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), LOG3)], dim=1)]
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    value = DistributionAlignmentLoss(activation="softmax")(zs, za)
    assert value.item() == pytest.approx(kl + SQUARED, rel=1e-5)


def test_published_form_matches_hand_computation_and_can_be_negative():
    value = DistributionAlignmentLoss(kl="published")(sides((1, 1, 2, 2)), sides((1, 1, 2, 2), value=LOG3))
    expected = 0.5 * math.log(0.5 / 0.75) + SQUARED
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert expected < 0


def test_stages_are_chosen_explicitly_and_averaged():
    shapes = [(1, 1, 8, 8), (1, 1, 4, 4), (1, 1, 2, 2)]
    student = sides(*shapes)
    teacher = [torch.zeros(shapes[0]), torch.full(shapes[1], LOG3), torch.full(shapes[2], -LOG3)]
    per_stage = BERNOULLI_KL + SQUARED  # stages 1 and 2 are symmetric; stage 0 is 0
    assert DistributionAlignmentLoss()(student, teacher).item() == pytest.approx(2 * per_stage / 3, rel=1e-5)
    assert DistributionAlignmentLoss(stages=(1,))(student, teacher).item() == pytest.approx(per_stage, rel=1e-5)
    assert DistributionAlignmentLoss(stages=(0,))(student, teacher).item() == pytest.approx(0.0, abs=1e-7)
    weighted = DistributionAlignmentLoss(stages=(0, 2), stage_weights=(5.0, 2.0))(student, teacher)
    assert weighted.item() == pytest.approx(2 * per_stage, rel=1e-5)


def test_reductions():
    student = [torch.zeros(3, 1, 4, 4)]
    teacher = [torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), LOG3), torch.zeros(1, 4, 4)])]
    none = DistributionAlignmentLoss(reduction="none")(student, teacher)
    assert none.shape == (3,)
    assert none.tolist() == pytest.approx([0.0, BERNOULLI_KL + SQUARED, 0.0], abs=1e-6)
    assert DistributionAlignmentLoss(reduction="sum")(student, teacher).item() == pytest.approx(none.sum().item())
    assert DistributionAlignmentLoss()(student, teacher).item() == pytest.approx(none.mean().item())


def test_only_the_student_receives_gradient():
    zs = [torch.randn(2, 1, 4, 4, requires_grad=True)]
    za = [torch.randn(2, 1, 4, 4, requires_grad=True)]
    DistributionAlignmentLoss()(zs, za).backward()
    assert zs[0].grad is not None and zs[0].grad.abs().sum() > 0
    assert za[0].grad is None


def test_shape_mismatch_names_the_stage():
    with pytest.raises(ValueError, match=r"stage 1: student side output \(2, 1, 4, 4\) and teacher side output"):
        DistributionAlignmentLoss()(sides((2, 1, 8, 8), (2, 1, 4, 4)), sides((2, 1, 8, 8), (2, 1, 4, 5)))


@pytest.mark.parametrize(
    "student, teacher, kwargs, match",
    [
        (sides((1, 1, 2, 2)), sides((1, 1, 2, 2)) * 2, {}, "1 side outputs but teacher has 2"),
        (sides((1, 1, 2, 2)), sides((1, 1, 2, 2)), {"stages": (0, 3)}, r"stages=\(0, 3\) but only 1 side outputs"),
        (torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), {}, "sequences of per-stage tensors"),
        (sides((1, 1, 2, 2)), sides((1, 1, 2, 2)), {"activation": "softmax"}, "needs >= 2 channels"),
    ],
)
def test_call_errors(student, teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistributionAlignmentLoss(**kwargs)(student, teacher)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"l2_weight": -0.1}, "l2_weight"),
        ({"stages": (0, -1)}, "stages"),
        ({"stages": (1, 1)}, "stages"),
        ({"stages": (0, 1), "stage_weights": (1.0,)}, "stage_weights"),
        ({"stages": (0,), "stage_weights": (-1.0,)}, "stage_weights"),
        ({"activation": "relu"}, "activation"),
        ({"kl": "js"}, "kl"),
        ({"kl": "published", "activation": "softmax"}, "published"),
        ({"reduction": "max"}, "reduction"),
        ({"eps": 0.0}, "eps"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        DistributionAlignmentLoss(**kwargs)
