"""Command line: ``python -m monai_medspike.data {prepare,demo} ...``.

Examples::

    python -m monai_medspike.data prepare kvasir --root ~/data/kvasir-seg --out ~/data/kvasir.json --seed 0
    python -m monai_medspike.data prepare busi --root ~/data/busi --out busi.json --protocol original
    python -m monai_medspike.data demo covid_ct --out ~/data/demo_covid_ct
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from monai_medspike.data.datalist import PROTOCOLS, prepare
from monai_medspike.data.demo import DEMO_DATASETS
from monai_medspike.data.errors import DataError
from monai_medspike.data.readers import READERS
from monai_medspike.data.splits import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from monai_medspike.utils import command_arguments

__all__ = ["main"]

# option -> (datasets that take it, reader keyword)
_READER_OPTIONS = {
    "exclude_normal": (("busi",), "include_normal"),
    "classes": (("covid", "covid_ct"), "classes"),
    "image_dir": (("covid_ct",), "image_dir"),
    "mask_dir": (("covid_ct",), "mask_dir"),
    "no_outline": (("monuseg",), "outline"),
    "overlap": (("monuseg",), "overlap"),
    "channels": (("folder",), "channels"),
}


def _format_summary(summary: dict, out: Path) -> str:
    lines = [f"wrote {out}: {summary['total']} {summary['dataset']} samples"]
    for split, entry in summary["splits"].items():
        classes = entry.get("classes")
        extra = f"  {classes}" if classes else ""
        lines.append(f"  {split:<11} {entry['count']:>6} samples in {entry['groups']:>6} groups{extra}")
    sizes = summary["sizes"]
    lines.append(f"  sizes       min {sizes['min']}  max {sizes['max']}  ({sizes['distinct']} distinct)")
    cov = summary["mask_coverage"]
    lines.append(
        f"  mask cover  mean {cov['mean']:.1%}  min {cov['min']:.1%}  max {cov['max']:.1%}  empty {cov['empty']}"
    )
    if "class_fraction" in summary:
        lines.append(f"  class share {summary['class_fraction']}")
    if "slices" in summary:
        lines.append(f"  slices      {summary['slices']['total']} in all, {summary['slices']['with_mask']} with mask")
    if summary["skipped"]:
        lines.append(f"  skipped {len(summary['skipped'])}:")
        lines += [f"    {s}" for s in summary["skipped"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_medspike.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="check a release folder and write a MONAI datalist JSON")
    p.add_argument("dataset", choices=list(READERS))
    p.add_argument("--root", type=Path, required=True, help="the dataset folder as released")
    p.add_argument("--out", type=Path, required=True, help="the datalist JSON to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--val_fraction",
        "--val-fraction",
        type=float,
        default=DEFAULT_VAL_FRACTION,
        help="validation share (default 0.2)",
    )
    p.add_argument(
        "--test_fraction", type=float, default=DEFAULT_TEST_FRACTION,
        help="test share (default 0.2); 1 with --val_fraction 0 writes a test-only datalist (an external test set)",
    )  # fmt: skip
    p.add_argument("--protocol", choices=PROTOCOLS, default="default", help="'original': the paper's test share")
    p.add_argument("--skip_bad", action="store_true", help="leave out and list bad pairs instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace an existing datalist")
    p.add_argument(
        "--exclude_normal",
        "--exclude-normal",
        action="store_true",
        default=None,
        help="busi: leave out 'normal' images",
    )
    p.add_argument("--classes", choices=("binary", "multiclass"), default=None, help="covid, covid_ct")
    p.add_argument("--image_dir", default=None, help="covid_ct: folder of the volumes (default 'ct')")
    p.add_argument("--mask_dir", default=None, help="covid_ct: folder of the masks (default 'infection_mask')")
    p.add_argument("--no_outline", action="store_true", default=None, help="monuseg: polygon outline is background")
    p.add_argument("--overlap", choices=("last", "zero"), default=None, help="monuseg: overlapping nuclei")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="folder: image channels (default 3)")

    d = sub.add_parser("demo", help="write a small synthetic dataset in the release layout")
    d.add_argument("dataset", choices=[*DEMO_DATASETS, "all"])
    d.add_argument("--out", type=Path, required=True, help="folder to create (must not exist or be empty)")
    d.add_argument("--count", type=int, default=None, help="number of images / volumes (default per dataset)")
    d.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(command_arguments(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "demo":
            from monai_medspike.data.demo import make_all_demo_datasets, make_demo_dataset

            if args.dataset == "all":
                if args.count is not None:
                    parser.error("--count applies to one dataset, not 'all'")
                for name, path in make_all_demo_datasets(args.out, seed=args.seed).items():
                    print(f"{name}: {path}")
            else:
                print(make_demo_dataset(args.dataset, args.out, count=args.count, seed=args.seed))
            return 0

        options = {}
        for option, (datasets, keyword) in _READER_OPTIONS.items():
            value = getattr(args, option)
            if value is None:
                continue
            if args.dataset not in datasets:
                parser.error(f"--{option} applies to {', '.join(datasets)} only")
            options[keyword] = not value if option in ("exclude_normal", "no_outline") else value
        summary = prepare(
            args.dataset,
            args.root,
            args.out,
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            protocol=args.protocol,
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
            **options,
        )
    except (DataError, ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_format_summary(summary, args.out))
    logging.getLogger(__name__).debug(json.dumps(summary))
    return 0


if __name__ == "__main__":
    from monai_medspike.errors import run_command

    sys.exit(run_command(main))
