#!/usr/bin/env bash
# The main job end to end on an embedded default: a small synthetic dataset in the Spk-GoPro layout,
# its align log, a decoded and previewed spike stream, then the voxelized Zarr store, verified and
# previewed. Run through `make demo` (which sets up $VENV).
set -euo pipefail
VENV=${VENV:-.venv-demo}
OUT=${OUT:-demo_out}
bin="$VENV/bin"

echo "== 1. synthesize a raw dataset (train + test splits) -> $OUT/raw"
"$bin/svrt-data" synth "$OUT/raw" --sequences 2 --test-sequences 1 --frames 6 --size 128x256 \
  --spike-scale 0.5 --seed 0 --overwrite

echo "== 2. validate its align log against the streams"
"$bin/svrt-data" align "$OUT/raw" --validate "$OUT/raw/align.csv"

echo "== 3. decode one spike stream and preview it -> $OUT/preview.png"
first=$(find "$OUT/raw/train" -name '*.dat' | sort | head -n 1)
"$bin/svrt-data" inspect "$first" --geometry 64x128 --flip --png "$OUT/preview.png"

echo "== 4. voxelize into a Zarr store (K=32 count voxels, Numba) -> $OUT/store.zarr"
"$bin/svrt-data" voxelize "$OUT/raw" --out "$OUT/store.zarr" --bins 32 --mode count --backend auto --overwrite

echo "== 5. verify the store (shapes, windows, checksums)"
"$bin/svrt-data" verify "$OUT/store.zarr"

echo "== 6. inspect the store and preview a frame -> $OUT/store.png"
"$bin/svrt-data" inspect "$OUT/store.zarr" --png "$OUT/store.png"

echo "demo finished: outputs in $OUT/"
