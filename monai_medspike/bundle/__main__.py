"""``python -m monai_medspike.bundle``: list the bundles shipped with the package, write one to a folder, or print
the path of the bundle metadata schema.

python -m monai_medspike.bundle list
python -m monai_medspike.bundle export covid my_covid_bundle
python -m monai.bundle run training --config_file my_covid_bundle/configs/train.json
python -m monai.bundle verify_metadata --meta_file my_covid_bundle/configs/metadata.json \
    --filepath "$(python -m monai_medspike.bundle schema)"
python -m monai_medspike.bundle sync [--check] [--bundles <folder>]   # generate the bundles' configs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monai_medspike.bundle import META_SCHEMA, export_bundle, shipped_bundles
from monai_medspike.utils import command_arguments


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_medspike.bundle", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped bundles and their folders")
    export = sub.add_parser("export", help="write a shipped bundle to a folder (then train, evaluate, serve it)")
    export.add_argument("name", help="bundle name (see `list`)")
    export.add_argument("folder", help="the bundle folder to write (new or empty)")
    export.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    sub.add_parser("schema", help="the path of the bundle metadata schema (for verify_metadata --filepath)")
    sync = sub.add_parser("sync", help="generate the configs of the bundles from their dataset records")
    sync.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the files that differ")
    sync.add_argument("--bundles", help="the folder holding the bundles (default: the checkout's bundles/)")
    args = parser.parse_args(command_arguments(argv))
    if args.command == "sync":
        return _sync(args.bundles, args.check)
    if args.command == "schema":
        print(META_SCHEMA)
        return 0
    if args.command == "list":
        for name, folder in shipped_bundles().items():
            print(f"{name}\t{folder}")
        return 0
    try:
        folder = export_bundle(args.name, args.folder, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {folder}; train it with: python -m monai.bundle run training --config_file {folder}/configs/train.json"
    )
    return 0


def _sync(folder: str | None, check: bool) -> int:
    from pathlib import Path

    from monai_medspike.bundle.sync import RECORD, discover, sync_bundles

    root = Path(folder) if folder else Path(__file__).resolve().parents[2] / "bundles"
    bundles = discover(root)
    if not bundles:
        print(f"error: no bundles (*/{RECORD}) under {root}; pass --bundles <folder>", file=sys.stderr)
        return 2
    try:
        changed = sync_bundles(bundles, write=not check)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'differs from its generated content' if check else 'rewrote'}: {path}")
    if check and changed:
        print("run: python -m monai_medspike.bundle sync", file=sys.stderr)
        return 1
    print(f"{len(bundles)} bundles {'match' if check else 'generated from'} their dataset records")
    return 0


if __name__ == "__main__":
    from monai_medspike.errors import run_command

    sys.exit(run_command(main))
