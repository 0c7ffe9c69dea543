"""Distributed training helpers (``torchrun``): which process is the main one, the run stamp every rank shares,
work done once by rank 0 before the others, and the orderly end of the process group. Outside distributed training
every helper behaves as for a single process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["end_distributed", "is_distributed", "is_main_process", "main_process_first", "run_stamp"]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a process group is initialised (``torchrun`` with the multi-GPU config)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    """True outside distributed training and on rank 0 within it (the process that logs and saves)."""
    return not is_distributed() or torch.distributed.get_rank() == 0


def main_process_first(work: Callable[[], T]) -> T:
    """``work()`` on rank 0 first, then, after a barrier, on the other ranks (which find what rank 0 wrote)."""
    if not is_distributed():
        return work()
    result = work() if is_main_process() else None
    torch.distributed.barrier()
    return work() if not is_main_process() else result  # type: ignore[return-value]


def end_distributed() -> None:
    """End distributed training: wait for every rank, then destroy the process group (nothing outside one).

    Without the wait a rank that finishes first tears its connections down while another still uses them (rank 0
    writing the last checkpoint), and gloo aborts that rank at exit ("terminate called without an active
    exception"), failing a run that had finished.
    """
    if is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def run_stamp() -> str:
    """A timestamp that names the output folders of one run, e.g. ``20261128-153000``.

    In distributed training every rank gets rank 0's stamp, so all ranks agree on the folders.
    """
    stamp = [time.strftime("%Y%m%d-%H%M%S")]
    if is_distributed():
        torch.distributed.broadcast_object_list(stamp, src=0)
    return stamp[0]
