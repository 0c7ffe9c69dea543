"""Tests of the Aperio ImageScope XML reader (MoNuSeg 2018 annotations)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from monai_medspike.data.aperio import DataError, rasterize_polygons, read_aperio_mask, read_aperio_polygons

MONUSEG = Path(__file__).resolve().parents[3] / "shared" / "data" / "monuseg" / "MoNuSeg 2018 Training Data"
REAL_COUNTS = {
    "TCGA-B0-5698-01Z-00-DX1": 357,
    "TCGA-B0-5710-01Z-00-DX1": 359,
    "TCGA-CH-5767-01Z-00-DX1": 294,
}

# the square of the brief: corners (2,2),(2,6),(6,6),(6,2) in X/Y
SQUARE = [(2, 2), (2, 6), (6, 6), (6, 2)]
# a right triangle with corners (X, Y) = (1, 1), (7, 1), (1, 7)
TRIANGLE = [(1, 1), (7, 1), (1, 7)]
# a square with fractional corners: the interior holds the pixel centres 2..5, the outline runs through 1 and 6
FRACTIONAL_SQUARE = [(1.4, 1.4), (5.6, 1.4), (5.6, 5.6), (1.4, 5.6)]


def _vertex(x: object, y: object) -> str:
    return f'\t\t\t\t\t<Vertex X="{x}" Y="{y}" Z="0"/>\n'


def write_aperio(path: Path, regions: list[list[tuple[object, object]]]) -> Path:
    """Writes ``regions`` (lists of (X, Y) vertices) as an Aperio ImageScope XML file in the MoNuSeg layout."""
    parts = [
        '<Annotations MicronsPerPixel="0.252000">\n',
        '\t<Annotation Id="1" Name="" ReadOnly="0" Type="4" LineColor="65280" Visible="1" Selected="1">\n',
        '\t\t<Attributes>\n\t\t\t<Attribute Name="Description" Id="0" Value=""/>\n\t\t</Attributes>\n',
        "\t\t<Regions>\n",
        "\t\t\t<RegionAttributeHeaders>\n",
        '\t\t\t\t<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>\n',
        "\t\t\t</RegionAttributeHeaders>\n",
    ]
    for region_id, vertices in enumerate(regions, start=1):
        parts.append(f'\t\t\t<Region Id="{region_id}" Type="0" Zoom="2.14" Text="" DisplayId="{region_id}">\n')
        parts.append("\t\t\t\t<Attributes/>\n\t\t\t\t<Vertices>\n")
        parts.extend(_vertex(x, y) for x, y in vertices)
        parts.append("\t\t\t\t</Vertices>\n\t\t\t</Region>\n")
    parts.append("\t\t</Regions>\n\t\t<Plots/>\n\t</Annotation>\n</Annotations>\n")
    path.write_text("".join(parts))
    return path


def _yx(vertices: list[tuple[float, float]]) -> np.ndarray:
    return np.array([(y, x) for x, y in vertices], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------------
# polygons
# ---------------------------------------------------------------------------------------------------------------------


def test_polygons_are_row_col_float64_in_region_order(tmp_path):
    path = write_aperio(tmp_path / "a.xml", [SQUARE, TRIANGLE, [(1.5, 2.25), (3.0, 4.75), (0.5, 9.0)]])
    polygons = read_aperio_polygons(path)
    assert len(polygons) == 3
    for polygon in polygons:
        assert polygon.dtype == np.float64
    np.testing.assert_array_equal(polygons[0], [[2, 2], [6, 2], [6, 6], [2, 6]])
    np.testing.assert_array_equal(polygons[1], [[1, 1], [1, 7], [7, 1]])
    np.testing.assert_array_equal(polygons[2], [[2.25, 1.5], [4.75, 3.0], [9.0, 0.5]])
    # str paths are accepted too
    assert len(read_aperio_polygons(str(path))) == 3


def test_regions_of_several_annotations_are_read_in_document_order(tmp_path):
    path = tmp_path / "two.xml"
    path.write_text(
        "<Annotations>"
        '<Annotation Id="1"><Regions><Region Id="1"><Vertices>'
        '<Vertex X="0" Y="0"/><Vertex X="1" Y="0"/><Vertex X="1" Y="1"/>'
        "</Vertices></Region></Regions></Annotation>"
        '<Annotation Id="2"><Regions><Region Id="1"><Vertices>'
        '<Vertex X="5" Y="5"/><Vertex X="6" Y="5"/><Vertex X="6" Y="6"/>'
        "</Vertices></Region></Regions></Annotation>"
        "</Annotations>"
    )
    polygons = read_aperio_polygons(path)
    assert [p[0].tolist() for p in polygons] == [[0.0, 0.0], [5.0, 5.0]]


def test_degenerate_region_is_skipped_with_warning_and_gets_no_id(tmp_path, caplog):
    first = [(1, 1), (3, 1), (3, 3), (1, 3)]
    degenerate = [(5, 5), (6, 6)]
    last = [(6, 1), (8, 1), (8, 3), (6, 3)]
    path = write_aperio(tmp_path / "degenerate.xml", [first, degenerate, last])
    with caplog.at_level(logging.WARNING, logger="monai_medspike.data.aperio"):
        polygons = read_aperio_polygons(path)
    assert len(polygons) == 2
    np.testing.assert_array_equal(polygons[1], _yx(last))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert "degenerate.xml" in messages[0]
    assert "region 1 " in messages[0]

    mask = read_aperio_mask(path, (10, 10), mode="instance")
    # ids stay consecutive over the kept regions: the third Region is labelled 2
    assert sorted(np.unique(mask).tolist()) == [0, 1, 2]
    assert mask[2, 7] == 2
    assert mask[5, 5] == 0 and mask[6, 6] == 0


# ---------------------------------------------------------------------------------------------------------------------
# rasterisation, pixel for pixel
# ---------------------------------------------------------------------------------------------------------------------


SQUARE_EXPECTED = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)

TRIANGLE_EXPECTED = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 1, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)

FRACTIONAL_WITHOUT_OUTLINE = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)

FRACTIONAL_WITH_OUTLINE = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)


@pytest.mark.parametrize("outline", [True, False])
@pytest.mark.parametrize(
    ("vertices", "expected"),
    [(SQUARE, SQUARE_EXPECTED), (TRIANGLE, TRIANGLE_EXPECTED)],
    ids=["square", "triangle"],
)
def test_integer_polygons_include_their_edges_with_and_without_outline(tmp_path, vertices, expected, outline):
    path = write_aperio(tmp_path / "shape.xml", [vertices])
    mask = read_aperio_mask(path, (9, 9), outline=outline)
    assert mask.dtype == np.uint8
    assert mask.shape == (9, 9)
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    ("outline", "expected"), [(False, FRACTIONAL_WITHOUT_OUTLINE), (True, FRACTIONAL_WITH_OUTLINE)]
)
def test_outline_adds_the_boundary_pixels(tmp_path, outline, expected):
    path = write_aperio(tmp_path / "fractional.xml", [FRACTIONAL_SQUARE])
    np.testing.assert_array_equal(read_aperio_mask(path, (8, 8), outline=outline), expected)
    # the same through rasterize_polygons directly
    np.testing.assert_array_equal(rasterize_polygons([_yx(FRACTIONAL_SQUARE)], (8, 8), outline=outline), expected)


def test_binary_and_instance_ids_follow_region_order(tmp_path):
    # three disjoint squares, written right-to-left so that Region order differs from raster order
    right = [(7, 1), (9, 1), (9, 3), (7, 3)]
    middle = [(4, 1), (5, 1), (5, 3), (4, 3)]
    left = [(0, 5), (2, 5), (2, 7), (0, 7)]
    path = write_aperio(tmp_path / "three.xml", [right, middle, left])

    instance = read_aperio_mask(path, (10, 10), mode="instance")
    expected = np.zeros((10, 10), dtype=np.int32)
    expected[1:4, 7:10] = 1
    expected[1:4, 4:6] = 2
    expected[5:8, 0:3] = 3
    assert instance.dtype == np.int32
    np.testing.assert_array_equal(instance, expected)

    binary = read_aperio_mask(path, (10, 10), mode="binary")
    assert binary.dtype == np.uint8
    assert set(np.unique(binary).tolist()) == {0, 1}
    np.testing.assert_array_equal(binary, (expected > 0).astype(np.uint8))


def _overlapping_squares() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    first = [(1, 1), (4, 1), (4, 4), (1, 4)]  # rows/cols 1..4
    second = [(3, 3), (6, 3), (6, 6), (3, 6)]  # rows/cols 3..6; overlap rows/cols 3..4
    return first, second


def test_overlap_last_lets_the_later_region_win(tmp_path):
    path = write_aperio(tmp_path / "overlap.xml", list(_overlapping_squares()))
    expected = np.zeros((8, 8), dtype=np.int32)
    expected[1:5, 1:5] = 1
    expected[3:7, 3:7] = 2
    instance = read_aperio_mask(path, (8, 8), mode="instance", overlap="last")
    np.testing.assert_array_equal(instance, expected)
    assert instance[3, 3] == 2 and instance[4, 4] == 2 and instance[1, 1] == 1
    binary = read_aperio_mask(path, (8, 8), mode="binary", overlap="last")
    np.testing.assert_array_equal(binary, (expected > 0).astype(np.uint8))
    assert int(binary.sum()) == 16 + 16 - 4


def test_overlap_zero_makes_shared_pixels_background(tmp_path):
    path = write_aperio(tmp_path / "overlap.xml", list(_overlapping_squares()))
    expected = np.zeros((8, 8), dtype=np.int32)
    expected[1:5, 1:5] = 1
    expected[3:7, 3:7] = 2
    expected[3:5, 3:5] = 0
    for outline in (True, False):
        instance = read_aperio_mask(path, (8, 8), mode="instance", overlap="zero", outline=outline)
        np.testing.assert_array_equal(instance, expected)
        binary = read_aperio_mask(path, (8, 8), mode="binary", overlap="zero", outline=outline)
        np.testing.assert_array_equal(binary, (expected > 0).astype(np.uint8))
        assert int(binary.sum()) == 16 + 16 - 2 * 4


def test_overlap_zero_counts_outline_and_interior_of_one_region_once():
    # a single polygon whose outline and interior cover the same pixels must not vanish under overlap="zero"
    mask = rasterize_polygons([_yx(SQUARE)], (9, 9), overlap="zero", outline=True)
    np.testing.assert_array_equal(mask, SQUARE_EXPECTED)


def test_vertices_up_to_3px_outside_are_clipped(tmp_path):
    # X from -3 to 3 and Y from -2 to 8 on a 6x6 image: the polygon is cut at the border
    vertices = [(-3, -2), (3, -2), (3, 8), (-3, 8)]
    path = write_aperio(tmp_path / "clip.xml", [vertices])
    expected = np.zeros((6, 6), dtype=np.uint8)
    expected[:, 0:4] = 1
    for outline in (True, False):
        np.testing.assert_array_equal(read_aperio_mask(path, (6, 6), outline=outline), expected)

    # the same as drawing the shifted polygon on a larger canvas and cropping it (nothing drawn along the border)
    shifted = _yx(vertices) + 5.0
    for outline in (True, False):
        big = rasterize_polygons([shifted], (16, 16), outline=outline)
        small = rasterize_polygons([_yx(vertices)], (6, 6), outline=outline)
        np.testing.assert_array_equal(small, big[5:11, 5:11])


def test_partly_outside_polygon_on_far_border_is_clipped(tmp_path):
    # vertices beyond the bottom-right corner (up to 3 px) of a 6x6 image
    path = write_aperio(tmp_path / "corner.xml", [[(3, 3), (8, 3), (8, 8), (3, 8)]])
    expected = np.zeros((6, 6), dtype=np.uint8)
    expected[3:, 3:] = 1
    np.testing.assert_array_equal(read_aperio_mask(path, (6, 6)), expected)


def test_rasterize_without_polygons_is_empty():
    mask = rasterize_polygons([], (4, 5), mode="instance")
    assert mask.shape == (4, 5)
    assert mask.dtype == np.int32
    assert not mask.any()


# ---------------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------------


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "missing_annotation.xml"
    with pytest.raises(DataError, match="missing_annotation.xml"):
        read_aperio_polygons(path)
    with pytest.raises(DataError, match="missing_annotation.xml"):
        read_aperio_mask(path, (10, 10))


def test_truncated_xml(tmp_path):
    full = write_aperio(tmp_path / "full.xml", [SQUARE, TRIANGLE]).read_text()
    path = tmp_path / "truncated_annotation.xml"
    path.write_text(full[: len(full) // 2])
    with pytest.raises(DataError, match="truncated_annotation.xml") as info:
        read_aperio_polygons(path)
    assert "XML" in str(info.value)


def test_not_xml_at_all(tmp_path):
    path = tmp_path / "garbage_annotation.xml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError, match="garbage_annotation.xml"):
        read_aperio_mask(path, (10, 10))


def test_xml_without_region(tmp_path):
    path = write_aperio(tmp_path / "empty_annotation.xml", [])
    with pytest.raises(DataError, match="empty_annotation.xml") as info:
        read_aperio_polygons(path)
    assert "Region" in str(info.value)


def test_only_degenerate_regions(tmp_path):
    path = write_aperio(tmp_path / "lines_annotation.xml", [[(1, 1), (2, 2)], [(3, 3)]])
    with pytest.raises(DataError, match="lines_annotation.xml"):
        read_aperio_polygons(path)


@pytest.mark.parametrize(("x", "y"), [("abc", "1"), ("1", ""), ("nan", "2"), ("3", "inf")])
def test_non_numeric_vertex(tmp_path, x, y):
    path = write_aperio(tmp_path / "bad_vertex.xml", [SQUARE, [(1, 1), (x, y), (5, 5)]])
    with pytest.raises(DataError, match="bad_vertex.xml") as info:
        read_aperio_polygons(path)
    message = str(info.value)
    assert "region 1" in message
    assert "vertex 1" in message


def test_vertex_without_coordinates(tmp_path):
    path = tmp_path / "no_y.xml"
    path.write_text(
        '<Annotations><Annotation Id="1"><Regions><Region Id="1"><Vertices>'
        '<Vertex X="1" Y="1"/><Vertex X="2"/><Vertex X="3" Y="3"/>'
        "</Vertices></Region></Regions></Annotation></Annotations>"
    )
    with pytest.raises(DataError, match="no_y.xml") as info:
        read_aperio_polygons(path)
    assert "Y=None" in str(info.value)


def test_all_polygons_outside_the_image(tmp_path):
    path = write_aperio(
        tmp_path / "wrong_size.xml", [[(100, 100), (110, 100), (110, 110)], [(-20, 3), (-9, 3), (-9, 8)]]
    )
    with pytest.raises(DataError, match="wrong_size.xml"):
        read_aperio_mask(path, (10, 10))
    # the same annotation fits a larger image
    assert read_aperio_mask(path, (120, 120)).sum() > 0


def test_polygon_within_5px_of_the_border_is_not_outside(tmp_path):
    # rows/cols 12..14 on a 10x10 image: outside the image but within 5 px, so no error and an empty mask
    path = write_aperio(tmp_path / "near.xml", [[(12, 12), (14, 12), (14, 14)]])
    mask = read_aperio_mask(path, (10, 10))
    assert mask.shape == (10, 10)
    assert not mask.any()


def test_some_polygons_outside_is_fine(tmp_path):
    path = write_aperio(tmp_path / "mixed.xml", [[(100, 100), (110, 100), (110, 110)], SQUARE])
    mask = read_aperio_mask(path, (9, 9), mode="instance")
    # the outside polygon keeps id 1 but draws nothing
    np.testing.assert_array_equal(mask, SQUARE_EXPECTED.astype(np.int32) * 2)


@pytest.mark.parametrize(("argument", "kwargs"), [("mode", {"mode": "instances"}), ("overlap", {"overlap": "first"})])
def test_bad_mode_or_overlap(tmp_path, argument, kwargs):
    path = write_aperio(tmp_path / "ok.xml", [SQUARE])
    with pytest.raises(ValueError, match=argument) as info:
        read_aperio_mask(path, (9, 9), **kwargs)
    assert not isinstance(info.value, DataError)
    valid = ("binary", "instance") if argument == "mode" else ("last", "zero")
    assert all(v in str(info.value) for v in valid)
    with pytest.raises(ValueError, match=argument):
        rasterize_polygons([_yx(SQUARE)], (9, 9), **kwargs)


@pytest.mark.parametrize("shape", [(9,), (9, 9, 3), (0, 9), (9, -1), (9.5, 9), ("9", 9), 9, (True, 9)])
def test_bad_shape(tmp_path, shape):
    with pytest.raises(ValueError, match="shape"):
        rasterize_polygons([_yx(SQUARE)], shape)
    path = write_aperio(tmp_path / "ok.xml", [SQUARE])
    with pytest.raises(ValueError, match="shape"):
        read_aperio_mask(path, shape)


def test_numpy_integer_shape_is_accepted():
    mask = rasterize_polygons([_yx(SQUARE)], (np.int64(9), np.int32(9)))
    np.testing.assert_array_equal(mask, SQUARE_EXPECTED)


@pytest.mark.parametrize("polygon", [np.zeros((2, 2)), np.zeros((4, 3)), np.zeros(6), np.full((3, 2), np.nan)])
def test_bad_polygon(polygon):
    with pytest.raises(ValueError, match=r"polygons\[1\]"):
        rasterize_polygons([_yx(SQUARE), polygon], (9, 9))


# ---------------------------------------------------------------------------------------------------------------------
# the real MoNuSeg 2018 samples, when present
# ---------------------------------------------------------------------------------------------------------------------


def _real_pair(name: str) -> tuple[Path, Path]:
    if not MONUSEG.is_dir():
        pytest.skip(f"MoNuSeg 2018 samples not found at {MONUSEG}")
    xml = MONUSEG / "Annotations" / f"{name}.xml"
    tif = MONUSEG / "Tissue Images" / f"{name}.tif"
    if not xml.is_file() or not tif.is_file():
        pytest.skip(f"MoNuSeg 2018 sample {name} not found under {MONUSEG}")
    return xml, tif


@pytest.mark.parametrize(("name", "count"), sorted(REAL_COUNTS.items()))
def test_real_monuseg_samples(name, count):
    from PIL import Image

    xml, tif = _real_pair(name)
    with Image.open(tif) as image:
        cols, rows = image.size
    assert (rows, cols) == (1000, 1000)

    polygons = read_aperio_polygons(xml)
    assert len(polygons) == count
    stacked = np.concatenate(polygons)
    # vertices lie at most a few px outside the image
    assert stacked.min() >= -5.0
    assert stacked.max() <= 1000 + 5.0

    binary = read_aperio_mask(xml, (rows, cols))
    assert binary.dtype == np.uint8
    coverage = float(binary.mean())
    assert 0.05 <= coverage <= 0.60

    instance = read_aperio_mask(xml, (rows, cols), mode="instance", overlap="last")
    ids = np.unique(instance)
    ids = ids[ids > 0]
    assert int(instance.max()) <= count
    assert len(ids) >= 0.9 * count
    np.testing.assert_array_equal(instance > 0, binary > 0)

    # the conventions matter: no outline covers less, overlap="zero" covers no more than overlap="last"
    assert read_aperio_mask(xml, (rows, cols), outline=False).sum() < binary.sum()
    assert read_aperio_mask(xml, (rows, cols), overlap="zero").sum() <= binary.sum()
