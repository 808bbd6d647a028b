"""Evaluating a model on a store's split: PSNR / SSIM of the blurry input and of the restored output.

:func:`evaluate_split` restores every sequence with :func:`svrt_model.restore.restorer.restore_split` (the
published tiling, or untiled), rounds the output to 8-bit frames, and measures each frame against its
sharp frame with :mod:`svrt_model.metrics`. The :class:`EvalReport` holds every frame's scores; a
sequence's score is the mean over its frames, and the overall score is the mean over ALL frames of
the split (so long sequences weigh more, as a per-frame average in the papers does).

``EvalReport.to_json()`` is a contract used outside the repository::

    {"overall": {"psnr_input", "psnr_output", "ssim_input", "ssim_output"},
     "sequences": {name: {"psnr_input", "psnr_output", "ssim_input", "ssim_output", "frames"}}}

PSNR is ``+inf`` for a frame identical to its sharp frame, and so is any mean that includes one: the
JSON (strict, no ``Infinity``) writes such a value as ``null``; the table and CSV write ``inf``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from svrt_data.loader.spike_transform import SpikeTransform
from svrt_data.store.reader import SvrtStore
from svrt_errors import StoreLayoutError, SvrtValueError
from svrt_model.metrics import psnr, ssim
from svrt_model.restore.restorer import RestoredSequence, RestoreModel, model_device, restore_split
from svrt_model.restore.tiling import InputRules, Tile

__all__ = ["METRIC_KEYS", "EvalReport", "SequenceScores", "evaluate_split", "score_sequence"]

METRIC_KEYS = ("psnr_input", "psnr_output", "ssim_input", "ssim_output")


@dataclass(frozen=True)
class SequenceScores:
    """Per-frame scores of one sequence (float64 arrays of its N frames, in frame order)."""

    frame_names: tuple[str, ...]
    psnr_input: np.ndarray
    psnr_output: np.ndarray
    ssim_input: np.ndarray
    ssim_output: np.ndarray

    def __len__(self) -> int:
        return len(self.frame_names)

    def means(self) -> dict[str, float]:
        return {k: float(np.mean(getattr(self, k))) for k in METRIC_KEYS}


def score_sequence(seq: RestoredSequence, *, device: torch.device | str = "cpu", chunk: int = 8) -> SequenceScores:
    """PSNR / SSIM of every frame of ``seq`` (input and output against sharp), ``chunk`` frames at a time."""
    if seq.sharp is None:
        raise SvrtValueError(f"sequence {seq.key} has no sharp frames to measure against")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in METRIC_KEYS}
    for a in range(0, seq.output.shape[0], chunk):
        target = seq.sharp[a : a + chunk].to(device)
        for which, frames in (("input", seq.blur), ("output", seq.output)):
            x = frames[a : a + chunk].to(device)
            out[f"psnr_{which}"].append(psnr(x, target).cpu())
            out[f"ssim_{which}"].append(ssim(x, target).cpu())
    arrays = {k: torch.cat(v).numpy() for k, v in out.items()}
    return SequenceScores(tuple(seq.frame_names), **arrays)


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class EvalReport:
    """Scores of a split, per sequence (in store order) and overall (the mean over all frames)."""

    sequences: dict[str, SequenceScores]

    def overall(self) -> dict[str, float]:
        if not self.sequences:
            raise SvrtValueError("EvalReport: no sequences were evaluated")
        return {k: float(np.mean(np.concatenate([getattr(s, k) for s in self.sequences.values()])))
                for k in METRIC_KEYS}

    @property
    def frames(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def to_json(self) -> dict:
        """The contract dict (module docstring); non-finite values become None (JSON null)."""
        seqs = {}
        for name, s in self.sequences.items():
            seqs[name] = {k: _finite_or_none(v) for k, v in s.means().items()} | {"frames": len(s)}
        return {"overall": {k: _finite_or_none(v) for k, v in self.overall().items()}, "sequences": seqs}

    def write_json(self, path: str | os.PathLike) -> None:
        _write_text(path, json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")

    def write_csv(self, path: str | os.PathLike) -> None:
        """One row per frame (``sequence, frame, psnr_input, psnr_output, ssim_input, ssim_output``), then a
        ``mean`` row per sequence and the ``overall`` ``mean`` row."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["sequence", "frame", *METRIC_KEYS])
        for name, s in self.sequences.items():
            for i, frame in enumerate(s.frame_names):
                w.writerow([name, frame, *(repr(float(getattr(s, k)[i])) for k in METRIC_KEYS)])
        for name, s in self.sequences.items():
            w.writerow([name, "mean", *(repr(v) for v in s.means().values())])
        w.writerow(["overall", "mean", *(repr(v) for v in self.overall().values())])
        _write_text(path, buf.getvalue())

    def table(self) -> str:
        """The printed table: one row per sequence and the overall row."""
        head = (f"{'sequence':<24} {'frames':>6} {'PSNR in':>8} {'PSNR out':>8} {'gain':>7} {'SSIM in':>8} "
                f"{'SSIM out':>8}")
        lines = [head, "-" * len(head)]

        def row(name: str, n: int, m: dict[str, float]) -> str:
            return (f"{name:<24} {n:>6} {m['psnr_input']:>8.2f} {m['psnr_output']:>8.2f} "
                    f"{m['psnr_output'] - m['psnr_input']:>+7.2f} {m['ssim_input']:>8.4f} {m['ssim_output']:>8.4f}")

        for name, s in self.sequences.items():
            lines.append(row(name, len(s), s.means()))
        lines.append("-" * len(head))
        lines.append(row("overall (mean of frames)", self.frames, self.overall()))
        return "\n".join(lines)


def _write_text(path: str | os.PathLike, text: str) -> None:
    """Write beside, then swap in: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def evaluate_split(
    model: RestoreModel | nn.Module,
    store: str | os.PathLike,
    split: str,
    *,
    tile: Tile | None,
    transform: SpikeTransform,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    batch_size: int = 1,
    clip_len: int | None = None,
    sequences: Iterable[str] | None = None,
    rules: InputRules | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> EvalReport:
    """Restore a split and score it (module docstring); arguments as :func:`~svrt_model.restore.restorer.restore_split`.

    Raises:
        StoreLayoutError: a sequence has no sharp frames (restore it with ``svrt-model infer`` instead).
    """
    st = SvrtStore(store)
    names = list(sequences) if sequences is not None else None
    lacking = [q for s, q in st.sequence_keys() if s == split and (names is None or q in names)
               and "sharp" not in st.sequence(s, q).group]
    if lacking:
        raise StoreLayoutError(f"{st.path}: evaluation needs sharp frames, but sequence(s) {lacking} of split "
                               f"{split!r} have none; leave them out (sequences=...) or restore them with "
                               "`svrt-model infer`")
    scores = {}
    for seq in restore_split(model, store, split, tile=tile, transform=transform, device=device, precision=precision,
                             batch_size=batch_size, clip_len=clip_len, sequences=names, sharp=True, rules=rules,
                             num_workers=num_workers, progress=progress):
        scores[seq.name] = score_sequence(seq, device=model_device(model, device))
    return EvalReport(scores)

