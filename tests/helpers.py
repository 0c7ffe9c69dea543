"""Shared helpers of the test suite."""

from __future__ import annotations

import torch

from monai_medspike.networks.nets import MedSpikeFormer

# a reduced configuration that keeps the tests fast on 2 CPU cores; the default one is tested separately
SMALL = {"embed_dims": (8, 16, 16, 32), "num_heads": 2, "time_steps": 2}


def small_net(**kwargs) -> MedSpikeFormer:
    return MedSpikeFormer(**{**SMALL, **kwargs})


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass while ``fn`` runs."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())
