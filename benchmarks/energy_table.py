"""Energy per image of trained students of both layouts, their ANN twins and MONAI networks, from a comparison.

Reads the students a ``python -m monai_medspike.compare`` run trained (models ``student`` and
``student_spike_driven``, any seeds), counts each one with ``python -m monai_medspike.energy`` on the validation
images of the comparison's datalist at ``--image_size``, and prints and writes (JSON and Markdown) per layout: the
student's firing rate, MACs, SOPs and energy (mean and std over seeds), its ANN twin's energy and the MONAI
networks' (MACs only, so independent of training). Run alone: it is CPU-bound.

python benchmarks/energy_table.py --bundle bundles/kvasir --compare results/kvasir --image_size 256 256 \
    --images 8 --json benchmarks/results/energy_kvasir.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _bench import write_json

from monai_medspike.energy.__main__ import main as energy_main

LAYOUTS = {"student": "published", "student_spike_driven": "spike_driven"}


def students(compare: Path) -> dict[str, list[tuple[int, str]]]:
    """``{layout: [(seed, checkpoint)]}`` of the students a comparison trained."""
    found: dict[str, list[tuple[int, str]]] = {}
    for result in sorted(compare.glob("runs/*/result.json")):
        for row in json.loads(result.read_text())["rows"]:
            if row["model"] in LAYOUTS:
                found.setdefault(LAYOUTS[row["model"]], []).append((int(row["seed"]), row["checkpoint"]))
    if not found:
        raise SystemExit(f"--compare {compare}: no trained student or student_spike_driven under runs/*/result.json")
    return found


def count(bundle: str, datalist: Path, layout: str, checkpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "energy.json"
        argv = ["--bundle", bundle, "--datalist", str(datalist), "--layout", layout, "--checkpoint", checkpoint,
                "--images", str(args.images), "--image_size", *map(str, args.image_size), "--output_root", tmp,
                "--top", "1", "--json", str(out)]  # fmt: skip
        if energy_main(argv) != 0:
            raise SystemExit(f"python -m monai_medspike.energy {' '.join(argv)} failed")
        return json.loads(out.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--compare", required=True, help="the --out folder of a comparison")
    p.add_argument("--image_size", type=int, nargs=2, default=[256, 256])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--json", help="output JSON (default benchmarks/results/energy_table.json)")
    args = p.parse_args()
    compare = Path(args.compare)
    datalist = compare / "datalist.json"
    table: dict[str, Any] = {"bundle": args.bundle, "image_size": args.image_size, "images": args.images, "rows": []}
    for layout, runs in sorted(students(compare).items()):
        reports = [count(args.bundle, datalist, layout, ckpt, args) for _, ckpt in sorted(runs)]
        rows = [{r["network"]: r for r in rep["comparison"]} for rep in reports]
        student = next(n for n in rows[0] if n.startswith(f"MedSpikeFormer {layout} (spiking"))
        twin = next(n for n in rows[0] if n.startswith(f"MedSpikeFormer {layout} ANN twin"))
        energy = mean_std([r[student]["energy_mj"] for r in rows])
        entry = {
            "layout": layout,
            "seeds": [s for s, _ in sorted(runs)],
            "firing_rate": mean_std([rep["firing_rate"] for rep in reports]),
            "spike_input_rate": mean_std([rep["spike_input_rate"] for rep in reports]),
            "macs_g": mean_std([r[student]["macs"] / 1e9 for r in rows]),
            "sops_g": mean_std([r[student]["sops"] / 1e9 for r in rows]),
            "neuron_updates_m": mean_std([rep["neuron_updates"] / 1e6 for rep in reports]),
            "energy_mj": energy,
            "others_mj": {n: rows[0][n]["energy_mj"] for n in rows[0] if n != student},
        }
        entry["ratio_to_twin"] = energy[0] / entry["others_mj"][twin]
        entry["ratio_to_unet"] = energy[0] / entry["others_mj"]["MONAI UNet"]
        table["rows"].append(entry)
        print(f"{layout}: student {energy[0]:.3f} ± {energy[1]:.3f} mJ per image over seeds {entry['seeds']}, "
              f"firing rate {entry['firing_rate'][0]:.4f}, spike inputs {entry['spike_input_rate'][0]:.4f}, "
              f"{entry['ratio_to_twin']:.3f} x its ANN twin, {entry['ratio_to_unet']:.2f} x MONAI UNet")  # fmt: skip
        for name, value in entry["others_mj"].items():
            print(f"    {name}: {value:.3f} mJ")
    path = write_json(table, args.json, "energy_table.json")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
