"""A dataset reader outside the package, as a user writes one for a new dataset (imported by its bundle's configs,
which the dataset record names): grey ultrasound scans ``scans/<id>.png`` with cyst masks ``annotations/<id>_cyst.png``
(0/255)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from monai_medspike.data import DataError, DatasetReader, Loaded, Sample
from monai_medspike.data.io import read_image, read_mask


class CystReader(DatasetReader):
    name = "cysts"
    channels = 1
    label_names = ("background", "cyst")

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        scans, annotations = root / "scans", root / "annotations"
        if not scans.is_dir() or not annotations.is_dir():
            raise DataError(f"{root}: not a cysts release folder: expected scans/ and annotations/ in it.")
        samples, problems = [], []
        for scan in sorted(scans.glob("*.png")):
            mask = annotations / f"{scan.stem}_cyst.png"
            if mask.is_file():
                samples.append(Sample(scan.stem, scan, (mask,), scan.stem))
            else:
                problems.append(f"{scan}: scan without {mask.name}")
        return samples, problems

    def load(self, sample: Sample) -> Loaded:
        image, mask = read_image(sample.image), read_mask(sample.masks[0])  # 0/1 by the mask rules of its kind
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(f"{sample.masks[0]}: not the size of {sample.image}.")
        return Loaded(mask, image.shape[:2])


def write_release(root: Path, count: int = 10, size: int = 80) -> Path:
    """A small generated release in the reader's layout: speckled scans with one dark elliptic cyst each."""
    rng = np.random.default_rng(1)
    (root / "scans").mkdir(parents=True)
    (root / "annotations").mkdir()
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        cy, cx, ry, rx = rng.integers(25, size - 25, 2).tolist() + rng.integers(6, 16, 2).tolist()
        cyst = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        scan = np.clip(rng.gamma(2.0, 50.0, (size, size)) * np.where(cyst, 0.25, 1.0), 0, 255).astype(np.uint8)
        Image.fromarray(scan, "L").save(root / "scans" / f"scan{i:02d}.png")
        Image.fromarray(cyst.astype(np.uint8) * 255, "L").save(root / "annotations" / f"scan{i:02d}_cyst.png")
    return root
