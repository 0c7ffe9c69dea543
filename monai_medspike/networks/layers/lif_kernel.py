"""Build, cache and call the fused C kernel of the lean LIF (``lif_kernel.c``) for float32 and bfloat16 CPU tensors.

The C source ships with the package and is compiled with the system C compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``) into a shared library under ``$XDG_CACHE_HOME/monai_medspike`` (``~/.cache/monai_medspike``), named by a
hash of the source, the compiler and its flags. Build it once ahead of use with ``python -m monai_medspike.warmup``
(:func:`warm_up`; the bundles and the MONAI Label app call it before their first step or request); otherwise it
is built inside the first forward that needs it. A build holds a file lock next to the library, so processes that
start together (DDP ranks, server workers) compile once and the others wait for it; the file is written through a
temporary file and a rename, so no process loads a half-written library. A cached library that does not load is
rebuilt. It is called
through :mod:`ctypes` with the tensors' data pointers; its OpenMP threads follow ``torch.get_num_threads()``.

Set ``MONAI_MEDSPIKE_LIF_KERNEL=0`` to disable it. Without a working compiler one warning is logged and
:func:`~monai_medspike.networks.layers.lean_lif.lean_lif_multi_step` runs its eager torch code.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from monai_medspike.utils import cache_dir

__all__ = [
    "DTYPES",
    "ENV_VAR",
    "backward",
    "calls",
    "find_compiler",
    "forward",
    "kernel_available",
    "library_path",
    "warm_up",
]

ENV_VAR = "MONAI_MEDSPIKE_LIF_KERNEL"
"""Environment variable: ``0`` (or ``false``, ``off``, ``no``) turns the kernel off."""

_SOURCE = Path(__file__).with_name("lif_kernel.c")
_ABI = 3  # LIF_ABI in the C source

DTYPES = (torch.float32, torch.bfloat16)
"""The input dtypes the kernel takes; bfloat16 is integrated in float32 (see :func:`forward`)."""
_SURROGATES = {"sigmoid": 0, "atan": 1}

calls = {"forward": 0, "backward": 0}
"""How many times the kernel ran, per direction (tests use it to see which path was taken)."""

_logger = logging.getLogger(__name__)
_state: dict[str, object] = {}  # "lib": the loaded library, or None after a failed build (not retried); "path"


def find_compiler() -> str | None:
    """The C compiler the kernel is built with: ``$CC``, else the first of ``cc``, ``gcc``, ``clang`` on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _arch_flags() -> list[str]:
    """A portable instruction-set level this CPU supports (not ``-march=native``: the cache may be shared)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    if {"avx2", "fma", "bmi2", "movbe"} <= flags:
        return ["-march=x86-64-v3"]
    return ["-march=x86-64-v2"] if {"sse4_2", "popcnt"} <= flags else []


def _flags() -> list[str]:
    # no -ffast-math and no contraction into fused multiply-adds: the forward must round as the eager code does
    return [
        "-O3",
        "-std=c99",
        "-fopenmp",
        "-ffp-contract=off",
        "-fno-math-errno",
        "-fno-trapping-math",
        "-shared",
        "-fPIC",
        *_arch_flags(),
    ]


def library_path(compiler: str) -> Path:
    """Where the library built by ``compiler`` with the current source and flags is cached."""
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), compiler.encode(), version.encode(), " ".join(_flags()).encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"lif_kernel-{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    handle, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *_flags(), str(_SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # atomic: other processes see no file or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<library>.lock`` (POSIX ``flock``; released if the process dies).

    Where no lock can be taken (no ``fcntl``, a file system without ``flock``), the build goes ahead unlocked: the
    temporary file and rename still keep half-written libraries unseen, at worst processes compile twice.
    """
    with ExitStack() as stack:
        try:
            import fcntl

            lock = stack.enter_context(open(target.with_name(target.name + ".lock"), "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)
            stack.callback(fcntl.flock, lock, fcntl.LOCK_UN)  # runs before the file closes
        except (ImportError, OSError) as err:  # no fcntl, no lock file, or flock refused: build unlocked
            _logger.info("Building the LIF kernel without a lock (%s).", err)
        yield


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.lif_kernel_abi() != _ABI:
        raise OSError(f"{path} has ABI {lib.lif_kernel_abi()}, expected {_ABI}")
    i64, f32, i32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    lib.lif_forward.argtypes = [ptr, ptr, ptr, ptr, i64, i64, f32, f32, f32, i32, i32, i32]
    lib.lif_forward.restype = None
    lib.lif_backward.argtypes = [ptr, ptr, ptr, i64, i64, f32, f32, f32, i32, i32, i32, f32, i32]
    lib.lif_backward.restype = None
    lib.lif_forward_bf16.argtypes = [ptr, ptr, ptr, i64, i64, f32, f32, f32, i32, i32, i32]
    lib.lif_forward_bf16.restype = None
    lib.lif_backward_bf16.argtypes = [ptr, ptr, ptr, i64, i64, f32, f32, f32, i32, i32, i32, f32, i32]
    lib.lif_backward_bf16.restype = ctypes.c_int
    return lib


def _try_open(path: Path) -> ctypes.CDLL | None:
    """The cached library, or None if there is none or it does not load (corrupt, truncated, another build)."""
    if not path.exists():
        return None
    try:
        return _open(path)
    except (OSError, AttributeError) as err:
        _logger.info("Rebuilding the LIF kernel: cached %s does not load (%s).", path, err)
        return None


def _load() -> ctypes.CDLL | None:
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set $CC, or install cc/gcc/clang)")
    path = library_path(compiler)
    _state["path"] = path
    lib = _try_open(path)
    if lib is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _build_lock(path):
            lib = _try_open(path)  # another process may have built it while this one waited for the lock
            if lib is None:
                start = time.perf_counter()
                _build(compiler, path)
                _logger.info("Built the fused LIF kernel in %.1f s: %s", time.perf_counter() - start, path)
                lib = _open(path)
    return lib


def _library() -> ctypes.CDLL | None:
    if "lib" not in _state:
        try:
            _state["lib"] = _load()
        except Exception as err:  # any failure means the eager path, never a crash
            _logger.warning("The fused LIF kernel is not available, using the eager torch path: %s", err)
            _state["lib"] = None
    return _state["lib"]  # type: ignore[return-value]


def warm_up(device: torch.device | str | None = None) -> Path | None:
    """Build (or find) and load the kernel now, so that no forward pass waits for the compiler.

    Args:
        device: where the network will run; the kernel serves CPU tensors only, so for another device nothing is
            built. None: build it.

    Returns the library's path, or None if the kernel is not needed (``device`` not a CPU), turned off
    (``MONAI_MEDSPIKE_LIF_KERNEL=0``) or cannot be built here (then a warning names the reason and the eager path
    runs). Safe to call from many processes at once: one compiles, the others wait for its lock and load the result.
    """
    if device is not None and torch.device(device).type != "cpu":
        return None
    if not kernel_available():
        return None
    return _state.get("path")  # type: ignore[return-value]


def kernel_available() -> bool:
    """True if the kernel is enabled (``MONAI_MEDSPIKE_LIF_KERNEL`` is not ``0``) and builds (built on first call)."""
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    return _library() is not None


def forward(
    x_seq: torch.Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    with_membrane: bool = False,
    with_last: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(spikes, H, V_T)`` of a float32 or bfloat16 CPU ``x_seq`` ``(T, ...)``; needs :func:`kernel_available`.

    ``x_seq`` must be dense with ``T`` outermost (``lean_lif.time_major_dense``); the outputs take its layout.

    ``H`` (the membranes before firing) is only computed with ``with_membrane=True``, else it is None: the backward
    pass recomputes it from ``x_seq``. ``V_T`` (the membrane after the last step) is None with ``with_last=False``.

    A bfloat16 ``x_seq`` is integrated in float32, exactly as the float32 kernel integrates ``x_seq.float()``: the
    spikes are the same, in bfloat16 (0 and 1 are exact), ``V_T`` is float32, and ``H`` cannot be asked for.
    """
    lib = _library()
    steps = x_seq.shape[0]
    spikes = torch.empty_like(x_seq)
    v = torch.empty_like(x_seq[0], dtype=torch.float32) if with_last else None
    rest = 0.0 if v_reset is None else v_reset
    common = (steps, x_seq.numel() // steps, tau, v_threshold, rest, v_reset is not None, decay_input)
    if x_seq.dtype == torch.bfloat16:
        if with_membrane:
            raise ValueError("with_membrane=True needs a float32 x_seq; the bfloat16 kernel does not return H.")
        lib.lif_forward_bf16(  # type: ignore[union-attr]
            x_seq.data_ptr(), spikes.data_ptr(), None if v is None else v.data_ptr(), *common, torch.get_num_threads()
        )
        calls["forward"] += 1
        return spikes, None, v
    h_seq = torch.empty_like(x_seq) if with_membrane else None
    lib.lif_forward(  # type: ignore[union-attr]
        x_seq.data_ptr(), spikes.data_ptr(), None if h_seq is None else h_seq.data_ptr(),
        None if v is None else v.data_ptr(), *common, torch.get_num_threads(),
    )  # fmt: skip
    calls["forward"] += 1
    return spikes, h_seq, v


def backward(
    x_seq: torch.Tensor,
    grad_spikes: torch.Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    surrogate: str,
    alpha: float,
) -> torch.Tensor:
    """Gradient of the input from the input ``x_seq`` itself (float32 or bfloat16 CPU, time-major dense) and the
    spikes' gradient, in ``x_seq``'s dtype (bfloat16: computed in float32, rounded to nearest even).

    The membranes are recomputed from ``x_seq`` with the forward's operations, so they equal the forward's.

    Raises:
        MemoryError: the bfloat16 kernel could not allocate its membrane buffer.
    """
    lib = _library()
    if surrogate not in _SURROGATES:
        raise ValueError(f"surrogate must be 'sigmoid' or 'atan', got {surrogate!r}.")
    if grad_spikes.dtype != x_seq.dtype or grad_spikes.stride() != x_seq.stride():
        grad_spikes = torch.empty_like(x_seq).copy_(grad_spikes)  # the kernel walks all three in the same layout
    grad_x = torch.empty_like(x_seq)
    steps = x_seq.shape[0]
    rest = 0.0 if v_reset is None else v_reset
    args = (
        x_seq.data_ptr(), grad_spikes.data_ptr(), grad_x.data_ptr(), steps, x_seq.numel() // steps, tau,
        v_threshold, rest, v_reset is not None, decay_input, _SURROGATES[surrogate], alpha, torch.get_num_threads(),
    )  # fmt: skip
    if x_seq.dtype == torch.bfloat16:
        if lib.lif_backward_bf16(*args) != 0:  # type: ignore[union-attr]
            raise MemoryError("The LIF kernel could not allocate its membrane buffer (steps x 1024 floats per thread).")
    else:
        lib.lif_backward(*args)  # type: ignore[union-attr]
    calls["backward"] += 1
    return grad_x
