"""Small process-level helpers: yes/no flags as command lines give them, the end of a command-line run, and glibc
settings that make MedSpikeFormer faster on a CPU. Nothing here imports the rest of the package."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "KEEP_FREED_MEMORY_ENV",
    "Progress",
    "bundle_command_line",
    "cache_dir",
    "command_arguments",
    "check_flag",
    "first_cause",
    "keep_freed_memory",
    "running_bundle_cli",
    "stop_command_line",
]

logger = logging.getLogger(__name__)

_FLAG_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


class Progress:
    """How far a long loop is, as a log line every ``every`` seconds and at its end:
    ``checked 120 / 400 samples (30%), 0.05 s each, about 14 s left``.

    Args:
        verb: what one step does, in the past tense (``"checked"``).
        noun: what a step handles (``"samples"``).
        total: the number of steps.
        every: seconds between two lines.
        log: the logger to write to.
    """

    def __init__(
        self, verb: str, noun: str, total: int, every: float = 10.0, log: logging.Logger | None = None
    ) -> None:
        self.verb, self.noun, self.total, self.every = verb, noun, int(total), float(every)
        self.log = log or logger
        self._start = self._last = time.monotonic()

    def line(self, done: int) -> str:
        """The progress line after ``done`` steps."""
        total = self.total or done
        seconds = (time.monotonic() - self._start) / max(done, 1)
        rest = f", about {seconds * max(total - done, 0):.0f} s left" if done < total else ""
        return f"{self.verb} {done} / {total} {self.noun} ({done / max(total, 1):.0%}), {seconds:.2f} s each{rest}"

    def step(self, done: int) -> None:
        """``done`` steps are finished: log a line if ``every`` seconds have passed or the loop has ended."""
        now = time.monotonic()
        if now - self._last >= self.every or done >= self.total:
            self._last = now
            self.log.info(self.line(done))


def cache_dir() -> Path:
    """The package's cache folder: ``$XDG_CACHE_HOME/monai_medspike`` (``~/.cache/monai_medspike``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "monai_medspike"


def check_flag(value: Any, argument: str) -> bool:
    """A yes/no setting as a bool, from a config's ``true``/``false`` or a command line's word for it.

    ``python -m monai.bundle run`` passes ``--flag False`` as the bool False but ``--flag false`` as the string
    ``"false"``, which Python would take for true. Words (``true``/``false``, ``1``/``0``, ``yes``/``no``,
    ``on``/``off``, any case) and 0/1 are read as meant; anything else raises a ValueError naming ``--argument``.
    """
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"--{argument} must be true or false, got {value!r}; e.g. --{argument} False.")


def first_cause(error: BaseException) -> BaseException:
    """The exception that started ``error``'s chain: MONAI's config parser wraps an error raised in a config
    expression in ``RuntimeError("Failed to evaluate ...")``; the cause says what is wrong."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def bundle_command_line(argv: Sequence[str] | None = None) -> tuple[str | None, list[str], dict[str, Any]]:
    """The command, the config files and the ``--key value`` overrides of a ``python -m monai.bundle <command>``
    command line (``argv`` defaults to ``sys.argv``), values read as ``monai.bundle`` (fire) reads them; ``(None, [],
    {})`` in any other process. The one place that reads MONAI's command line: the settings check
    (:func:`monai_medspike.workflows.check_command_line`) and ``ckpt_export``'s checkpoint
    (:meth:`monai_medspike.checkpoints.TrainedModel.locate`), which MONAI gives no config id.
    """
    argv = list(sys.argv if argv is None else argv)
    if not running_bundle_cli(argv):
        return None, [], {}
    from fire.parser import DefaultParseValue  # how `python -m monai.bundle` (fire) reads values

    command = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    overrides: dict[str, Any] = {}
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 < len(args) and not args[i + 1].startswith("--"):
                    value, i = args[i + 1], i + 1
                else:
                    value = "True"
            overrides[key.replace("-", "_") if key in ("config-file", "args-file") else key] = DefaultParseValue(value)
        i += 1
    args_file = overrides.get("args_file")
    if args_file:
        from monai.bundle import ConfigParser

        overrides = {**ConfigParser.load_config_file(str(args_file)), **overrides}
    files = overrides.get("config_file") or []
    if isinstance(files, str):
        files = json.loads(files.replace("'", '"')) if files.strip().startswith("[") else files.split(",")
    return command, [str(f).strip() for f in files], overrides


def command_arguments(argv: Sequence[str] | None = None) -> list[str]:
    """The arguments of one of the package's commands (``argv`` defaults to ``sys.argv[1:]``) with every option
    spelt as the bundles spell them: ``--skip-bad`` becomes ``--skip_bad`` (the older spellings stay accepted)."""
    out = []
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        out.append(arg)
    return out


def running_bundle_cli(argv: Sequence[str] | None = None) -> bool:
    """Whether this process is ``python -m monai.bundle ...`` (``argv`` defaults to ``sys.argv``)."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]) if argv else Path()
    return program.name == "__main__.py" and program.parent.name == "bundle" and program.parent.parent.name == "monai"


