from __future__ import annotations

from .alignment import DistributionAlignmentLoss
from .segmentation import SegmentationAlignmentLoss

__all__ = ["DistributionAlignmentLoss", "SegmentationAlignmentLoss"]
