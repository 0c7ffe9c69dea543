"""Shared pieces of the benchmark scripts: device choice, timing, memory, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn`` takes, with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def saved_activation_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass while ``fn`` runs (device independent)."""
    storages: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def peak_cuda_bytes(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak CUDA memory allocated while ``fn`` runs (None on CPU)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def machine(device: torch.device) -> dict[str, Any]:
    from monai_medspike.speed import cpu_name

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    info = {
        "device": str(device),
        "cpu": cpu_name(),  # the model name and torch's instruction set for it (AVX2, AVX512, ...)
        # native bfloat16 instructions change the bfloat16 figures up to 15-fold (docs/performance.md)
        "cpu_bfloat16_instructions": sorted({f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()}),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json(payload: dict[str, Any], path: str | None, default_name: str) -> Path:
    out = Path(path) if path else RESULTS / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    return out
