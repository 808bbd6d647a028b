"""The demo's closing report: how much sharper the VRT+Spike output is than the blurry input, in numbers and a PNG.

    python scripts/demo_report.py EVAL.json --store STORE.zarr --split test --frames FRAMES_DIR --png STRIP.png

Reads ``svrt-model eval --json`` (``{"overall": {psnr_input, psnr_output, ssim_input, ssim_output},
"sequences": {...}}``) and the frames ``svrt-model infer`` wrote (``FRAMES_DIR/<sequence>/<frame>.png``);
prints PSNR/SSIM of input and output and the gain, and saves a strip per test sequence: rows blurry |
output | sharp, columns the first, middle and last frame. Exits with status 1 when the output does not
beat the input by ``--bar`` dB (1 by default: the demo's quality bar).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svrt_data import SpikeDeblurDataset  # noqa: E402


def strip(store: Path, split: str, sequence: str, frames_dir: Path) -> np.ndarray:
    """``(3 H, 3 W, 3)`` uint8: rows blurry | output | sharp, columns first / middle / last frame."""
    ds = SpikeDeblurDataset(store, split, clip_len=1, mode="eval", sequences=[sequence], spike_input="none",
                            sharp=True)
    n = len(ds)
    outputs = sorted((frames_dir / sequence.split("/")[-1]).glob("*.png"))
    if len(outputs) != n:
        raise SystemExit(f"{frames_dir}: expected {n} restored frames of {sequence}, found {len(outputs)}")
    columns = []
    for i in sorted({0, n // 2, n - 1}):
        item = ds[i]
        blur, sharp = (item[k][0].permute(1, 2, 0).numpy() for k in ("blur", "sharp"))  # H W C
        out = np.asarray(Image.open(outputs[i]).convert("RGB"))
        columns.append(np.concatenate([blur, out, sharp], axis=0))
    return np.concatenate(columns, axis=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_json", type=Path)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=Path, required=True, help="svrt-model infer --out folder")
    p.add_argument("--png", type=Path, required=True)
    p.add_argument("--bar", type=float, default=1.0, help="required PSNR gain in dB")
    args = p.parse_args(argv)
    report = json.loads(args.eval_json.read_text())
    o = report["overall"]
    gain = o["psnr_output"] - o["psnr_input"]
    print(f"held-out split {args.split!r}, {len(report['sequences'])} sequence(s):")
    print(f"  blurry input      PSNR {o['psnr_input']:6.2f} dB   SSIM {o['ssim_input']:.4f}")
    print(f"  VRT+Spike output  PSNR {o['psnr_output']:6.2f} dB   SSIM {o['ssim_output']:.4f}")
    print(f"  gain              {gain:+6.2f} dB        {o['ssim_output'] - o['ssim_input']:+.4f}")
    for name, s in report["sequences"].items():
        print(f"  {name}: {s['psnr_input']:.2f} -> {s['psnr_output']:.2f} dB")
    rows = [strip(args.store, args.split, name, args.frames) for name in report["sequences"]]
    args.png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.png)
    print(f"strip: {args.png} (per sequence, rows: blurry | output | sharp; columns: first, middle, last frame)")
    ok = gain >= args.bar
    print(f"{'PASS' if ok else 'FAIL'}: the output is {gain:+.2f} dB over the blurry input (bar: +{args.bar:g} dB)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
