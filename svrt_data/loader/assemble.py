"""Whole sequences from the per-frame outputs of evaluation clips: :class:`SequenceAssembler`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from svrt_data.loader.dataset import SpikeDeblurDataset
from svrt_errors import SvrtValueError

__all__ = ["SequenceAssembler"]


class SequenceAssembler:
    """Puts per-frame outputs of evaluation clips back into whole sequences.

    A frame held by several clips (``stride < clip_len``, or the clip aligned to the end) gets the mean
    of its outputs. ``add`` takes batches ``(B, T, ...)`` with the batch's ``sequence`` and ``frames``;
    ``result(seq)`` returns ``(N, ...)`` float32 once every frame has an output.
    """

    def __init__(self, dataset: SpikeDeblurDataset) -> None:
        self.n_frames = {i.key: i.n_frames for i in dataset.infos}
        self._sum: dict[str, torch.Tensor] = {}
        self._count: dict[str, torch.Tensor] = {}

    def add(self, outputs: torch.Tensor, sequences: Sequence[str], frames: torch.Tensor) -> None:
        """Add ``outputs`` ``(B, T, ...)`` of clips ``sequences`` (B names) at ``frames`` ``(B, T)``."""
        outputs, frames = outputs.detach().to("cpu", torch.float32), frames.to("cpu", torch.int64)
        if outputs.shape[:2] != frames.shape or len(sequences) != outputs.shape[0]:
            raise SvrtValueError(f"SequenceAssembler.add: outputs {tuple(outputs.shape)} need frames (B, T) = "
                                 f"{tuple(outputs.shape[:2])} and B sequence names; got frames "
                                 f"{tuple(frames.shape)} and {len(sequences)} names")
        for b, seq in enumerate(sequences):
            if seq not in self.n_frames:
                raise SvrtValueError(f"SequenceAssembler.add: unknown sequence {seq!r}")
            if seq not in self._sum:
                self._sum[seq] = torch.zeros((self.n_frames[seq], *outputs.shape[2:]), dtype=torch.float32)
                self._count[seq] = torch.zeros(self.n_frames[seq], dtype=torch.int64)
            self._sum[seq].index_add_(0, frames[b], outputs[b])
            self._count[seq].index_add_(0, frames[b], torch.ones_like(frames[b]))

    def result(self, sequence: str) -> torch.Tensor:
        """The mean output of every frame of ``sequence``, ``(N, ...)`` float32."""
        count = self._count.get(sequence)
        if count is None or (count == 0).any():
            have = 0 if count is None else int((count > 0).sum())
            raise SvrtValueError(f"SequenceAssembler: sequence {sequence!r} has outputs for {have} of its "
                                 f"{self.n_frames.get(sequence, '?')} frames; feed every clip of the eval dataset")
        shape = (-1,) + (1,) * (self._sum[sequence].dim() - 1)  # N then 1 per output axis, to broadcast
        return (self._sum[sequence] / count.view(shape)).float()
