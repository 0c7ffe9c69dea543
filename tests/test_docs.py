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
