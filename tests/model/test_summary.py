"""``svrt_model.summary``: parameter counts per part and the traced activation estimate."""

from __future__ import annotations

import warnings

import torch

from svrt_model import VRTSpike
from svrt_model.errors import UntrainedSpyNetWarning
from svrt_model.summary import PARTS, summarize
from tests.model.spike_reference import micro_config


def test_parameter_counts_add_up_per_part() -> None:
    cfg = micro_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRTSpike(cfg)
    result = summarize(cfg, activations=False)
    counts = {p.name: p.parameters for p in result.parts}
    assert counts["VRT backbone"] == sum(p.numel() for p in model.vrt.parameters())
    assert counts["spike encoder"] == sum(p.numel() for p in model.spike_encoder.parameters())
    assert counts["temporal attention"] == sum(p.numel() for p in model.spike_temporal_sa.parameters())
    assert counts["fusion"] == sum(p.numel() for p in model.cross_attn_fuse.parameters())
    assert result.parameters == sum(p.numel() for p in model.parameters())
    assert result.activation_bytes is None


def test_activation_estimate_against_a_real_forward_and_the_clip_size() -> None:
    """The meta-device trace counts exactly what a real CPU forward saves where both run the same kernels
    (the 3D-conv encoder), less than the CPU's math attention keeps (it saves the attention matrices, the
    GPU's fused kernels do not), and grows with the clip area."""
    cfg = micro_config(frames=2)
    result = summarize(cfg, clip=(2, 64, 64), spike_size=(32, 32))
    parts = {p.name: p.activation_bytes for p in result.parts}
    assert set(parts) == set(PARTS) and all(v > 0 for v in parts.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRTSpike(cfg).train()
    model.set_grad_checkpointing("none")
    seen, total, encoder = set(), [0], [0]

    def pack(x: torch.Tensor) -> torch.Tensor:
        if x.untyped_storage().data_ptr() not in seen:
            seen.add(x.untyped_storage().data_ptr())
            total[0] += x.untyped_storage().nbytes()
            encoder[0] += x.untyped_storage().nbytes() if inside[0] else 0
        return x

    inside = [False]
    model.spike_encoder.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    model.spike_encoder.register_forward_hook(lambda *_: inside.__setitem__(0, False))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model(torch.rand(1, 2, 3, 64, 64), torch.rand(1, 2, 4, 32, 32))
    assert encoder[0] == parts["spike encoder"]
    assert result.activation_bytes < total[0]
    bigger = summarize(cfg, clip=(2, 128, 128), spike_size=(64, 64))
    assert 3.5 < bigger.activation_bytes / result.activation_bytes < 4.5
