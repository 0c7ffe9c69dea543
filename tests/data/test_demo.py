"""Tests of the synthetic demo datasets (layouts, file formats, label values, content, determinism, errors)."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon

from monai_medspike.data import demo
from monai_medspike.data.demo import (
    COVID_CT_ORIGIN,
    COVID_CT_SHAPE,
    COVID_CT_SPACING,
    DEFAULT_COUNTS,
    DEMO_DATASETS,
    make_all_demo_datasets,
    make_demo_dataset,
)

ISIC_IMAGES = "ISIC2018_Task1-2_Training_Input"
ISIC_MASKS = "ISIC2018_Task1_Training_GroundTruth"
MONUSEG = "MoNuSeg 2018 Training Data"
DOCTOR = Path("TrainingSet/LungInfection-Train/Doctor-label")
MULTI = Path("TrainingSet/MultiClassInfection-Train")


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by the path relative to it."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """All datasets with the default counts, seed 0."""
    return make_all_demo_datasets(tmp_path_factory.mktemp("demo") / "seed0", seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# API and layout
# ---------------------------------------------------------------------------------------------------------------------


def test_make_all_returns_every_dataset_and_leaves_no_temporary_folder(roots):
    assert tuple(roots) == DEMO_DATASETS == ("isic2018", "kvasir", "busi", "monuseg", "covid", "covid_ct")
    parent = roots["isic2018"].parent
    assert all(path == parent / name and path.is_dir() for name, path in roots.items())
    assert sorted(p.name for p in parent.iterdir()) == sorted(DEMO_DATASETS)
    assert DEFAULT_COUNTS == {"isic2018": 24, "kvasir": 24, "busi": 24, "monuseg": 4, "covid": 20, "covid_ct": 4}


def test_isic2018(roots):
    root = roots["isic2018"]
    assert sorted(p.name for p in root.iterdir()) == [ISIC_IMAGES, ISIC_MASKS]
    images = sorted((root / ISIC_IMAGES).iterdir())
    masks = sorted((root / ISIC_MASKS).iterdir())
    assert [p.name for p in images] == [f"ISIC_{i:07d}.jpg" for i in range(24)]
    assert [p.name for p in masks] == [f"ISIC_{i:07d}_segmentation.png" for i in range(24)]
    sizes, contrasts = set(), []
    for image_path, mask_path in zip(images, masks, strict=True):
        assert mode(image_path) == "RGB" and mode(mask_path) == "L"
        image, mask = load(image_path), load(mask_path)
        assert image.shape[:2] == mask.shape
        assert set(np.unique(mask).tolist()) == {0, 255}
        assert all(96 <= n <= 160 for n in mask.shape)
        sizes.add(mask.shape)
        grey = image.astype(float).mean(axis=2)
        contrasts.append(grey[mask == 0].mean() - grey[mask == 255].mean())
    assert len(sizes) > 5 and any(h != w for h, w in sizes)
    assert min(contrasts) > 40  # the lesion is clearly darker than the skin in every image


def test_kvasir(roots):
    root = roots["kvasir"] / "Kvasir-SEG"
    assert sorted(p.name for p in roots["kvasir"].iterdir()) == ["Kvasir-SEG"]
    images = sorted((root / "images").glob("*.jpg"))
    masks = sorted((root / "masks").glob("*.jpg"))
    assert len(images) == len(masks) == 24 == len(list((root / "images").iterdir()))
    assert [p.name for p in images] == [p.name for p in masks]
    assert all(re.fullmatch(r"[a-z0-9]{25}", p.stem) for p in images)
    sizes = set()
    for image_path, mask_path in zip(images, masks, strict=True):
        assert mode(image_path) == "RGB" and mode(mask_path) == "RGB"
        image, mask = load(image_path).astype(float), load(mask_path)
        assert image.shape == mask.shape
        assert np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])
        binary = mask[..., 0] > 127
        assert binary.any() and not binary.all()
        assert ((mask[..., 0] > 64) & (mask[..., 0] < 192)).mean() < 0.02  # near-binary after JPEG
        sizes.add(binary.shape)
        # the polyp is brighter and redder than the mucosa
        assert image[binary].mean() > image[~binary].mean() + 15
        assert image[binary][:, 0].mean() > image[~binary][:, 0].mean() + 15
    assert len(sizes) > 5


def busi_files(root: Path) -> dict[str, list[Path]]:
    return {cls: sorted((root / "Dataset_BUSI_with_GT" / cls).iterdir()) for cls in ("benign", "malignant", "normal")}


def test_busi(roots):
    root = roots["busi"]
    assert sorted(p.name for p in (root / "Dataset_BUSI_with_GT").iterdir()) == ["benign", "malignant", "normal"]
    files = busi_files(root)
    counts = {}
    second_masks = 0
    contrasts = []
    for cls, paths in files.items():
        images = [p for p in paths if "_mask" not in p.name]
        counts[cls] = len(images)
        assert [p.name for p in images] == sorted(f"{cls} ({n}).png" for n in range(1, len(images) + 1))
        for image_path in images:
            assert mode(image_path) == "RGB"
            image = load(image_path)
            assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
            assert all(96 <= n <= 160 for n in image.shape[:2])
            first = image_path.with_name(f"{image_path.stem}_mask.png")
            extra = image_path.with_name(f"{image_path.stem}_mask_1.png")
            if cls == "normal":
                assert mode(first) == "RGB" and not extra.exists()
                mask = load(first)
                assert mask.shape == image.shape and not mask.any()
                continue
            assert mode(first) == "1"
            lesion = load(first)
            assert lesion.dtype == bool and lesion.shape == image.shape[:2] and lesion.any()
            if extra.exists():
                second_masks += 1
                assert mode(extra) == "1"
                other = load(extra)
                assert other.shape == lesion.shape and other.any()
                assert not (other & lesion).any()  # a second, separate lesion
                assert ndimage.label(lesion | other)[1] >= 2
                lesion = lesion | other
            grey = image[..., 0].astype(float)
            contrasts.append(grey[~lesion].mean() - grey[lesion].mean())
        # nothing but images, their masks and second masks
        assert len(paths) == 2 * len(images) + sum(p.name.endswith("_mask_1.png") for p in paths)
    assert counts == {"benign": 13, "malignant": 6, "normal": 5}
    assert second_masks == 3  # one lesion image in six
    assert min(contrasts) > 25  # hypoechoic (dark) lesions


@pytest.mark.parametrize("count", [1, 2, 3, 12])
def test_busi_small_counts(tmp_path, count):
    files = busi_files(make_demo_dataset("busi", tmp_path / "busi", count=count, seed=3))
    counts = {cls: sum("_mask" not in p.name for p in paths) for cls, paths in files.items()}
    assert sum(counts.values()) == count
    if count >= 3:
        assert min(counts.values()) >= 1
    if count >= 12:
        assert any(p.name.endswith("_mask_1.png") for paths in files.values() for p in paths)


def test_monuseg(roots):
    root = roots["monuseg"] / MONUSEG
    assert sorted(p.name for p in root.iterdir()) == ["Annotations", "Tissue Images"]
    tiffs = sorted((root / "Tissue Images").iterdir())
    xmls = sorted((root / "Annotations").iterdir())
    assert len(tiffs) == len(xmls) == 4
    assert [p.stem for p in tiffs] == [p.stem for p in xmls]
    assert all(p.suffix == ".tif" for p in tiffs) and all(p.suffix == ".xml" for p in xmls)
    assert all(re.fullmatch(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-01Z-00-DX\d", p.stem) for p in tiffs)
    patients = {p.stem[:12] for p in tiffs}
    assert len(patients) == 3  # two tiles share a patient
    outside = 0
    for tiff_path, xml_path in zip(tiffs, xmls, strict=True):
        with Image.open(tiff_path) as tiff:
            assert tiff.mode == "RGB" and tiff.size == (256, 256)
            assert tiff.info["compression"] == "tiff_lzw"
            image = np.array(tiff).astype(float)
        tree = ET.parse(xml_path).getroot()
        assert tree.tag == "Annotations"
        regions = tree.findall("./Annotation/Regions/Region")
        assert [r.get("Id") for r in regions] == [str(k) for k in range(1, len(regions) + 1)]
        assert 30 <= len(regions) <= 80
        union = np.zeros((256, 256), dtype=bool)
        area = 0
        for region in regions:
            vertices = region.findall("./Vertices/Vertex")
            assert 10 <= len(vertices) <= 16
            assert all(v.get("Z") == "0" for v in vertices)
            xs = np.array([float(v.get("X")) for v in vertices])
            ys = np.array([float(v.get("Y")) for v in vertices])
            assert xs.min() >= -2 and ys.min() >= -2 and xs.max() <= 257 and ys.max() <= 257
            outside += int(xs.min() < 0 or ys.min() < 0 or xs.max() > 255 or ys.max() > 255)
            assert 4 <= max(np.ptp(xs), np.ptp(ys)) <= 17  # diameter of a radius 3..7 nucleus
            rr, cc = polygon(ys, xs, shape=(256, 256))
            union[rr, cc] = True
            area += rr.size
        assert area == union.sum()  # nuclei do not overlap
        # nuclei are drawn exactly where the polygons are: dark purple inside, pink stroma outside
        grey = image.mean(axis=2)
        assert grey[union].max() < grey[~union].mean() - 40
        assert image[union][:, 2].mean() > image[union][:, 1].mean() + 30  # purple: blue above green
    assert outside >= 1  # some border nuclei reach slightly outside the tile, as in the real data


def test_covid(roots):
    root = roots["covid"]
    names = [f"{n}.jpg" for n in range(1, 21)]
    for folder in (DOCTOR / "Imgs", MULTI / "Imgs"):
        assert sorted(p.name for p in (root / folder).iterdir()) == sorted(names)
    for folder in (DOCTOR / "GT", MULTI / "GT"):
        assert sorted(p.name for p in (root / folder).iterdir()) == sorted(n.replace(".jpg", ".png") for n in names)
    infected = 0
    ggo, consolidation, rest = [], [], []
    for n in range(1, 21):
        image_bytes = (root / DOCTOR / "Imgs" / f"{n}.jpg").read_bytes()
        assert image_bytes == (root / MULTI / "Imgs" / f"{n}.jpg").read_bytes()
        assert mode(root / DOCTOR / "Imgs" / f"{n}.jpg") == "L"
        assert mode(root / DOCTOR / "GT" / f"{n}.png") == "L"
        assert mode(root / MULTI / "GT" / f"{n}.png") == "P"
        image = load(root / DOCTOR / "Imgs" / f"{n}.jpg").astype(float)
        binary = load(root / DOCTOR / "GT" / f"{n}.png")
        multi = load(root / MULTI / "GT" / f"{n}.png")
        assert image.shape == binary.shape == multi.shape
        assert 140 <= image.shape[0] <= 200 and 120 <= image.shape[1] <= 180
        assert set(np.unique(binary).tolist()) <= {0, 255}
        assert set(np.unique(multi).tolist()) <= {0, 1, 2}
        assert np.array_equal(binary == 255, multi > 0)
        infected += bool(binary.any())
        ggo.extend(image[multi == 1].tolist())
        consolidation.extend(image[multi == 2].tolist())
        rest.append(image[multi == 0].mean())
    assert 14 <= infected <= 18  # about 1 slice in 5 has no infection
    assert len(consolidation) > 0 and len(ggo) > 0
    assert np.mean(consolidation) > np.mean(ggo) + 40 > 60  # consolidation brighter than ground-glass, both > lung


def load_nifti(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    image = nib.load(path)
    return image, np.asanyarray(image.dataobj)


def lung_region(hu_slice: np.ndarray) -> np.ndarray:
    """Air pockets (HU < -200) enclosed by the body, holes filled: the lungs with whatever lies inside them."""
    labels, _ = ndimage.label(hu_slice < -200)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    enclosed = (labels > 0) & ~np.isin(labels, sorted(border))
    return ndimage.binary_fill_holes(enclosed)


def test_covid_ct(roots):
    root = roots["covid_ct"]
    assert sorted(p.name for p in root.iterdir()) == ["ct", "infection_mask", "infection_mask_multiclass"]
    names = [f"demo_case_{n:03d}.nii.gz" for n in range(1, 5)]
    expected_affine = np.diag([0.75, 0.75, 5.0, 1.0])
    expected_affine[:3, 3] = COVID_CT_ORIGIN
    assert COVID_CT_SHAPE == (96, 96, 16) and COVID_CT_SPACING == (0.75, 0.75, 5.0)
    assert np.any(np.asarray(COVID_CT_ORIGIN) != 0)
    for folder in ("ct", "infection_mask", "infection_mask_multiclass"):
        assert sorted(p.name for p in (root / folder).iterdir()) == names
    for name in names:
        ct, hu = load_nifti(root / "ct" / name)
        mask_image, mask = load_nifti(root / "infection_mask" / name)
        multi_image, multi = load_nifti(root / "infection_mask_multiclass" / name)
        assert hu.shape == mask.shape == multi.shape == (96, 96, 16)
        assert hu.dtype == np.int16 and mask.dtype == np.uint8 and multi.dtype == np.uint8
        for image in (ct, mask_image, multi_image):
            np.testing.assert_array_equal(image.affine, expected_affine)
            assert image.header.get_xyzt_units()[0] == "mm"
            assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
            assert image.header.get_zooms() == (0.75, 0.75, 5.0)
        assert set(np.unique(mask).tolist()) == {0, 1}
        assert set(np.unique(multi).tolist()) <= {0, 1, 2}
        assert np.array_equal(mask == 1, multi > 0)
        # Hounsfield units: air around the body, soft tissue, lungs; infection only inside the lungs
        assert hu[0, 0, 0] < -950 and hu.min() >= -1024
        assert abs(np.median(hu[48, 48, :]) - 40) < 60  # mediastinum at the centre
        assert np.all(hu[multi == 1] < -200)
        assert abs(hu[multi == 1].mean() + 400) < 40
        if (multi == 2).any():
            assert abs(hu[multi == 2].mean()) < 40
        for z in range(16):
            assert not np.any(mask[..., z] & ~lung_region(hu[..., z]))
        per_slice = mask.reshape(-1, 16).sum(axis=0)
        assert not per_slice[:2].any() and not per_slice[-2:].any()
        assert (per_slice > 0).sum() >= 2
        # the lungs grow and shrink along z
        # (infected voxels are brighter but still lung)
        lung_area = ((hu < -600) | (mask > 0)).reshape(-1, 16).sum(axis=0) - (hu < -950).reshape(-1, 16).sum(axis=0)
        assert lung_area[8] > 1.5 * lung_area[0] and lung_area[8] > 1.5 * lung_area[-1]


# ---------------------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(roots, tmp_path):
    reference = digests(roots["isic2018"].parent)
    # isic, kvasir, busi (19 lesion images, 3 with a second mask), monuseg, covid, covid_ct
    assert len(reference) == 2 * 24 + 2 * 24 + (2 * 24 + 3) + 2 * 4 + 4 * 20 + 3 * 4
    again = make_all_demo_datasets(tmp_path / "again", seed=0)
    assert digests(again["isic2018"].parent) == reference
    other = make_all_demo_datasets(tmp_path / "other", seed=1)
    for name in DEMO_DATASETS:
        first, second = digests(roots[name]), digests(other[name])
        images = [k for k in first if k in second and not re.search(r"mask|GT|segmentation|Annotations", k)]
        changed = [k for k in images if first[k] != second[k]]
        assert len(changed) == len(images), name  # every shared image path has a different content
        if name in ("kvasir", "monuseg"):  # random ids differ with the seed
            assert set(first) != set(second)


def test_datasets_of_one_seed_differ(roots):
    isic = load(roots["isic2018"] / ISIC_MASKS / "ISIC_0000000_segmentation.png")
    covid = load(roots["covid"] / DOCTOR / "GT" / "1.png")
    assert isic.shape != covid.shape or not np.array_equal(isic, covid)


# ---------------------------------------------------------------------------------------------------------------------
# arguments and atomic writing
# ---------------------------------------------------------------------------------------------------------------------


def test_count_and_return_value(tmp_path):
    out = make_demo_dataset("covid", str(tmp_path / "nested" / "covid"), count=3, seed=5)
    assert isinstance(out, Path) and out == tmp_path / "nested" / "covid"
    assert sorted(p.name for p in (out / DOCTOR / "Imgs").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == ["covid"]


def test_existing_empty_folder_is_used(tmp_path):
    out = tmp_path / "isic"
    out.mkdir()
    assert make_demo_dataset("isic2018", out, count=2) == out
    assert len(list((out / ISIC_IMAGES).iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["isic"]


def test_existing_non_empty_folder_is_refused(tmp_path):
    out = tmp_path / "kvasir"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="kvasir"):
        make_demo_dataset("kvasir", out, count=1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["kvasir"]
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="file"):
        make_demo_dataset("kvasir", tmp_path / "file", count=1)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="isic2018.*kvasir.*busi.*monuseg.*covid.*covid_ct"):
        make_demo_dataset("brats", tmp_path / "x")
    for count in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="count"):
            make_demo_dataset("busi", tmp_path / "x", count=count)
    with pytest.raises(ValueError, match="seed"):
        make_demo_dataset("busi", tmp_path / "x", seed=-1)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    def failing(root: Path, count: int, rng: np.random.Generator) -> None:
        (root / "half").mkdir()
        (root / "half" / "written.png").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setitem(demo._MAKERS, "isic2018", failing)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset("isic2018", tmp_path / "isic", count=2)
    assert list(tmp_path.iterdir()) == []
