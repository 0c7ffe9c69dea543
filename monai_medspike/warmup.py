"""Prepare a machine before its first run: ``python -m monai_medspike.warmup``.

Builds the fused C kernel of the lean LIF neuron (:mod:`monai_medspike.networks.layers.lif_kernel`) into the user's
cache, so that no training step, ``run inferring`` or MONAI Label request waits for the C compiler. The bundles and
the MONAI Label app also call it before their first step or request; running it once after installing takes the
compilation out of the first run altogether. It holds a file lock while it compiles, so it is safe to run from
several processes at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from monai_medspike.networks.layers import lif_kernel

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Build the kernel and print where it is; exit 0 also without a compiler (the eager path then runs)."""
    parser = argparse.ArgumentParser(prog="python -m monai_medspike.warmup", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if the kernel cannot be built (default: warn, exit 0)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = lif_kernel.warm_up()
    seconds = time.perf_counter() - start
    if path is None:
        sys.stderr.write(
            "monai_medspike: the fused LIF kernel is off or cannot be built here (see the warning above); the eager "
            "torch path will run. Install a C compiler (cc, gcc or clang, or set $CC) to build it.\n"
        )
        return 1 if args.strict else 0
    sys.stdout.write(f"monai_medspike: fused LIF kernel ready in {seconds:.1f} s: {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
