"""The training task: one module that turns a loader batch into ``{'loss', 'output'}`` (timm's task shape).

``DeblurTask(model, loss, transform)(batch)`` applies the batch transform (uint8 to float, spike
normalisation), runs the model on the blurry frames and spikes, and scores the output against the sharp
frames. The loop only calls the task, backpropagates ``loss`` and steps the optimizer; wrapping the task
in DistributedDataParallel synchronises the model's gradients (the loss network has none).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from svrt_data import SpikeTransform
from svrt_model.errors import ModelInputError
from svrt_model.losses import DeblurLoss
from svrt_model.spike.inputs import model_spikes

__all__ = ["DeblurTask"]


class DeblurTask(nn.Module):
    """Model + loss + batch transform.

    Args:
        model: ``model(rgb, spikes) -> (B, T, 3, H, W)`` (:class:`~svrt_model.VRTSpike`).
        loss: the training loss (:class:`~svrt_model.losses.DeblurLoss`).
        transform: the batch transform (:class:`~svrt_data.SpikeTransform`).
    """

    def __init__(self, *, model: nn.Module, loss: DeblurLoss, transform: SpikeTransform) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.transform = transform

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Args: a collated batch on the device (``blur``/``sharp`` uint8 ``(B, T, 3, H, W)``, ``spikes`` uint8
        ``(B, T, K, Hs, Ws)`` or raw bits).

        Returns: ``{'loss'`` (scalar, float32 or float64), ``'output'`` ``(B, T, 3, H, W)``, ``'terms'`` (each
        loss term, detached), ``'input'`` (the transformed batch)``}``.
        """
        if "sharp" not in batch:
            raise ModelInputError("DeblurTask: the batch has no 'sharp' frames; train on a split with sharp frames")
        x = self.transform(batch)
        return {**self.score(x["blur"], model_spikes(x), x["sharp"]), "input": x}

    def score(self, blur: torch.Tensor, spikes: Any, sharp: torch.Tensor) -> dict[str, Any]:
        """The model on transformed frames and spikes, and the loss against ``sharp``: ``{'loss', 'output',
        'terms'}`` (the part of :meth:`forward` that a CUDA graph replays, ``train.cuda_graph``)."""
        output = self.model(blur, spikes)
        # the loss in at least float32: bf16/fp16 outputs of autocast would round the small differences away
        dtype = torch.promote_types(output.dtype, torch.float32)
        terms = self.loss(output.to(dtype), sharp.to(dtype))
        return {"loss": terms["loss"], "output": output,
                "terms": {k: v.detach() for k, v in terms.items() if k != "loss"}}
