#!/usr/bin/env bash
# The device call sends the working tree, capped at 64 MiB. `aside.sh move` sets the shipped files a GPU
# training run does not read (the ensemble, the other members, the gate, the 64 px masks: about 62 MB) aside
# in $ASIDE (default /tmp/boneage-gpu-aside); `aside.sh back` puts them back. Run `git status` after `back`:
# it must show nothing deleted.
set -euo pipefail
ASIDE=${ASIDE:-/tmp/boneage-gpu-aside}
FILES=(
  assets/models/boneage-lite0-ens.pt
  assets/models/boneage-lite0-224.pt
  assets/models/boneage-lite0-256-long.pt
  assets/models/boneage-gate.pt
  assets/models/hand-localizer.pt
  assets/models/members/boneage-lite0-299-warm.pt
  assets/models/members/boneage-lite0-carpal-224.pt
  assets/localize/rsna-train-masks64.npz
)
case "${1:-}" in
  move)
    for f in "${FILES[@]}"; do
      if [ -e "$f" ]; then mkdir -p "$ASIDE/$(dirname "$f")"; mv "$f" "$ASIDE/$f"; fi
    done ;;
  back)
    for f in "${FILES[@]}"; do
      if [ -e "$ASIDE/$f" ]; then mv "$ASIDE/$f" "$f"; fi
    done ;;
  *) echo "usage: $0 move|back" >&2; exit 2 ;;
esac
