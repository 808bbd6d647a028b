"""What a training run reports (rank 0 only): a tqdm bar, ``metrics.jsonl``, TensorBoard when installed, PNG grids.

``RUN_DIR/metrics.jsonl`` holds one JSON object per line: ``{"kind": "train", "step", "loss", "lr",
"grad_norm", "clips_per_s", "data_wait", "skipped", ...}`` every ``log.every`` steps and
``{"kind": "val", "step", "psnr_input", "psnr_output", "ssim_input", "ssim_output"}`` after each validation.
``data_wait`` is the share of the interval's wall time the loop spent waiting for batches. A resumed run
first drops the lines of steps after its checkpoint (they are trained again). Grids go to
``RUN_DIR/images/step_NNNNNNN.png``: blurry | spike count | output | sharp, the middle frame of the
batch's first clip.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from svrt_data.preview import save_png
from svrt_model.train.checkpoint import atomic_write_text

try:  # optional: the `tensorboard` extra; training never needs it
    from torch.utils.tensorboard import SummaryWriter
except ImportError:
    SummaryWriter = None

__all__ = ["RunLogger", "grid_image"]


def _rgb(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8."""
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # H W C


def grid_image(blur: torch.Tensor, spikes: torch.Tensor, output: torch.Tensor, sharp: torch.Tensor) -> np.ndarray:
    """One row ``blurry | spike count | output | sharp`` as uint8 ``(H, 4W, 3)``.

    Args:
        blur, output, sharp: ``(3, H, W)`` float in [0, 1].
        spikes: ``(K, Hs, Ws)`` voxel counts (any dtype); shown as their sum over K, stretched to white at
            the maximum and resized to ``H x W`` (nearest).
    """
    h, w = blur.shape[-2:]
    count = spikes.detach().float().sum(0)
    count = count / count.max().clamp_min(1e-12)
    count = torch.nn.functional.interpolate(count[None, None], size=(h, w), mode="nearest")[0].expand(3, h, w)
    return np.concatenate([_rgb(blur), _rgb(count), _rgb(output), _rgb(sharp)], axis=1)


class RunLogger:
    """Reports of one run; every method is a no-op on ranks other than 0.

    Args:
        run_dir: the run directory.
        total_steps, start_step: for the progress bar.
        enabled: this process logs (rank 0).
        progress: show the tqdm bar.
        tensorboard: write TensorBoard events to ``RUN_DIR/tb`` when ``tensorboard`` is installed.
    """

    def __init__(self, run_dir: str | Path, *, total_steps: int, start_step: int, enabled: bool,
                 progress: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.bar = None
        self.tb = None
        self._metrics = None
        if not enabled:
            return
        path = self.run_dir / "metrics.jsonl"
        if path.exists():  # a resumed run: steps after its checkpoint are trained again
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._metrics = path.open("a")
        if tensorboard and SummaryWriter is not None:
            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not progress,
                        dynamic_ncols=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line (and its numbers to TensorBoard under ``kind/name``)."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._metrics.write(json.dumps(clean) + "\n")
        self._metrics.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "kind") and math.isfinite(v):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record["step"])

    def advance(self, n: int, **postfix: Any) -> None:
        """Move the bar by ``n`` steps; ``postfix`` (loss, lr, clips/s, wait) is shown beside it."""
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def note(self, text: str) -> None:
        """A line above the bar (and nothing else: notes are not metrics)."""
        if self.enabled:
            tqdm.write(text)

    def images(self, step: int, batch: dict[str, Any], output: torch.Tensor) -> Path | None:
        """Save the grid of the first clip's middle frame; ``batch`` is the transformed batch with raw counts
        under ``counts``."""
        if not self.enabled:
            return None
        t = output.shape[1] // 2
        grid = grid_image(batch["blur"][0, t], batch["counts"][0, t], output[0, t], batch["sharp"][0, t])
        path = save_png(grid, self.run_dir / "images" / f"step_{step:07d}.png")
        if self.tb is not None:
            self.tb.add_image("train/grid", grid, step, dataformats="HWC")
        return path

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._metrics is not None:
            self._metrics.close()
        if self.tb is not None:
            self.tb.close()
