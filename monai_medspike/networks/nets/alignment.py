"""A spiking student paired with its frozen ANN teacher, for training with the distribution-alignment loss."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from monai_medspike.networks.nets.medspikeformer import MedSpikeFormer

__all__ = ["AlignmentOutput", "DistributionAlignmentNet"]


class AlignmentOutput(NamedTuple):
    """Training-mode output of :class:`DistributionAlignmentNet`.

    Attributes:
        logits: the student's segmentation logits ``(B, out_channels, H, W)``.
        student_side: the student's per-stage side mask logits, ``[(B, out_channels, H / 2**i, W / 2**i)]``.
        teacher_side: the frozen teacher's side mask logits, same shapes, without gradient (empty without a teacher).
    """

    logits: torch.Tensor
    student_side: list[torch.Tensor]
    teacher_side: list[torch.Tensor]


class DistributionAlignmentNet(nn.Module):
    """Pairs a spiking :class:`MedSpikeFormer` student with a frozen teacher (its ANN twin).

    In training mode ``forward`` returns an :class:`AlignmentOutput` (student logits, student and teacher side
    outputs) that :class:`~monai_medspike.losses.SegmentationAlignmentLoss` consumes, so MONAI's
    ``SupervisedTrainer`` trains with the alignment loss unchanged (it calls ``loss_function(pred, label)``). In
    eval mode it returns the student's logits only, like the student itself, so evaluators, sliding-window
    inference and ``verify_net_in_out`` work as usual. Save and export ``self.student``, not this wrapper.

    The teacher's parameters are frozen (``requires_grad=False``) and it always stays in eval mode (batch-norm
    statistics are not updated), whatever ``train()`` is called with.

    Without a teacher (``teacher=None``) it returns the network's own side outputs in training mode, for the deep
    supervision of its side heads (``SegmentationAlignmentLoss(lambda_side=...)``): this is how the ANN teacher is
    trained, so that the side masks the student is later aligned to are mask predictions rather than the outputs of
    heads nothing trained.

    Args:
        student: the network being trained.
        teacher: a trained network with the same ``out_channels`` and number of stages, usually
            ``MedSpikeFormer(..., spiking=False)`` loaded from its checkpoint; None: no teacher (see above).

    Raises:
        ValueError: the teacher's outputs cannot be aligned with the student's.
    """

    def __init__(self, student: MedSpikeFormer, teacher: MedSpikeFormer | None = None) -> None:
        super().__init__()
        for name, net in (("student", student), ("teacher", teacher if teacher is not None else student)):
            if not hasattr(net, "forward_with_side_outputs"):
                raise ValueError(f"{name} must provide forward_with_side_outputs (a MedSpikeFormer), got {type(net)}.")
        shape = lambda net: (net.out_channels, len(net.embed_dims))  # noqa: E731
        if teacher is not None and shape(student) != shape(teacher):
            raise ValueError(
                "teacher cannot be aligned with student: out_channels / number of stages differ "
                f"(student {student.out_channels}/{len(student.embed_dims)}, "
                f"teacher {teacher.out_channels}/{len(teacher.embed_dims)})."
            )
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()

    def train(self, mode: bool = True) -> DistributionAlignmentNet:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> AlignmentOutput | torch.Tensor:
        """``(B, C, H, W)`` -> :class:`AlignmentOutput` in training mode, student logits in eval mode."""
        if not self.training:
            return self.student(x)
        logits, student_side = self.student.forward_with_side_outputs(x)
        if self.teacher is None:
            return AlignmentOutput(logits, student_side, [])
        with torch.no_grad():
            _, teacher_side = self.teacher.forward_with_side_outputs(x)
        return AlignmentOutput(logits, student_side, teacher_side)
