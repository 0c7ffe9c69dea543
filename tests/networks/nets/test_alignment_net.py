from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from monai_medspike.losses import SegmentationAlignmentLoss
from monai_medspike.networks.nets import AlignmentOutput, DistributionAlignmentNet
from tests.helpers import small_net


def make_pair(**kwargs):
    return DistributionAlignmentNet(small_net(**kwargs), small_net(spiking=False, **kwargs))


def test_training_output_carries_side_outputs_and_eval_output_is_one_tensor():
    pair = make_pair(in_channels=1, out_channels=2)
    x = torch.rand(2, 1, 32, 32)
    out = pair.train()(x)
    assert isinstance(out, AlignmentOutput)
    assert out.logits.shape == (2, 2, 32, 32)
    assert [s.shape for s in out.student_side] == [t.shape for t in out.teacher_side]
    assert len(out.student_side) == 4
    assert not any(t.requires_grad for t in out.teacher_side)
    pair.eval()
    with torch.no_grad():
        y = pair(x)
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, pair.student(x))


def test_teacher_is_frozen_and_stays_in_eval_mode():
    pair = make_pair()
    pair.train()
    assert pair.student.training and not pair.teacher.training
    assert not any(p.requires_grad for p in pair.teacher.parameters())
    assert all(p.requires_grad for p in pair.student.parameters())


def test_gradients_reach_every_student_parameter_and_no_teacher_parameter():
    pair = make_pair().train()
    teacher_before = {k: v.clone() for k, v in pair.teacher.state_dict().items()}
    x = torch.rand(2, 3, 32, 32)
    y = (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss = SegmentationAlignmentLoss(lambda_align=1.0)(pair(x), y)
    loss.backward()
    missing = [n for n, p in pair.student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert all(p.grad is None for p in pair.teacher.parameters())
    # the teacher's batch-norm statistics did not move either
    for k, v in pair.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_incompatible_teacher_is_rejected():
    with pytest.raises(ValueError, match="out_channels"):
        DistributionAlignmentNet(small_net(out_channels=1), small_net(out_channels=3, spiking=False))
    with pytest.raises(ValueError, match="teacher must provide forward_with_side_outputs"):
        DistributionAlignmentNet(small_net(), torch.nn.Conv2d(3, 1, 1))


def test_monai_supervised_trainer_trains_with_alignment_loss():
    pair = make_pair(in_channels=1)
    student_before = {k: v.clone() for k, v in pair.student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in pair.teacher.state_dict().items()}
    data = [{"image": torch.rand(2, 1, 32, 32), "label": (torch.rand(2, 1, 32, 32) > 0.5).float()} for _ in range(3)]
    loss = SegmentationAlignmentLoss(lambda_align=0.5)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=pair,
        optimizer=torch.optim.Adam(pair.student.parameters(), lr=1e-3),
        loss_function=loss,
        decollate=False,
    )
    trainer.run()
    assert trainer.state.iteration == 3
    assert torch.isfinite(trainer.state.output["loss"])
    assert set(loss.components) == {"seg", "align"} and loss.components["align"] > 0
    state = pair.student.state_dict()
    assert any(not torch.equal(state[k], v) for k, v in student_before.items())
    assert all(torch.equal(pair.teacher.state_dict()[k], v) for k, v in teacher_before.items())


def test_without_a_teacher_it_returns_the_networks_own_side_outputs_for_their_deep_supervision():
    net = small_net(spiking=False, in_channels=1, out_channels=1)
    wrapper = DistributionAlignmentNet(net).train()
    x = torch.rand(2, 1, 32, 32)
    out = wrapper(x)
    assert isinstance(out, AlignmentOutput) and out.teacher_side == [] and len(out.student_side) == 4
    loss = SegmentationAlignmentLoss(lambda_align=0.0, lambda_side=1.0)
    loss(out, (torch.rand(2, 1, 32, 32) > 0.5).float()).backward()
    assert all(p.grad is not None for p in net.parameters())  # side heads included
    wrapper.eval()
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x), net(x))
