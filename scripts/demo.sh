#!/usr/bin/env bash
# The main job end to end on the CPU: raw spikes -> Zarr store -> loader -> VRT+Spike -> sharp frames, with a
# measured gain. A small synthetic dataset in the Spk-GoPro layout (train sequences and a held-out test
# sequence), its align log, the voxelized store, a `tiny` VRT+Spike trained on it, then the test sequence
# restored and scored against its blurry input. Run through `make demo` (which sets up $VENV).
set -euo pipefail
VENV=${VENV:-.venv-demo}
OUT=${OUT:-demo_out}
bin="$VENV/bin"
start=$(date +%s)
stamp() { echo "   ($(($(date +%s) - start)) s so far)"; }

echo "== 1. synthesize a raw dataset (4 train + 1 test sequences, strong camera motion) -> $OUT/raw"
"$bin/svrt-data" synth "$OUT/raw" --sequences 4 --test-sequences 1 --frames 8 --size 128x256 \
  --spike-scale 0.5 --motion 8 --source-frames 13 --seed 0 --overwrite
stamp

echo "== 2. validate its align log against the streams"
"$bin/svrt-data" align "$OUT/raw" --validate "$OUT/raw/align.csv"

echo "== 3. voxelize into a Zarr store (K=32 count voxels) and verify it -> $OUT/store.zarr"
"$bin/svrt-data" voxelize "$OUT/raw" --out "$OUT/store.zarr" --bins 32 --mode count --backend auto --overwrite
"$bin/svrt-data" verify "$OUT/store.zarr"
"$bin/svrt-data" inspect "$OUT/store.zarr" --png "$OUT/store.png"
stamp

run="$OUT/runs/$(date +%Y%m%d-%H%M%S)"  # a new run each time: nothing of an earlier run is deleted
echo "== 4. train the tiny VRT+Spike on the CPU (preset tiny) -> $run"
"$bin/svrt-model" train tiny --store "$OUT/store.zarr" --out "$run"
stamp

echo "== 5. restore the held-out test sequence and score it -> $OUT/eval.json, $OUT/eval.csv, $OUT/frames/"
# scored as validation scores it: whole frames in clips of the training length (--tile clip)
"$bin/svrt-model" eval "$run/best.pt" --store "$OUT/store.zarr" --split test --tile clip --json "$OUT/eval.json" \
  --csv "$OUT/eval.csv"
"$bin/svrt-model" infer "$run/best.pt" --store "$OUT/store.zarr" --split test --tile clip --out "$OUT/frames" \
  --overwrite
stamp

echo "== 6. report -> $OUT/report.txt, $OUT/strip.png"
"$bin/python" scripts/demo_report.py "$OUT/eval.json" --store "$OUT/store.zarr" --split test \
  --frames "$OUT/frames" --png "$OUT/strip.png" | tee "$OUT/report.txt"
echo "demo finished in $(($(date +%s) - start)) s: outputs in $OUT/"
