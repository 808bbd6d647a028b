"""PSNR + SSIM throughput of svrt's torch metrics against scikit-image (the baseline), in one table.

Pairs of uint8 RGB frames (a photograph and a shifted, noisier copy, so SSIM is far from 1) of
``--size`` (default 720x1280, GoPro), both metrics per frame. Rows:

- ``scikit-image (CPU, float64)``: ``peak_signal_noise_ratio`` + ``structural_similarity(channel_axis=-1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``, frame by frame: what
  evaluation scripts of the field call;
- ``svrt torch CPU float64``: :func:`svrt_model.metrics.psnr` / :func:`~svrt_model.metrics.ssim` on a
  batch of ``--batch`` frames;
- ``svrt torch GPU float64`` / ``float32``: the same on CUDA (frames already on the device, as in
  ``svrt-model eval``), synchronised around each batch.

Every row is checked against scikit-image on the first batch before it is timed (max |diff| column).

    python benchmarks/bench_metrics.py [--size 720x1280] [--frames 16] [--batch 8] [--no-gpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svrt_model.metrics import psnr, ssim  # noqa: E402


def frames(n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data, transform

    photo = transform.resize(data.astronaut(), (h + 8, w + 16), preserve_range=True).astype(np.float64)
    rng = np.random.default_rng(0)
    a, b = [], []
    for i in range(n):
        dy, dx = i % 4, (i * 3) % 8
        a.append(photo[dy : dy + h, dx : dx + w])
        b.append(photo[dy + 1 : dy + 1 + h, dx + 2 : dx + 2 + w] + rng.normal(0, 6, (h, w, 3)))
    to_u8 = lambda x: np.clip(np.round(x), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(np.stack(a)), to_u8(np.stack(b))


def sk_metrics(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    return np.array([[peak_signal_noise_ratio(y, x, data_range=255),
                      structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=255)] for x, y in zip(a, b,
                                                                                                          strict=True)])


def torch_metrics(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    out = torch.stack([psnr(a, b, dtype=dtype), ssim(a, b, dtype=dtype)], dim=-1)
    return out.double().cpu().numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="720x1280")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--no-gpu", action="store_true")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    a, b = frames(args.frames, h, w)
    ta, tb = torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2)  # N 3 H W
    reference = sk_metrics(a[: args.batch], b[: args.batch])
    rows = []

    def timed(name: str, run, n_batches: int, check) -> None:
        err = float(np.abs(check - reference).max())
        times = []
        for _ in range(n_batches):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        per_frame = statistics.median(times) / args.batch * 1e3
        rows.append((name, per_frame, err))

    n = max(args.frames // args.batch, 1)
    timed("scikit-image (CPU, float64)", lambda: sk_metrics(a[: args.batch], b[: args.batch]), n, reference)
    timed("svrt torch CPU float64", lambda: torch_metrics(ta[: args.batch], tb[: args.batch], torch.float64), n,
          torch_metrics(ta[: args.batch], tb[: args.batch], torch.float64))
    if not args.no_gpu and torch.cuda.is_available():
        ga, gb = ta.cuda(), tb.cuda()
        for dtype in (torch.float64, torch.float32):
            def run(dtype: torch.dtype = dtype) -> None:
                torch_metrics(ga[: args.batch], gb[: args.batch], dtype)
                torch.cuda.synchronize()

            check = torch_metrics(ga[: args.batch], gb[: args.batch], dtype)
            run()  # warm-up (cuDNN, allocator)
            timed(f"svrt torch GPU {str(dtype).removeprefix('torch.')}", run, n * 4, check)
    base = rows[0][1]
    machine = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.no_gpu else "CPU only"
    print(f"PSNR + SSIM of {h}x{w} RGB uint8 frames, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, GPU: {machine}")
    print("| implementation | ms per frame | speed-up vs scikit-image | max abs diff vs scikit-image |")
    print("| --- | ---: | ---: | ---: |")
    for name, ms, err in rows:
        print(f"| {name} | {ms:.2f} | {base / ms:.1f}x | {err:.1e} |")


if __name__ == "__main__":
    main()
