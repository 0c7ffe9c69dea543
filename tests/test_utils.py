from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from monai_medspike.utils import KEEP_FREED_MEMORY_ENV, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# with transparent huge pages always on, one fault maps 2 MiB and the fault counts below mean something else
HUGE_PAGES_ALWAYS = THP.exists() and "[always]" in THP.read_text()
needs_glibc = pytest.mark.skipif(not GLIBC or HUGE_PAGES_ALWAYS, reason="glibc malloc with 4 KiB pages only")
# what would change the allocator of the probe before it starts
ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")

# Memory a small train step touches for the first time (minor page faults, MiB), 6 steps in a row in a fresh
# process: with the process's malloc settings as they come, then after keep_freed_memory(). Its activations are
# 48 MiB, above glibc's largest mmap threshold (32 MiB), so by default every step maps them afresh.
_PROBE = """
import json, resource, sys, torch
from monai_medspike.utils import keep_freed_memory

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 48, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(48, 1, 3, padding=1))
optimizer = torch.optim.Adam(net.parameters())
x = torch.rand(1, 1, 512, 512)

def steps():
    faults = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * resource.getpagesize() / 2**20)
    return faults

default = steps()
applied = keep_freed_memory(sys.argv[1])
after = steps()
again = keep_freed_memory()
print(json.dumps({"default": default, "applied": applied, "after": after, "again": again, "last": steps()}))
"""


def kept(faults: list[float]) -> bool:
    """Steps that reuse freed memory: most fault on nothing, none on more than a quarter of a default step."""
    return statistics.median(faults) < 5 and max(faults) < 100


def probe(enable: str, env: dict[str, str] | None = None) -> dict:
    """Run the probe with ``keep_freed_memory(enable)``, as a bundle's command line passes it (a string)."""
    clean = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, enable],
        capture_output=True, text=True, check=True, env=dict(clean, **(env or {})),
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_glibc
def test_keep_freed_memory_stops_fresh_mappings_of_large_blocks():
    got = probe("True")
    assert got["applied"] is True and got["again"] is True
    # default glibc: the activations are unmapped when freed and every step faults them in again (about 430 MiB)
    assert min(got["default"][2:]) > 200
    # kept: once the heap has grown to a step's peak, later steps reuse it (now and then the heap still grows a little)
    assert kept(got["after"][2:])


@needs_glibc
def test_keep_freed_memory_disabled_changes_nothing():
    got = probe("false")
    assert got["applied"] is False
    assert min(got["after"][2:]) > 200
    # the later call without arguments applies it
    assert got["again"] is True
    assert kept(got["last"][2:])


@needs_glibc
def test_environment_form_has_the_same_effect():
    got = probe("0", env=KEEP_FREED_MEMORY_ENV)
    assert kept(got["default"][2:] + got["after"])


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    import monai_medspike.utils as utils

    monkeypatch.setattr(utils, "_applied", False)
    monkeypatch.setattr(utils.platform, "libc_ver", lambda *a, **k: ("", ""))
    assert keep_freed_memory() is False
    assert keep_freed_memory(False) is False


def test_keep_freed_memory_reads_command_line_words():
    # a bundle's command line gives strings: "--keep_freed_memory false" must not count as true
    for word in ("false", "False", "0", "no", "off"):
        assert keep_freed_memory(word) is False
    with pytest.raises(ValueError, match="keep_freed_memory must be true or false, got 'maybe'"):
        keep_freed_memory("maybe")


def test_every_command_takes_the_bundles_spelling_and_the_older_one():
    from monai_medspike.utils import command_arguments

    argv = ["prepare", "busi", "--skip-bad", "--val-fraction=0.1", "--exclude_normal", "-v", "--set", "a-b=1"]
    assert command_arguments(argv) == [
        "prepare", "busi", "--skip_bad", "--val_fraction=0.1", "--exclude_normal", "-v", "--set", "a-b=1",
    ]  # fmt: skip
