"""A small MONAI Label studies folder from the built-in demo data, and untrained checkpoints to serve."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from monai_medspike.apps.monailabel import load_bundle_config, resolve_models
from monai_medspike.data import make_demo_dataset

# an oblique (10 degrees about z), flipped, shifted voxel-to-world matrix with spacing 0.7 x 0.75 x 5 mm: an app
# that drops or re-orients the geometry fails on it (scanner affines are rotations times spacings, never sheared)
_ANGLE = np.deg2rad(10.0)
_ROTATION = np.array([[np.cos(_ANGLE), -np.sin(_ANGLE), 0.0], [np.sin(_ANGLE), np.cos(_ANGLE), 0.0], [0.0, 0.0, 1.0]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = _ROTATION @ np.diag([-1.0, -1.0, 1.0]) @ np.diag([0.7, 0.75, 5.0])
AFFINE[:3, 3] = [120.0, 95.5, -40.0]


def make_studies(root: Path) -> dict[str, Path]:
    """``root/studies`` with three labelled Kvasir-like JPEG images and one labelled CT volume (``AFFINE``).

    Labels are MONAI Label's: ``labels/final/<image id>.<ext>`` holding class indices (0/1).
    Returns the paths by image id.
    """
    studies = root / "studies"
    final = studies / "labels" / "final"
    final.mkdir(parents=True)
    kvasir = make_demo_dataset("kvasir", root / "demo_kvasir", count=3)
    paths: dict[str, Path] = {}
    for i, image in enumerate(sorted((kvasir / "Kvasir-SEG" / "images").glob("*.jpg"))):
        shutil.copy(image, studies / f"polyp{i}.jpg")
        mask = np.asarray(Image.open(kvasir / "Kvasir-SEG" / "masks" / image.name).convert("L")) > 127
        Image.fromarray(mask.astype(np.uint8)).save(final / f"polyp{i}.png")
        paths[f"polyp{i}"] = studies / f"polyp{i}.jpg"
    ct = make_demo_dataset("covid_ct", root / "demo_ct", count=1)
    volume = sorted((ct / "ct").glob("*.nii.gz"))[0]
    for source, target in (
        (volume, studies / "chest0.nii.gz"),
        (ct / "infection_mask" / volume.name, final / "chest0.nii.gz"),
    ):
        img = nib.load(source)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), AFFINE), target)
    paths["chest0"] = studies / "chest0.nii.gz"
    return paths


def write_untrained_checkpoint(name: str, output_root: Path, overrides: dict | None = None) -> Path:
    """A student checkpoint of the bundle's network with its initial weights, where the app looks for one."""
    bundle = resolve_models(name)[name]
    parser = load_bundle_config(bundle, output_root, overrides=overrides)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    path = output_root / "student-00000000-000000" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": network.state_dict()}, path)
    return path
