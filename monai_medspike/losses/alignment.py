"""Distribution-alignment loss between a spiking student's and a frozen ANN teacher's side outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["DistributionAlignmentLoss"]

_ACTIVATIONS = ("sigmoid", "softmax")
_KL_MODES = ("distribution", "published")
_REDUCTIONS = ("mean", "sum", "none")


def _check_weight(value: float, argument: str) -> float:
    value = float(value)
    if not value >= 0.0:
        raise ValueError(f"{argument} must be >= 0, got {value}.")
    return value


class DistributionAlignmentLoss(_Loss):
    """Pulls the student's per-stage mask probabilities towards the frozen teacher's (MedSpikeFormer).

    For each aligned stage ``i``, with student logits ``z_s`` and teacher logits ``z_a`` of shape
    ``(B, K, H_i, W_i)``::

        L_i = kl_weight * KL(O_s || O_a) + l2_weight * mean((O_s - O_a) ** 2)
        loss = sum_i w_i * L_i      (w_i = 1 / number of aligned stages unless ``stage_weights`` is given)

    The probabilities ``O`` and the distributions compared by KL are defined per pixel:

    - ``activation="sigmoid"`` (binary or multi-label, any ``K``): ``O = sigmoid(z)`` per channel; each pixel and
      channel is a Bernoulli distribution ``(O, 1 - O)`` and
      ``KL = O_s log(O_s / O_a) + (1 - O_s) log((1 - O_s) / (1 - O_a))``, averaged over ``B, K, H, W``.
    - ``activation="softmax"`` (multi-class, ``K >= 2``): ``O = softmax(z)`` over the ``K`` classes and
      ``KL = sum_k O_s,k log(O_s,k / O_a,k)``, averaged over ``B, H, W``.

    Both are computed from log-probabilities (``logsigmoid``/``log_softmax``), so no clamping is needed; KL is
    >= 0 and zero only when the distributions agree. ``kl="published"`` instead uses the public code's term
    ``mean(O_s * log(O_s / O_a))`` on sigmoid probabilities clamped to ``[eps, 1]``, which ignores the background
    probability and can be negative.

    The teacher's outputs are detached: only the student receives gradient.

    Args:
        stages: indices of the stages to align (e.g. ``(0, 1, 2, 3)``); None aligns every stage given.
        kl_weight: weight of the KL term, >= 0.
        l2_weight: weight of the squared-error term, >= 0.
        stage_weights: one weight >= 0 per aligned stage; replaces the default equal ``1 / len(stages)``.
        activation: ``"sigmoid"`` or ``"softmax"``, see above.
        kl: ``"distribution"`` (default) or ``"published"``.
        eps: clamp floor of the ``"published"`` form.
        reduction: ``"mean"`` over the batch, ``"sum"`` over the batch, or ``"none"`` for a ``(B,)`` tensor.

    Raises:
        ValueError: invalid arguments; at call time, mismatched shapes or a stage index beyond the side outputs.

    Example::

        loss = DistributionAlignmentLoss(stages=(0, 1, 2, 3))
        value = loss(student_side_logits, teacher_side_logits)  # lists of (B, K, H_i, W_i)
    """

    def __init__(
        self,
        stages: Sequence[int] | None = None,
        kl_weight: float = 1.0,
        l2_weight: float = 1.0,
        stage_weights: Sequence[float] | None = None,
        activation: str = "sigmoid",
        kl: str = "distribution",
        eps: float = 1e-8,
        reduction: str = "mean",
    ) -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        super().__init__(reduction=reduction)
        if stages is not None:
            stages = tuple(stages)
            if not stages or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in stages):
                raise ValueError(f"stages must be non-negative stage indices, got {stages!r}.")
            if len(set(stages)) != len(stages):
                raise ValueError(f"stages must not repeat an index, got {stages!r}.")
        self.stages = stages
        self.kl_weight = _check_weight(kl_weight, "kl_weight")
        self.l2_weight = _check_weight(l2_weight, "l2_weight")
        if stage_weights is not None:
            stage_weights = tuple(_check_weight(w, "stage_weights") for w in stage_weights)
            if stages is None or len(stage_weights) != len(stages):
                raise ValueError(
                    f"stage_weights needs one weight per entry of stages, got stage_weights={stage_weights} "
                    f"and stages={stages}."
                )
        self.stage_weights = stage_weights
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}.")
        if kl not in _KL_MODES:
            raise ValueError(f"kl must be one of {_KL_MODES}, got {kl!r}.")
        if kl == "published" and activation != "sigmoid":
            raise ValueError("kl='published' is defined for activation='sigmoid' only.")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}.")
        self.activation = activation
        self.kl = kl
        self.eps = eps

    def _stage_loss(self, zs: torch.Tensor, za: torch.Tensor) -> torch.Tensor:
        """Per-sample loss ``(B,)`` of one stage."""
        if self.activation == "softmax":
            log_ps, log_pa = F.log_softmax(zs, dim=1), F.log_softmax(za, dim=1)
            ps, pa = log_ps.exp(), log_pa.exp()
            kl = (ps * (log_ps - log_pa)).sum(dim=1)
        elif self.kl == "distribution":
            log_ps, log_pa = F.logsigmoid(zs), F.logsigmoid(za)
            log_qs, log_qa = F.logsigmoid(-zs), F.logsigmoid(-za)
            ps, pa = log_ps.exp(), log_pa.exp()
            kl = ps * (log_ps - log_pa) + (1.0 - ps) * (log_qs - log_qa)
        else:
            ps = torch.sigmoid(zs).clamp(self.eps, 1.0)
            pa = torch.sigmoid(za).clamp(self.eps, 1.0)
            kl = ps * torch.log(ps / pa)
        l2 = (ps - pa).square()
        return self.kl_weight * kl.flatten(1).mean(1) + self.l2_weight * l2.flatten(1).mean(1)

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            student: per-stage side logits of the student, each ``(B, K, H_i, W_i)``.
            teacher: the teacher's, same number and shapes (detached here).

        Returns:
            the loss: a scalar, or ``(B,)`` with ``reduction="none"``.
        """
        if isinstance(student, torch.Tensor) or isinstance(teacher, torch.Tensor):
            raise ValueError("student and teacher must be sequences of per-stage tensors (side outputs), not tensors.")
        if len(student) != len(teacher):
            raise ValueError(f"student has {len(student)} side outputs but teacher has {len(teacher)}.")
        stages = self.stages if self.stages is not None else tuple(range(len(student)))
        if not stages:
            raise ValueError("no side outputs to align: student and teacher are empty.")
        if max(stages) >= len(student):
            raise ValueError(f"stages={stages} but only {len(student)} side outputs (stages 0..{len(student) - 1}).")
        weights = self.stage_weights if self.stage_weights is not None else (1.0 / len(stages),) * len(stages)
        total: torch.Tensor | None = None
        for stage, weight in zip(stages, weights, strict=True):
            zs, za = student[stage], teacher[stage].detach()
            if zs.shape != za.shape or zs.ndim < 2:
                raise ValueError(
                    f"stage {stage}: student side output {tuple(zs.shape)} and teacher side output "
                    f"{tuple(za.shape)} must have the same shape (B, K, H, W)."
                )
            if self.activation == "softmax" and zs.shape[1] < 2:
                raise ValueError(f"stage {stage}: activation='softmax' needs >= 2 channels, got {zs.shape[1]}.")
            term = weight * self._stage_loss(zs.float(), za.float())
            total = term if total is None else total + term
        assert total is not None
        if self.reduction == "mean":
            return total.mean()
        if self.reduction == "sum":
            return total.sum()
        return total
