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


@pytest.fixture(autouse=True, scope="session")
def _checkout_models_untouched():
    """No test publishes a model into the checkout's bundles (``bundles/<name>/models/``): tests that train with
    ``--output_root`` in a temporary folder publish next to it (see ``tests.bundles.helpers.isolated``)."""
    from pathlib import Path

    def published() -> dict[str, int]:
        bundles = Path(__file__).resolve().parents[1] / "bundles"
        return {str(p): p.stat().st_mtime_ns for p in bundles.glob("*/models/*.pt")}

    before = published()
    yield
    assert published() == before, "a test wrote into bundles/*/models/ of the checkout; pass --ckpt_dir"
