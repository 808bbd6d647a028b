"""The backbone's bandwidth savers (``VRT.set_bandwidth_savers``) and the memory-oriented checkpoint parts:
the same numbers (float64) with each saver on or off, in eval and in training with stochastic depth,
fewer saved bytes, and grouped shifted-window masks equal to per-window masks."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from svrt_model import VRT, svrt_baseline
from svrt_model.errors import ModelConfigError, UntrainedSpyNetWarning
from svrt_model.layers.attention import window_attention
from svrt_model.layers.window import mask_groups, masked_windows, shifted_window_mask
from svrt_model.vrt import BANDWIDTH_SAVERS
from tests.model.golden import micro_model
from tests.model.spike_reference import inputs, micro_config


def _small_vrt() -> VRT:
    """VRT with 4x4 windows (32x32 frames), 2 blocks per stage, stochastic depth 0.3, random offset heads."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(micro_config(frames=3).vrt, drop_path_rate=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(cfg).double()
    with torch.no_grad():
        for i in range(1, 8):
            torch.nn.init.normal_(getattr(model, f"stage{i}").pa_deform.conv_offset[-1].weight, std=0.05)
    return model


def _run(model: VRT, x: torch.Tensor, flows, savers: str, policy: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.set_bandwidth_savers(savers)
    model.set_grad_checkpointing(policy)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)  # the same stochastic-depth draws
    out = model(x, flows)
    (out * out.detach().sin()).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(("savers", "policy"), [("all", "none"), ("residual+mask-groups", "ffn+attn-mutual+attn8")])
def test_savers_change_no_number_in_training(savers: str, policy: str) -> None:
    """Stochastic depth on, T=3 (padded to 4 in the mutual windows), shifted windows at stages 1-3 and 5-8:
    every saver path runs (clips of a batch: the grouped-mask test)."""
    model = _small_vrt().train()
    x, _, flows = inputs(1, 3, 32, 32, 4)
    out_a, grads_a = _run(model, x, flows, "none", "none")
    out_b, grads_b = _run(model, x, flows, savers, policy)
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)
    assert len(grads_a) == len(grads_b) > 100
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("size", "win", "shift", "tokens"), [
    ((4, 16, 24), (2, 8, 8), (1, 4, 4), None),   # three shifted axes: up to 7 patterns
    ((4, 16, 24), (2, 8, 8), (1, 4, 4), 64),     # the mutual slice (top-left 64 x 64 block)
    ((5, 16, 16), (5, 8, 8), (0, 4, 4), None),   # the window covers T: 3 patterns
])
def test_grouped_masks_equal_per_window_masks(batch: int, size, win, shift, tokens) -> None:
    mask = shifted_window_mask(size, win, shift, "cpu").double()
    n = tokens or mask.shape[1]
    mask = mask[:, :n, :n]
    groups = mask_groups(size, win, shift, "cpu", tokens)
    listed = masked_windows(size, win, shift, "cpu")
    covered = torch.cat([w for _, w in groups]).sort().values
    assert set(covered.tolist()) <= set(listed.tolist()) and len(covered) == len(set(covered.tolist()))
    for pattern, windows in groups:  # each group: windows that share exactly this non-zero pattern
        assert pattern.any() and all(torch.equal(mask[w], pattern.double()) for w in windows.tolist())
    rest = sorted(set(range(mask.shape[0])) - set(covered.tolist()))
    assert not mask[rest].any()  # every window left out has a zero mask
    nw = mask.shape[0]
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(batch * nw, 2, n, 8, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    rel = torch.randn(2, n, n, generator=g, dtype=torch.float64, requires_grad=True)
    expected = window_attention(q, k, v, scale=0.3, rel_bias=rel, mask=mask, impl="plain")
    got = window_attention(q, k, v, scale=0.3, rel_bias=rel, mask=mask, mask_groups=groups)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got.square().sum(), (q, k, v, rel)),
                    torch.autograd.grad(expected.square().sum(), (q, k, v, rel)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _saved_bytes(model: VRT, shape: tuple[int, ...]) -> int:
    seen: set[int] = set()
    total = [0]

    def pack(x: torch.Tensor) -> torch.Tensor:
        storage = x.untyped_storage()
        if storage._cdata not in seen:
            seen.add(storage._cdata)
            total[0] += storage.nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model(torch.empty(shape, device="meta"))
    return total[0]


def test_savers_keep_fewer_bytes_for_backward() -> None:
    """Traced on the meta device (the GPU's fused attention accounting), S-VRT baseline at 1x5x3x128x128."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(svrt_baseline()).train()
    model.set_grad_checkpointing("none")
    shape = (1, 5, 3, 128, 128)
    saved = {}
    for names in ("none", "mutual-proj", "mask-groups", "all"):
        model.set_bandwidth_savers(names)
        saved[names] = _saved_bytes(model, shape)
    assert saved["mutual-proj"] < saved["none"] and saved["mask-groups"] < saved["none"]
    assert saved["all"] < min(saved["mutual-proj"], saved["mask-groups"])
    assert saved["all"] < 0.95 * saved["none"]


def test_switches_and_checkpoint_parts() -> None:
    model = micro_model()
    assert model.bandwidth_savers == "+".join(BANDWIDTH_SAVERS)  # on by default
    with pytest.raises(ModelConfigError, match=r"unknown names 'residual\+roll'; expected 'all', 'none'"):
        model.set_bandwidth_savers("residual+roll")
    model.set_bandwidth_savers("mask-groups")
    assert model.bandwidth_savers == "mask-groups"
    model.set_grad_checkpointing("attn-mutual+attn8")
    for idx, blocks in model._stage_groups():
        for block, second in blocks:
            assert block.checkpoint_attn == (idx >= 7 or not second)
            assert not block.checkpoint_ffn
    model.set_grad_checkpointing("none")
    model.set_bandwidth_savers("all")
