"""Run folders: where a run writes (``<output_root>/<phase>-<stamp>/``), the newest run of a phase, the trained model
evaluation and inference load by default, and the resumable checkpoint ``--resume_from`` names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from monai_medspike.distributed import is_main_process
from monai_medspike.errors import UserError
from monai_medspike.utils import cache_dir, check_flag

__all__ = [
    "CHECKPOINT",
    "check_writable",
    "find_checkpoint",
    "folder_lock",
    "newest_model",
    "require_checkpoint",
    "resolve_resume",
    "run_dir",
]

CHECKPOINT = "last.pt"
"""The resumable checkpoint of a run folder, written at the end of every epoch."""


def run_dir(output_root: str, name: str, overwrite: bool = False) -> str:
    """The output folder ``<output_root>/<name>`` of a run, checked before any work: ``output_root`` can be written
    (:func:`check_writable`) and the folder holds no earlier run unless ``overwrite`` is True (a run never replaces
    an earlier run's outputs without being told to). Nothing is created here. (A training holds the folder's
    :func:`folder_lock` while it trains.)

    Raises:
        UserError: an unwritable ``output_root`` or an earlier run's folder.
    """
    folder = Path(output_root) / name
    if not is_main_process():  # in distributed training rank 0 checks for every rank
        return str(folder)
    check_writable(Path(output_root), "output_root")
    if folder.is_dir() and any(folder.iterdir()) and not check_flag(overwrite, "overwrite"):
        raise UserError(
            f"{folder} holds an earlier run; choose another --run_name, or pass --overwrite true to replace it."
        )
    return str(folder)


def check_writable(folder: Path, argument: str = "output_root") -> None:
    """Raise a :class:`UserError` naming ``--argument`` unless files can be created in ``folder`` (or, where it does
    not exist yet, in its nearest existing parent): tried, not guessed from permission bits."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--{argument} {folder}: {existing} is a file, not a folder; choose a folder.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UserError(
            f"--{argument} {folder}: nothing can be written in {existing} ({e.strerror}); choose a writable folder."
        ) from e


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool = True) -> Iterator[None]:
    """Hold a lock on ``folder`` (an exclusive ``flock`` on a file named by the folder's path under the package's cache,
    ``~/.cache/monai_medspike/locks``, so that nothing is added to the output folders; released when the holder ends,
    even killed) while writing
    ``folder``.

    Args:
        wait: wait for another holder (the data a run prepares, which the next run reuses); False refuses at once
            (two runs on one run folder).

    Raises:
        UserError: ``wait`` is False and another process holds the lock (naming it).
    """
    import fcntl

    folder = Path(folder)
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(str(folder.absolute().resolve()).encode()).hexdigest()[:16]
    handle = open(locks / f"{folder.name}-{key}.lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"{folder}: another run ({holder}) is writing to it; wait for it to end, or give this run another "
                "--run_name or --output_root."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()


def find_checkpoint(output_root: str, phase: str, filename: str = "model.pt") -> str | None:
    """The ``filename`` of the newest run of ``phase`` under ``output_root`` (by folder name), or None."""
    root = Path(output_root)
    if not root.is_dir():
        return None
    runs = sorted((p for p in root.glob(f"{phase}-*") if (p / filename).is_file()), key=lambda p: p.name)
    return str(runs[-1] / filename) if runs else None


def require_checkpoint(path: str | None, what: str, how: str) -> str:
    """Return ``path`` if it is a file, else stop with an error saying what is missing and how to make it."""
    if path is None or not Path(path).is_file():
        where = f"{path} does not exist" if path else "none was found"
        raise FileNotFoundError(f"{what} checkpoint is required but {where}. {how}")
    return str(path)


def newest_model(ckpt_dir: str | None, output_root: str) -> tuple[Path | None, str]:
    """The trained student that evaluation and inference load by default: the newer of the bundle's published
    ``<ckpt_dir>/model.pt`` and the newest ``student-*/model.pt`` under ``output_root``; None when neither exists.
    The second item says where it looked (for the error when there is none)."""
    candidates = [Path(ckpt_dir) / "model.pt"] if ckpt_dir else []
    newest_run = find_checkpoint(output_root, "student")
    candidates += [Path(newest_run)] if newest_run else []
    found = [c for c in candidates if c.is_file()]
    looked = " or ".join(str(c) for c in [*candidates[:1], Path(output_root) / "student-*" / "model.pt"])
    return (max(found, key=lambda c: c.stat().st_mtime_ns) if found else None), looked


def resolve_resume(resume_from: str | Path | None) -> Path | None:
    """The resumable checkpoint that ``--resume_from`` names: a ``last.pt`` file, or a run folder holding one.

    Raises:
        FileNotFoundError: nothing there to resume, with what the folder (or its parent) holds.
    """
    if resume_from is None or resume_from == "":
        return None
    path = Path(resume_from)
    if path.is_dir():
        if (path / CHECKPOINT).is_file():
            return (path / CHECKPOINT).resolve()
        held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if not p.name.startswith("."))
        runs = sorted(p.name for p in path.glob("*-*") if (p / CHECKPOINT).is_file())
        hint = (
            f" Runs there that can be resumed: {', '.join(runs)}."
            if runs
            else " A run writes it at the end of each epoch; one killed in its first epoch has nothing to resume."
        )
        raise FileNotFoundError(
            f"--resume_from {path}: no {CHECKPOINT} in this folder (it holds: {', '.join(held) or 'nothing'}).{hint}"
        )
    if path.is_file():
        return path.resolve()
    parent = path.parent
    runs = sorted(p.name for p in parent.glob("*-*") if (p / CHECKPOINT).is_file()) if parent.is_dir() else []
    where = f" Resumable runs in {parent}: {', '.join(runs)}." if runs else ""
    raise FileNotFoundError(
        f"--resume_from {path}: no such file or folder; give a run folder or its {CHECKPOINT}.{where}"
    )
