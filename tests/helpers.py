"""Shared helpers of the test suite."""

from __future__ import annotations

from monai_medspike.networks.nets import MedSpikeFormer

# a reduced configuration that keeps the tests fast on 2 CPU cores; the default one is tested separately
SMALL = {"embed_dims": (8, 16, 16, 32), "num_heads": 2, "time_steps": 2}


def small_net(**kwargs) -> MedSpikeFormer:
    return MedSpikeFormer(**{**SMALL, **kwargs})
