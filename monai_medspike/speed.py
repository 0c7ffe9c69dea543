"""The fastest exact-enough way to run the network on the device at hand, chosen at run time.

The bundles' ``channels_last`` and ``precision`` settings default to ``auto``, which this module resolves for the
run's device (training, evaluation, inference, MONAI Label and ``compare`` all build their network through it):

- ``channels_last``: on a CPU, where channels-last convolutions are faster (0.57-0.9 x the float32 train step,
  docs/performance.md); not on a GPU.
- ``precision``: ``bfloat16`` (mixed precision, the neurons integrating in float32) on a CUDA GPU that supports
  it, MONAI's ``amp`` habit; on a CPU only where a short timed probe finds it faster than float32. On CPUs without
  native bfloat16 instructions, bfloat16 convolutions are emulated and run up to 15 x slower, so no fixed default
  fits every CPU. The probe's result is kept per machine under ``~/.cache/monai_medspike/speed/`` (a few seconds,
  once), and the choice and its reason are logged once per process.

A value given on the command line (``--channels_last false``, ``--precision float32``) is used as it is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import time
from typing import Any

import torch

from monai_medspike.utils import cache_dir, check_flag

__all__ = ["AUTO", "BFLOAT16_GAIN", "channels_last", "cpu_name", "precision", "probe_cpu_bfloat16"]

logger = logging.getLogger(__name__)

AUTO = "auto"
#: bfloat16 is chosen on a CPU when the probe's bfloat16 step takes at most this fraction of the float32 one
BFLOAT16_GAIN = 0.8
_told: set[tuple[str, str, Any]] = set()


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _tell(setting: str, device: torch.device, chosen: Any, why: str) -> None:
    if (setting, str(device), chosen) not in _told:
        _told.add((setting, str(device), chosen))
        logger.info("%s auto: %s on %s (%s; --%s sets it)", setting, chosen, device, why, setting)


def channels_last(value: Any, device: Any) -> bool:
    """The ``channels_last`` setting for ``device``: ``true``/``false`` as given, ``auto`` true on a CPU.

    Raises:
        ValueError: neither a yes/no word nor ``auto``, naming ``--channels_last``.
    """
    if not _is_auto(value):
        return check_flag(value, "channels_last")
    device = torch.device(device)
    chosen = device.type == "cpu"
    _tell("channels_last", device, chosen, "faster convolutions on a CPU" if chosen else "the GPU's default layout")
    return chosen


def precision(value: Any, device: Any) -> str:
    """The ``precision`` setting for ``device``: ``float32`` or ``bfloat16`` as given; ``auto`` bfloat16 on a CUDA
    GPU that supports it and on a CPU where :func:`probe_cpu_bfloat16` measures it faster, else float32."""
    if not _is_auto(value):
        return value
    device = torch.device(device)
    if device.type == "cuda":
        fast = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        why = "mixed precision on a GPU with bfloat16" if fast else "this GPU has no bfloat16"
    elif device.type == "cpu":
        ratio = probe_cpu_bfloat16()
        fast = ratio <= BFLOAT16_GAIN
        why = f"a bfloat16 step took {ratio:.2f} x the float32 one on this CPU ({cpu_name()})"
    else:
        fast, why = False, f"no bfloat16 path on {device.type}"
    chosen = "bfloat16" if fast else "float32"
    _tell("precision", device, chosen, why)
    return chosen


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``) and torch's instruction set for it."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"


@functools.cache
def probe_cpu_bfloat16() -> float:
    """The time of a bfloat16 (autocast) train step of a small channels-last convolution block over that of the
    float32 step, on this CPU with torch's threads: measured once per machine, CPU, torch version and thread count,
    then read from the cache folder."""
    key = json.dumps([cpu_name(), torch.__version__, torch.get_num_threads(), 1])
    path = cache_dir() / "speed" / f"bfloat16-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
    try:
        return float(json.loads(path.read_text())["ratio"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    times = {dtype: _step_time(dtype) for dtype in (torch.float32, torch.bfloat16)}
    ratio = times[torch.bfloat16] / times[torch.float32]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"ratio": ratio, "seconds": {str(k): v for k, v in times.items()}, "key": key}))
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only means probing again next time
    return ratio


def _step_time(dtype: torch.dtype, repeats: int = 3) -> float:
    """The best time of a forward and backward pass of a conv-BN-conv block on a (4, 32, 64, 64) channels-last batch,
    in ``dtype`` (autocast for bfloat16)."""
    generator = torch.Generator().manual_seed(0)
    block = torch.nn.Sequential(
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.Conv2d(32, 32, 3, padding=1)
    ).to(memory_format=torch.channels_last)
    x = torch.rand(4, 32, 64, 64, generator=generator).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    for i in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = block(x)
        out.float().square().mean().backward()
        if i:
            best = min(best, time.perf_counter() - start)
    return best
