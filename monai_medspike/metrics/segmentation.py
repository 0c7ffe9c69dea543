"""Per-image segmentation scores as the MedSpikeFormer paper reports them."""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["SCORES", "PerImageScore"]

SCORES = ("iou", "dice", "accuracy", "specificity", "sensitivity")


class PerImageScore(CumulativeIterationMetric):
    """One of the paper's per-image scores on binarised predictions, averaged over images.

    For each image and foreground class, with TP/FP/FN/TN counted over the pixels (voxels):

    - ``"iou"``: TP / (TP + FP + FN) -- the paper's "mIoU" is this foreground IoU averaged over images;
    - ``"dice"``: 2 TP / (2 TP + FP + FN);
    - ``"accuracy"``: (TP + TN) / all;
    - ``"specificity"``: TN / (TN + FP);
    - ``"sensitivity"``: TP / (TP + FN).

    Where a ratio is 0 / 0 (e.g. IoU, Dice or sensitivity of an image with an empty ground truth and an empty
    prediction) the score is ``empty_score``: 1.0 by default, as most tools count a correctly empty prediction;
    the original code's convention is ``empty_score=0.0``. MONAI's ``DiceMetric``/``MeanIoU`` instead skip or
    score such images by their ``ignore_empty`` rule; report both when comparing with published numbers.

    Inputs are binarised one-hot predictions and labels ``(B, C, *spatial)``; with ``C == 1`` the channel is the
    foreground, with ``C > 1`` channel 0 is background and the others are scored per class.

    Args:
        score: one of :data:`SCORES`.
        empty_score: the value of a 0 / 0 ratio.
        reduction: MONAI metric reduction over the ``(images, classes)`` results.
    """

    def __init__(self, score: str = "dice", empty_score: float = 1.0, reduction: str = MetricReduction.MEAN) -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}.")
        if empty_score not in (0.0, 1.0):
            raise ValueError(f"empty_score must be 0.0 or 1.0, got {empty_score}.")
        self.score = score
        self.empty_score = float(empty_score)
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred and y must have the same shape, got {tuple(y_pred.shape)} and {tuple(y.shape)}.")
        if y_pred.shape[1] > 1:
            y_pred, y = y_pred[:, 1:], y[:, 1:]
        p, g = y_pred.bool().flatten(2), y.bool().flatten(2)
        tp = (p & g).sum(-1).double()
        fp = (p & ~g).sum(-1).double()
        fn = (~p & g).sum(-1).double()
        tn = (~p & ~g).sum(-1).double()
        num, den = {
            "iou": (tp, tp + fp + fn),
            "dice": (2 * tp, 2 * tp + fp + fn),
            "accuracy": (tp + tn, tp + tn + fp + fn),
            "specificity": (tn, tn + fp),
            "sensitivity": (tp, tp + fn),
        }[self.score]
        out = torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, self.empty_score))
        if self.score == "sensitivity":  # empty ground truth: a prediction with false positives is not "correct"
            out = torch.where((den == 0) & (fp > 0), torch.zeros_like(out), out)
        return out.float()

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor.")
        value, _ = do_metric_reduction(data, reduction or self.reduction)
        return value
