"""``python -m monai_medspike.apps.monailabel [APP_DIR]``: the folder to pass to ``monailabel start_server --app``.

Without an argument, prints the app folder shipped in this package. MONAI Label writes ``logs/``, ``model/``,
``lib/`` and ``bin/`` into the app folder, so where the package is not writable, give ``APP_DIR``: the thin
``main.py`` is copied there (the folder is created) and its path printed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from monai_medspike.apps.monailabel.bundles import app_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monai_medspike.apps.monailabel", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "app_dir", nargs="?", help="folder to write the app's main.py into (default: print the packaged one)"
    )
    args = parser.parse_args(argv)
    if args.app_dir is None:
        print(app_dir())
        return 0
    target = Path(args.app_dir)
    if target.exists() and not target.is_dir():
        print(f"error: {target} exists and is not a folder; give a new or existing folder.", file=sys.stderr)
        return 2
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(app_dir() / "main.py", target / "main.py")
    print(target.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
