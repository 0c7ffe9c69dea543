"""Metrics of monai_medspike: the paper's per-image segmentation scores."""

from __future__ import annotations

from .segmentation import SCORES, PerImageScore

__all__ = ["SCORES", "PerImageScore"]
