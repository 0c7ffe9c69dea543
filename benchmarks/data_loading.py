"""Epoch time with and without the bundles' data cache (``--cache memory`` / ``--cache disk``) on real images.

Two measurements, side by side in one run:

1. Loader only: one dataset of each release folder under ``--data`` (by default the real samples in
   ``../shared/data``), prepared with ``python -m monai_medspike.data prepare``'s defaults, read through the bundles'
   training transforms (64 x 64, batch 4) for ``--epochs`` epochs, for each cache setting. Epoch 1 includes the
   building of the cache.
2. Bundle training (``--train``): ``python -m monai.bundle run training`` of the kvasir bundle's teacher phase on
   the real Kvasir-SEG samples, ``--epochs`` epochs, once per cache setting; epoch times from the trainer's log.

    python benchmarks/data_loading.py [--data ../shared/data] [--epochs 3] [--train] [--out FILE.json]

Run it alone on the machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import machine, median, pick_device, write_json
from monai.data import DataLoader, load_decathlon_datalist

from monai_medspike.data import get_transforms, prepare
from monai_medspike.workflows import CACHES, make_dataset

REPO = Path(__file__).resolve().parents[1]
# dataset name -> its folder under --data (the layouts of ../shared/data)
RELEASES = {"kvasir": "kvasir-seg", "isic2018": "isic2018", "busi": "busi", "covid": "covid19", "monuseg": "monuseg"}


def loader_epochs(datalist: Path, dataset: str, cache: str | None, epochs: int, cache_dir: Path) -> list[float]:
    data = load_decathlon_datalist(str(datalist), data_list_key="training")
    transform = get_transforms(dataset, "train", spatial_size=(64, 64), resize=dataset != "monuseg")
    start = time.perf_counter()
    loader = DataLoader(make_dataset(data, transform, cache, cache_dir), batch_size=4, shuffle=True, num_workers=0)
    times = []
    for _ in range(epochs):
        for _batch in loader:
            pass
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    return times


def bundle_epochs(release: Path, cache: str | None, epochs: int, out: Path) -> list[float]:
    args = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(REPO / "bundles" / "kvasir" / "configs" / "train.json"),
        "--dataset_dir", str(release), "--output_root", str(out), "--phase", "teacher", "--epochs", str(epochs),
        "--cache", "None" if cache is None else cache,
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    found = re.findall(
        r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)",
        proc.stdout + proc.stderr,
    )
    return [int(h) * 3600 + int(m) * 60 + float(s) for _, h, m, s in found]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of the release samples")
    p.add_argument("--datasets", nargs="+", default=list(RELEASES), choices=list(RELEASES))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train", action="store_true", help="also time the kvasir bundle's teacher training epochs")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    data = Path(args.data)
    results: dict = {"machine": machine(pick_device("cpu")), "epochs": args.epochs, "loader": {}, "training": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            release = data / RELEASES[dataset]
            datalist = Path(tmp) / f"{dataset}.json"
            summary = prepare(dataset, release, datalist, skip_bad=True)
            count = summary["splits"]["training"]["count"]
            row = {"training_images": count}
            for cache in CACHES:
                times = loader_epochs(datalist, dataset, cache, args.epochs, Path(tmp) / f"cache-{dataset}")
                row[str(cache)] = {"first_epoch_s": times[0], "later_epoch_s": median(times[1:])}
            results["loader"][dataset] = row
            base = row["None"]["later_epoch_s"]
            print(
                f"{dataset:9s} {count:3d} images  epoch s (first / later):  "
                + "  ".join(
                    f"{c}: {row[str(c)]['first_epoch_s']:.2f} / {row[str(c)]['later_epoch_s']:.3f}" for c in CACHES
                )
                + f"  later-epoch speed-up memory {base / row['memory']['later_epoch_s']:.1f}x, disk "
                f"{base / row['disk']['later_epoch_s']:.1f}x"
            )
        if args.train:
            for cache in CACHES:
                times = bundle_epochs(data / RELEASES["kvasir"], cache, args.epochs, Path(tmp) / f"train-{cache}")
                results["training"][str(cache)] = {"epoch_s": times}
                print(f"kvasir bundle teacher, cache {cache}: epoch times {', '.join(f'{t:.2f}' for t in times)} s")
    path = write_json(results, args.out, "data_loading.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
