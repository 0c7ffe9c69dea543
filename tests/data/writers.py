"""Write tiny dataset releases in their real layouts and file formats, for the data tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def rgb(h: int, w: int, mask: np.ndarray | None = None) -> Image.Image:
    img = RNG.integers(100, 200, (h, w, 3), dtype=np.uint8)
    if mask is not None:
        img[mask > 0] = 40
    return Image.fromarray(img, "RGB")


def write_isic(root: Path, n: int = 6, size: tuple[int, int] = (40, 48)) -> Path:
    img_dir, gt_dir = root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task1_Training_GroundTruth"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i in range(n):
        m = disk(*size, size[0] / 2, size[1] / 2, 6 + i)
        rgb(*size, m).save(img_dir / f"ISIC_{i:07d}.jpg")
        Image.fromarray(m * 255, "L").save(gt_dir / f"ISIC_{i:07d}_segmentation.png")
    (root / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("not an image")
    return root


def write_kvasir(root: Path, n: int = 5) -> Path:
    base = root / "Kvasir-SEG"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir(parents=True)
    for i in range(n):
        m = disk(48, 64, 20, 30, 10)
        rgb(48, 64, m).save(base / "images" / f"case{i}.jpg")
        Image.fromarray(np.repeat(m[..., None] * 255, 3, axis=2), "RGB").save(base / "masks" / f"case{i}.jpg")
    return root


def write_busi(root: Path) -> Path:
    base = root / "Dataset_BUSI_with_GT"
    specs = {"benign": [(1, 1), (2, 2), (3, 1)], "malignant": [(1, 1), (2, 1)], "normal": [(1, 0), (2, 0)]}
    for cls, items in specs.items():
        (base / cls).mkdir(parents=True)
        for n, masks in items:
            rgb(40, 50).save(base / cls / f"{cls} ({n}).png")
            if masks == 0:
                Image.fromarray(np.zeros((40, 50, 3), np.uint8), "RGB").save(base / cls / f"{cls} ({n})_mask.png")
            for k in range(masks):
                m = disk(40, 50, 10 + 20 * k, 12 + 25 * k, 6)
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                Image.fromarray(m.astype(bool)).convert("1").save(base / cls / f"{cls} ({n}){suffix}.png")
    return root


def aperio_xml(polygons: list[list[tuple[float, float]]]) -> str:
    regions = "".join(
        f'<Region Id="{k + 1}"><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly)
        + "</Vertices></Region>"
        for k, poly in enumerate(polygons)
    )
    return (
        f'<?xml version="1.0"?><Annotations><Annotation Id="1"><Regions>{regions}</Regions></Annotation></Annotations>'
    )


def write_monuseg(
    root: Path,
    ids: tuple[str, ...] = (
        "TCGA-AA-0001-01Z-00-DX1",
        "TCGA-AA-0001-01Z-00-DX2",
        "TCGA-BB-0002-01Z-00-DX1",
        "TCGA-CC-0003-01Z-00-DX1",
    ),
) -> Path:
    tissue = root / "MoNuSeg 2018 Training Data" / "Tissue Images"
    annotations = root / "MoNuSeg 2018 Training Data" / "Annotations"
    tissue.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for i, name in enumerate(ids):
        rgb(32, 32).save(tissue / f"{name}.tif", compression="tiff_lzw")
        squares = [[(2 + i, 2), (8 + i, 2), (8 + i, 8), (2 + i, 8)], [(20, 20), (26, 20), (26, 26), (20, 26)]]
        (annotations / f"{name}.xml").write_text(aperio_xml(squares))
    return root


def write_covid_infnet(root: Path, n: int = 5) -> Path:
    doctor = root / "TrainingSet" / "LungInfection-Train" / "Doctor-label"
    multi = root / "TrainingSet" / "MultiClassInfection-Train"
    for d in (doctor / "Imgs", doctor / "GT", multi / "Imgs", multi / "GT"):
        d.mkdir(parents=True)
    for i in range(1, n + 1):
        img = Image.fromarray(RNG.integers(0, 255, (36, 44), dtype=np.uint8), "L")
        img.save(doctor / "Imgs" / f"{i}.jpg")
        img.save(multi / "Imgs" / f"{i}.jpg")
        classes = disk(36, 44, 12, 12, 5) + 2 * disk(36, 44, 24, 30, 4)
        Image.fromarray((classes > 0).astype(np.uint8) * 255, "L").save(doctor / "GT" / f"{i}.png")
        palette = Image.fromarray(classes.astype(np.uint8), "P")
        palette.putpalette([0, 0, 0, 128, 128, 128, 255, 255, 255])
        palette.save(multi / "GT" / f"{i}.png")
    return root


AFFINE = np.diag([-0.8, -0.8, 5.0, 1.0])
AFFINE[:3, 3] = (100.0, 120.0, -50.0)


def ct_volume(shape=(32, 24, 6), infected=(2, 3)) -> tuple[np.ndarray, np.ndarray]:
    vol = np.full(shape, -1000, np.int16)
    vol[4:-4, 4:-4, :] = 40
    vol[8:16, 6:18, :] = -850
    mask = np.zeros(shape, np.uint8)
    for z in infected:
        mask[10:14, 8:12, z] = 1
        vol[10:14, 8:12, z] = -300
    vol = vol + RNG.integers(-5, 5, shape).astype(np.int16)
    return vol, mask


def write_covid_ct(root: Path, cases: tuple[str, ...] = ("case_a", "case_b", "case_c", "case_d", "case_e")) -> Path:
    (root / "ct").mkdir(parents=True)
    (root / "infection_mask").mkdir(parents=True)
    for name in cases:
        vol, mask = ct_volume()
        nib.save(nib.Nifti1Image(vol, AFFINE), root / "ct" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(mask, AFFINE), root / "infection_mask" / f"{name}.nii.gz")
    return root
