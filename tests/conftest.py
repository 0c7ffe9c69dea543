from __future__ import annotations

import pytest
import torch

# Numeric tests that matter on a GPU run on every device this machine has (CUDA only where one is present).
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each available device in turn: ``cpu`` always, ``cuda`` when a GPU is present."""
    return torch.device(request.param)
