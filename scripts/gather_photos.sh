#!/usr/bin/env bash
# Gather the nano model's training/held-out photos into data/photos/ (git-ignored):
# scikit-image's bundled photos (pip download of the wheel) and photographic
# wallpapers of Debian packages (apt-get download; nothing is installed).
# See export/photos.py for the selection, the licenses and the split.
#   scripts/gather_photos.sh [--out DIR] [--max-side PX] [--list]
set -euo pipefail
cd "$(dirname "$0")/.."
V=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tadsr-edge/venv-$(sha256sum export/requirements.txt | cut -c1-16)}
if [ ! -x "$V/bin/python" ]; then
    echo "error: no export venv at $V (run make setup, or set VENV)" >&2
    exit 2
fi
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$V/bin/python" -m export.photos "$@"
