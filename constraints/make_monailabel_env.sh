#!/usr/bin/env bash
# Builds the MONAI Label environment of monai_medspike once, and reuses it while its pins are unchanged.
#
#   bash constraints/make_monailabel_env.sh [ENV_DIR]        # prints ENV_DIR on its last line
#
# ENV_DIR defaults to $MONAI_MEDSPIKE_MONAILABEL_ENV, else ~/.cache/monai_medspike/monailabel-<pins>, where <pins>
# is a hash of constraints/monailabel.txt and pyproject.toml: changing either builds a new environment. It holds
# MONAI Label 0.8.5 with torch 2.14.1 + torchvision 0.29.1 and numpy 1.26.4 (constraints/monailabel.txt) and this
# project's dependencies; the project itself is not installed there: a .pth file, rewritten at every call, puts
# this checkout on the environment's path, so the code served and tested is always the checkout's own.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3.11}
command -v "$python" > /dev/null || python=python3
pins=$(cat "$repo/constraints/monailabel.txt" "$repo/pyproject.toml" | sha256sum | cut -c1-16)
env_dir=${1:-${MONAI_MEDSPIKE_MONAILABEL_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/monai_medspike/monailabel-$pins}}
stamp="$env_dir/.monai_medspike-pins"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then
    echo "reusing the MONAI Label environment $env_dir" >&2
else
    echo "building the MONAI Label environment $env_dir (about 10 minutes, 8 GB)" >&2
    start=$SECONDS
    rm -rf "$env_dir"
    "$python" -m venv "$env_dir"
    # the project with its extras resolves every dependency at the pins; the project itself is then removed again
    "$env_dir/bin/pip" install --quiet --progress-bar off -c "$repo/constraints/monailabel.txt" "$repo[monailabel,test]"
    "$env_dir/bin/pip" uninstall --quiet --yes monai-medspike
    echo "$pins" > "$stamp"  # written last: an interrupted build is rebuilt next time
    echo "built in $((SECONDS - start)) s" >&2
fi
site=$("$env_dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$repo" > "$site/monai_medspike_checkout.pth"
"$env_dir/bin/python" -c "import monailabel, monai_medspike.apps.monailabel.app" || {
    echo "the MONAI Label environment $env_dir does not import the app; remove it and run again" >&2
    exit 1
}
echo "$env_dir"
