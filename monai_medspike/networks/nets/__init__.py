from __future__ import annotations

from .alignment import AlignmentOutput, DistributionAlignmentNet
from .medspikeformer import MedSpikeFormer

__all__ = ["AlignmentOutput", "DistributionAlignmentNet", "MedSpikeFormer"]