def stop_command_line(error: BaseException, status: int = 2, argv: Sequence[str] | None = None) -> None:
    """Under ``python -m monai.bundle``, end the process with ``error: <message>`` on stderr and ``status``.

    A run stopped for a reason the user can fix (a bad setting, a diverging loss, a checkpoint of another model)
    then ends with one readable line, not a traceback wrapped in MONAI's "Failed to evaluate ConfigExpression".
    Elsewhere (Python, MONAI Label) this returns and the caller re-raises ``error``.
    """
    if running_bundle_cli(argv):
        sys.stderr.write(f"error: {error}\n")
        sys.stderr.flush()
        raise SystemExit(status) from None


KEEP_FREED_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}
"""The same glibc settings as :func:`keep_freed_memory`, as environment variables (read when a process starts)."""

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory(enable: bool | str = True) -> bool:
    """Tell glibc's ``malloc`` to keep freed memory in the process for reuse, for the rest of the process.

    By default glibc serves every block above its ``mmap`` threshold (at most 32 MiB) with a fresh ``mmap`` and
    unmaps it when freed, and gives the top of the heap back to the system once more than the trim threshold is
    free. A network's large activations are then mapped page by page again at every step: at 256 x 256 and T = 4
    a MedSpikeFormer train step on a CPU spends about half its time in page faults (``docs/performance.md``).
    This sets ``M_MMAP_MAX = 0`` (large blocks come from the heap) and ``M_TRIM_THRESHOLD = -1`` (the heap is never
    trimmed), so memory freed by one step serves the next: there, 2.4 x faster train steps and 2.8 x faster CT
    inference, for a resident size that stays at its peak instead of shrinking between steps. Small activations
    (below the threshold) gain little. CUDA memory is not concerned (PyTorch caches it itself). Meant for a process
    that trains or infers, not a long-lived server.

    It holds for the main thread's heap, where PyTorch allocates a model's activations; the per-thread heaps of
    other threads still map blocks over 64 MiB on their own and may be released when empty. An allocator loaded
    with ``LD_PRELOAD`` (jemalloc, tcmalloc) ignores it.

    The environment-variable form, for any command: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776``
    (:data:`KEEP_FREED_MEMORY_ENV`).

    Args:
        enable: False (or ``"false"``, ``"0"``, ``"no"``, ``"off"``, as a bundle's command line passes it; read by
            :func:`check_flag`) does nothing, so that a config flag can be passed straight
            through.

    Returns:
        True when the settings are in force (set now or by an earlier call); False when disabled or the C library
        is not glibc (macOS, Windows, musl), where nothing is changed.

    Raises:
        ValueError: ``enable`` is not a bool, 0/1 or one of the words above.
    """
    global _applied
    if not check_flag(enable, "keep_freed_memory"):
        return False
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.debug("keep_freed_memory: not glibc (%s), nothing changed", platform.libc_ver())
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1
    if not _applied:
        logger.warning("keep_freed_memory: glibc refused mallopt; memory is allocated as before")
    return _applied
