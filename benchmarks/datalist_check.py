"""What checking a datalist costs: ``prepare`` of a release folder, then the check every run makes when it loads a
datalist (:func:`monai_medspike.data.checks.check_datalist`), first as for a hand-written datalist (every mask
decoded), then remembered in the same process and in a new one (the cache under ``XDG_CACHE_HOME``).

Usage::

    python benchmarks/datalist_check.py [--data ../shared/data/bench] [--threads 1] [--out FILE.json]

``--data`` holds ``kvasir-seg/`` and ``isic2018/`` release folders (the real 200-pair bench sets); the datalists
and caches go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _bench import machine, write_json

DATASETS = {"kvasir": "kvasir-seg", "isic2018": "isic2018"}


def measure(dataset: str, root: Path, work: Path) -> dict[str, float]:
    from monai_medspike.data import checks, prepare

    datalist = work / f"{dataset}.json"
    start = time.perf_counter()
    summary = prepare(dataset, root, datalist, val_fraction=0.2, test_fraction=0.2)
    prepared = time.perf_counter() - start
    os.environ["XDG_CACHE_HOME"] = str(work / f"cache-{dataset}")  # nothing remembered: as a hand-written datalist
    checks._checked.clear()
    timings = []
    for forget in (False, False, True):
        if forget:
            checks._checked.clear()  # a new process: only the cache on disk
        start = time.perf_counter()
        checks.check_datalist(datalist, dataset)
        timings.append(time.perf_counter() - start)
    return {
        "pairs": summary["total"],
        "prepare_s": round(prepared, 3),
        "first_check_s": round(timings[0], 3),
        "cached_same_process_s": round(timings[1], 4),
        "cached_new_process_s": round(timings[2], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "bench"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for dataset, folder in DATASETS.items():
            results[dataset] = measure(dataset, Path(args.data) / folder, Path(work))
            print(dataset, results[dataset])
    path = write_json({"machine": machine(torch.device("cpu")), "results": results}, args.out, "datalist_check.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
