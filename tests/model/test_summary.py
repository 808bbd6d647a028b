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


def test_activation_estimate_matches_a_real_forward_and_scales_with_the_clip() -> None:
    """The meta-device trace counts what a real CPU training forward saves, to within 1% (the CPU picks
    other attention kernels for a few calls), and grows with the clip area."""
    cfg = micro_config(frames=2)
    result = summarize(cfg, clip=(2, 64, 64), spike_size=(32, 32))
    parts = {p.name: p.activation_bytes for p in result.parts}
    assert set(parts) == set(PARTS) and all(v > 0 for v in parts.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRTSpike(cfg).train()
    seen, total = set(), [0]

    def pack(x: torch.Tensor) -> torch.Tensor:
        if x.untyped_storage().data_ptr() not in seen:
            seen.add(x.untyped_storage().data_ptr())
            total[0] += x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model(torch.rand(1, 2, 3, 64, 64), torch.rand(1, 2, 4, 32, 32))
    assert abs(total[0] - result.activation_bytes) <= 0.01 * total[0]
    bigger = summarize(cfg, clip=(2, 128, 128), spike_size=(64, 64))
    assert 3.5 < bigger.activation_bytes / result.activation_bytes < 4.5
