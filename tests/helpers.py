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
    """``path`` as a bundle's training writes its ``model.pt``: the network of ``parser`` (a bundle's ``train.json``
    with overrides; ``network_def`` or, for ``phase="teacher"``, ``teacher_def``) with ``state`` (default: its own
    initial weights) and the record of the config's settings."""
    from monai_medspike.checkpoints import make_record, model_file
    from monai_medspike.settings import group_settings

    network = parser.get_parsed_content("network_def" if phase == "student" else "teacher_def")
    if state is not None:
        network.load_state_dict(state)
    groups = {
        group: {
            s.name: parser.get_parsed_content(s.name) for s in group_settings(group, "train") if s.name in parser.config
        }
        for group in ("data", "training", "run")
    }
    record = make_record(network, phase, parser.get_parsed_content("bundle_name"), groups)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model_file(network, record), path)
    return path
