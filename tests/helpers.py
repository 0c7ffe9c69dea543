"""Shared helpers of the test suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def write_model(path: Path, parser: Any, phase: str = "student", state: dict | None = None) -> Path:
    """``path`` as a bundle's training writes its ``model.pt``: the network of the phase of the bundle's workflow
    (``parser``: its ``train.json`` with overrides) with ``state`` (default: its own initial weights) and the
    workflow's own record of it (nothing is trained, no data prepared)."""
    from monai_medspike.checkpoints import model_file

    parser["datalist_file"] = str(path.parent / "no-datalist.json")  # the record needs no data
    workflow = parser.get_parsed_content("workflow")
    network = workflow.networks[phase]
    if state is not None:
        network.load_state_dict(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model_file(network, workflow.record(phase)), path)
    return path
