"""Segmentation loss on logits plus the distribution-alignment term."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss
from torch.nn.modules.loss import _Loss

from monai_medspike.losses.alignment import DistributionAlignmentLoss, _check_weight
from monai_medspike.networks.nets.alignment import AlignmentOutput

__all__ = ["SegmentationAlignmentLoss"]

_SEG_LOSSES = {"dice_ce": DiceCELoss, "dice_focal": DiceFocalLoss}


class SegmentationAlignmentLoss(_Loss):
    """``lambda_seg * Seg(logits, label) + lambda_align * Align(student side outputs, teacher side outputs)
    + lambda_side * mean_i Seg(side output i, label resized to it)``.

    ``Seg`` is MONAI's ``DiceCELoss`` or ``DiceFocalLoss`` applied to LOGITS with one sigmoid
    (``activation="sigmoid"``, label ``(B, K, H, W)`` in {0, 1}) or one softmax (``activation="softmax"``, label
    ``(B, 1, H, W)`` of class indices, one-hot encoded inside). ``Align`` is a :class:`DistributionAlignmentLoss`.

    ``pred`` is either the :class:`~monai_medspike.networks.nets.AlignmentOutput` that
    :class:`~monai_medspike.networks.nets.DistributionAlignmentNet` returns in training mode (both terms), or a
    logits tensor (the segmentation term only, e.g. a validation loss in eval mode, or training the teacher with
    ``lambda_align=0``). A tensor while gradients are enabled and ``lambda_align > 0`` is an error: the alignment
    would silently never happen.

    The last term is the deep supervision of the side heads (MONAI's ``DeepSupervisionLoss``, labels resized by
    nearest neighbour, stages weighted equally); the two-phase training uses it to train the teacher's side heads,
    which the student is aligned to.

    After each call, ``components`` holds the detached values of the terms (``{"seg": ..., "align": ...}``) for
    logging.

    Args:
        seg_loss: ``"dice_ce"``, ``"dice_focal"`` or a loss module taking ``(logits, label)``.
        activation: ``"sigmoid"`` or ``"softmax"``; used for the segmentation and the alignment terms.
        lambda_seg: weight of the segmentation term, >= 0.
        lambda_align: weight of the alignment term, >= 0.
        lambda_side: weight of the side heads' segmentation term, >= 0 (0: off).
        alignment: the alignment loss; default ``DistributionAlignmentLoss(activation=activation)``.
        seg_loss_kwargs: extra keywords of the MONAI loss (e.g. ``{"lambda_dice": 1.0, "lambda_ce": 1.0}``).

    Raises:
        ValueError: invalid arguments, or a tensor ``pred`` while aligning (see above).
    """

    def __init__(
        self,
        seg_loss: str | _Loss = "dice_ce",
        activation: str = "sigmoid",
        lambda_seg: float = 1.0,
        lambda_align: float = 1.0,
        alignment: DistributionAlignmentLoss | None = None,
        seg_loss_kwargs: Mapping[str, Any] | None = None,
        lambda_side: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}.")
        self.lambda_seg = _check_weight(lambda_seg, "lambda_seg")
        self.lambda_align = _check_weight(lambda_align, "lambda_align")
        self.lambda_side = _check_weight(lambda_side, "lambda_side")
        if isinstance(seg_loss, str):
            if seg_loss not in _SEG_LOSSES:
                raise ValueError(f"seg_loss must be one of {sorted(_SEG_LOSSES)} or a loss module, got {seg_loss!r}.")
            defaults = {"sigmoid": True} if activation == "sigmoid" else {"softmax": True, "to_onehot_y": True}
            seg_loss = _SEG_LOSSES[seg_loss](**{**defaults, **dict(seg_loss_kwargs or {})})
        elif seg_loss_kwargs:
            raise ValueError("seg_loss_kwargs applies to a named seg_loss only; configure the given module instead.")
        self.seg_loss = seg_loss
        self.side_loss = DeepSupervisionLoss(seg_loss, weight_mode="same")
        self.alignment = alignment if alignment is not None else DistributionAlignmentLoss(activation=activation)
        if self.alignment.activation != activation:
            raise ValueError(
                f"alignment.activation={self.alignment.activation!r} differs from activation={activation!r}."
            )
        self.components: dict[str, torch.Tensor] = {}

    def forward(self, pred: AlignmentOutput | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pred: :class:`AlignmentOutput` or logits ``(B, K, H, W)``.
            target: label ``(B, K, H, W)`` (sigmoid) or ``(B, 1, H, W)`` class indices (softmax).
        """
        side = None
        if isinstance(pred, torch.Tensor):
            if self.lambda_align > 0 and torch.is_grad_enabled():
                raise ValueError(
                    f"lambda_align={self.lambda_align} but pred is a plain tensor without side outputs: train a "
                    "DistributionAlignmentNet(student, teacher), or set lambda_align=0 (e.g. to train the teacher)."
                )
            if self.lambda_side > 0 and torch.is_grad_enabled():
                raise ValueError(
                    f"lambda_side={self.lambda_side} but pred is a plain tensor without side outputs: train a "
                    "DistributionAlignmentNet(network) (teacher=None), or set lambda_side=0."
                )
            logits, align = pred, None
        else:
            logits = pred[0]
            align = self.alignment(pred[1], pred[2]) if self.lambda_align > 0 else None
            if self.lambda_side > 0:
                side = self.side_loss(list(pred[1]), target) / len(pred[1])
        seg = self.seg_loss(logits, target)
        loss = self.lambda_seg * seg
        self.components = {"seg": seg.detach()}
        if align is not None:
            loss = loss + self.lambda_align * align
            self.components["align"] = align.detach()
        if side is not None:
            loss = loss + self.lambda_side * side
            self.components["side"] = side.detach()
        return loss
