from __future__ import annotations

import re
from pathlib import Path

from monai_medspike.networks.nets import MedSpikeFormer

DOC = Path(__file__).resolve().parents[1] / "docs" / "network.md"


def test_documented_parameter_count_is_the_real_one():
    text = DOC.read_text()
    documented = int(re.search(r"middle \(default\).*?\*\*([\d,]+)\*\*", text).group(1).replace(",", ""))
    actual = sum(p.numel() for p in MedSpikeFormer().parameters())
    assert documented == actual
    assert "1.7369 M" in text


def test_every_test_named_in_the_reliability_table_exists():
    import ast

    root = Path(__file__).resolve().parent
    text = (root.parent / "docs" / "reliability.md").read_text()
    named = 0
    for row in (line for line in text.splitlines() if line.startswith("| ") and "::" in line):
        current = None
        for ref in re.findall(r"`([\w/]*\.py)?::(\w+)`", row.split("|")[-2]):
            current = ref[0] or current
            tree = ast.parse((root / current).read_text())
            functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert ref[1] in functions, f"{current}::{ref[1]} is named in docs/reliability.md but does not exist"
            named += 1
    assert named >= 30


def test_the_settings_table_of_docs_bundles_md_is_the_declarations():
    """docs/bundles.md shows monai_medspike.settings.settings_table() as it is (regenerate it after a change)."""
    from monai_medspike.settings import SETTINGS, settings_table

    text = (Path(__file__).resolve().parents[1] / "docs" / "bundles.md").read_text()
    start = text.index("<!-- settings table: generated from monai_medspike.settings.SETTINGS")
    table = text[text.index("\n", start) + 1 : text.index("<!-- end of the settings table -->")]
    assert table == settings_table()
    assert all(f"| `{name}` |" in table for name in SETTINGS)
