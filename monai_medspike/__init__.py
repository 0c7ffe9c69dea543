"""monai_medspike: MedSpikeFormer, a spiking transformer for medical image segmentation, as MONAI components."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
