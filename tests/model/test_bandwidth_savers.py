"""The backbone's bandwidth savers (``VRT.set_bandwidth_savers``) and the memory-oriented checkpoint parts:
the same numbers (float64) with each saver on or off, in eval and in training with stochastic depth,
fewer saved bytes, and grouped shifted-window masks equal to per-window masks. The window-plan savers are
also tested block by block in ``test_window_plan.py``."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from svrt_model import VRT, svrt_baseline
from svrt_model.errors import ModelConfigError, UntrainedSpyNetWarning
from svrt_model.layers import window
from svrt_model.layers.attention import WindowAttention, window_attention
from svrt_model.layers.deform_align import FlowGuidedDeformAlign
from svrt_model.layers.deform_attn_align import FlowGuidedDeformAttnAlign
from svrt_model.layers.mlp import MlpGEGLU
from svrt_model.layers.window import mask_groups, masked_windows, shifted_window_mask
from svrt_model.layers.window_plan import clear_window_caches
from svrt_model.vrt import BANDWIDTH_SAVERS, COMPILE_SAVERS, SAVER_NEEDS, with_needed_savers
from tests.model.golden import micro_model, randomise_offset_heads
from tests.model.spike_reference import build, inputs, micro_config


def _small_vrt(**changes: object) -> VRT:
    """VRT with 4x4 windows (32x32 frames), 2 blocks per stage, stochastic depth 0.3, random offset heads;
    ``changes``: other VRTConfig fields."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(micro_config(frames=3).vrt, drop_path_rate=0.3, **changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(cfg).double()
    randomise_offset_heads(model)
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


_BEFORE = "residual+mutual-proj+mask-groups"  # the savers before the window plans
_LEAVE_OUT = ["pad-skip", "mask-split+pad-skip", "window-gather+mask-split+pad-skip", "rel-bias", "mlp-packed",
              "align-lean"]


def _shifting_vrt() -> VRT:
    """As :func:`_small_vrt` with 4 blocks per stage split 2 + 2 (and 2 in stage 8): every group has a shifted
    block (``_small_vrt``'s groups hold one unshifted block each)."""
    model = _small_vrt(mul_attn_ratio=0.5, depths=(4,) * 7 + (2,))
    with torch.no_grad():
        for m in model.modules():  # a trained table's size: the init's 0.02 would hide a wrong lookup
            if isinstance(m, WindowAttention):
                m.relative_position_bias_table.normal_()
    return model


@pytest.fixture(scope="module")
def all_savers_run():
    """The training step with every saver on: the reference the leave-one-out runs must equal."""
    model = _shifting_vrt().train()
    assert any(any(s > 0 for s in b.shift) for _, blocks in model._stage_groups() for b, _ in blocks)
    x, _, flows = inputs(1, 3, 32, 32, 4)
    return model, x, flows, _run(model, x, flows, "all", "none")


@pytest.mark.parametrize("drop", _LEAVE_OUT + ["none"])
def test_each_saver_changes_no_number(all_savers_run, drop: str) -> None:
    """All savers vs all but one (with the savers that need it), and vs none: T=3 pads the mutual windows'
    frames to 4 (rolled and not), shifted windows in every group, stochastic depth on, float64."""
    model, x, flows, (out_all, grads_all) = all_savers_run
    names = "none" if drop == "none" else "+".join(n for n in BANDWIDTH_SAVERS if n not in drop.split("+"))
    out, grads = _run(model, x, flows, names, "none")
    torch.testing.assert_close(out, out_all, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(grads_all) > 100
    for a, b in zip(grads, grads_all, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _random_bias_model(cfg):
    """The S-VRT of ``cfg`` with N(0, 1) relative position bias tables (so the biases matter in comparisons)."""
    model = build(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WindowAttention):
                m.relative_position_bias_table.normal_()
    return model


def test_spike_model_savers_odd_t_padded_frames_half_spikes() -> None:
    """The whole S-VRT, float64, training with stochastic depth: T=5 (self windows of 5 frames, mutual windows
    padded to 6 frames), 32x40 frames (widths 10 and 5 px padded in 4 px windows), spikes at half
    size, shifted windows; all savers vs none, output and every gradient."""
    cfg = micro_config(frames=5)
    cfg = dataclasses.replace(cfg, vrt=dataclasses.replace(cfg.vrt, drop_path_rate=0.3))
    model = _random_bias_model(cfg).train()
    rgb, spikes, flows = inputs(1, 5, 32, 40, cfg.spike_bins, (16, 20))
    runs = []
    for savers in ("none", "all"):
        model.vrt.set_bandwidth_savers(savers)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same stochastic-depth draws
        out = model(rgb, spikes, flows)
        (out * out.detach().cos()).sum().backward()
        runs.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (out_none, grads_none), (out_all, grads_all) = runs
    torch.testing.assert_close(out_all, out_none, rtol=1e-12, atol=1e-12)
    assert grads_all.keys() == grads_none.keys() and len(grads_all) > 150
    for name, g in grads_all.items():
        torch.testing.assert_close(g, grads_none[name], rtol=1e-10, atol=1e-12, msg=name)


def test_new_savers_under_checkpointing_and_in_eval(all_savers_run) -> None:
    model, x, flows, (out_all, grads_all) = all_savers_run
    out, grads = _run(model, x, flows, "all", "attn+ffn+align")
    torch.testing.assert_close(out, out_all, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads_all, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    model.eval()
    try:
        with torch.no_grad():
            model.set_bandwidth_savers(_BEFORE)
            before = model(x, flows)
            model.set_bandwidth_savers("all")
            after = model(x, flows)
    finally:
        model.train()
    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-12)


def test_mask_split_keeps_no_mask_per_window() -> None:
    """The segment path holds mask patterns only: no (windows, N, N) mask is built (on the GPU ~0.9 GB for
    svrt_base at 5x256x256); the grouped-mask path builds and caches them."""
    model = _shifting_vrt().eval()
    x, _, flows = inputs(1, 3, 32, 32, 4)
    clear_window_caches()
    with torch.no_grad():
        model(x, flows)
    assert window._shifted_window_mask.cache_info().currsize == 0
    model.set_bandwidth_savers(_BEFORE)
    with torch.no_grad():
        model(x, flows)
    assert window._shifted_window_mask.cache_info().currsize > 0
    model.set_bandwidth_savers("all")
    clear_window_caches()


def test_relative_bias_gather_equals_the_official_lookup() -> None:
    torch.manual_seed(0)
    attn = WindowAttention(16, (2, 4, 4), 2).double()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    for n in (32, 20):  # the full window and a shrunk one (top-left block of the index)
        attn.fast_bias = False
        ref = attn.relative_bias(n)
        (ref * torch.arange(ref.numel()).view_as(ref).cos()).sum().backward()
        ref_grad, attn.relative_position_bias_table.grad = attn.relative_position_bias_table.grad, None
        attn.fast_bias = True
        got = attn.relative_bias(n)
        (got * torch.arange(got.numel()).view_as(got).cos()).sum().backward()
        assert torch.equal(got, ref)
        torch.testing.assert_close(attn.relative_position_bias_table.grad, ref_grad, rtol=1e-14, atol=1e-14)
        attn.relative_position_bias_table.grad = None


def test_packed_mlp_equals_two_projections() -> None:
    torch.manual_seed(0)
    mlp = MlpGEGLU(12, 24, 8).double()
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    results = []
    for packed in (False, True):
        mlp.packed = packed
        mlp.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = mlp(xi)
        (out * out.detach().cos()).sum().backward()
        results.append((out.detach(), xi.grad, [p.grad for p in mlp.parameters()]))
    for a, b in zip(results[0][2] + [results[0][0], results[0][1]], results[1][2] + [results[1][0], results[1][1]],
                    strict=True):
        torch.testing.assert_close(b, a, rtol=1e-13, atol=1e-13)
    mlp.packed = True
    xs = torch.randn(4, 6, 12, dtype=torch.float64)[:, ::2].requires_grad_(True)  # a strided input too
    assert torch.autograd.gradcheck(mlp, (xs,))


@pytest.mark.parametrize("kind", ["dcn", "deform_attn"])
def test_lean_offsets_equal_the_official_ones(kind: str) -> None:
    torch.manual_seed(0)
    align = (FlowGuidedDeformAlign(8, 2, 5.0) if kind == "dcn" else FlowGuidedDeformAttnAlign(8, 2, 5.0)).double()
    torch.nn.init.normal_(align.conv_offset[-1].weight, std=0.1)
    warped, current = (torch.randn(3, 8, 6, 7, dtype=torch.float64) for _ in range(2))
    flow = torch.randn(3, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    fn = align.offsets_and_mask if kind == "dcn" else lambda *a: (align.offsets(*a),)
    results = []
    for lean in (False, True):
        align.lean = lean
        outs = fn(warped, current, flow)
        flow.grad = None
        sum(o.sin().sum() for o in outs).backward()
        results.append(([o.detach() for o in outs], flow.grad.clone()))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        assert torch.equal(a, b)  # the same elementwise operations on the same values
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-14, atol=1e-14)


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
    for names in ("none", "mutual-proj", "mask-groups", "all"):  # "all" now includes the window plans
        model.set_bandwidth_savers(names)
        saved[names] = _saved_bytes(model, shape)
    assert saved["mutual-proj"] < saved["none"] and saved["mask-groups"] < saved["none"]
    assert saved["all"] < min(saved["mutual-proj"], saved["mask-groups"])
    assert saved["all"] < 0.95 * saved["none"]
    model.set_bandwidth_savers(_BEFORE)
    before = _saved_bytes(model, shape)
    assert saved["all"] < before  # no masked window attended (and kept) twice, no padding rows kept


def test_switches_and_checkpoint_parts() -> None:
    model = micro_model()
    assert model.bandwidth_savers == "+".join(BANDWIDTH_SAVERS)  # on by default
    with pytest.raises(ModelConfigError, match=r"unknown names 'residual\+roll'; expected 'all', 'none'"):
        model.set_bandwidth_savers("residual+roll")
    model.set_bandwidth_savers("mask-groups")
    assert model.bandwidth_savers == "mask-groups"
    for saver, needed in SAVER_NEEDS.items():
        with pytest.raises(ModelConfigError, match=f"'{saver}' needs '{needed}'"):
            model.set_bandwidth_savers(saver)
    model.set_bandwidth_savers("window-gather+mask-split+pad-skip")
    block = model.stage1.residual_group1.blocks[0]
    assert (block.window_gather, block.mask_split, block.pad_skip, block.grouped_masks) == (True, True, True, False)
    assert not block.attn.fast_bias and not block.mlp.packed and not model.stage1.lean_fuse
    model.set_grad_checkpointing("attn-mutual+attn8")
    for idx, blocks in model._stage_groups():
        for block, second in blocks:
            assert block.checkpoint_attn == (idx >= 7 or not second)
            assert not block.checkpoint_ffn
    model.set_grad_checkpointing("none")
    model.set_bandwidth_savers("all")


def test_compiled_blocks_keep_only_the_compile_savers() -> None:
    """Compiling keeps the savers verified under torch.compile on the GPU and going back to eager restores the
    user's set (nothing is compiled here: torch.compile is lazy)."""
    model = _small_vrt()
    model.set_bandwidth_savers("residual+window-gather+mask-split+mlp-packed")
    model.compile_blocks("attn")
    assert model.bandwidth_savers == "residual"
    blocks = [m for m in model.modules() if hasattr(m, "window_gather")]
    assert blocks and not any(b.window_gather or b.mask_split for b in blocks)
    model.compile_blocks("attn+ffn")  # still compiled: the set chosen first is the one restored
    model.compile_blocks("none")
    assert model.bandwidth_savers == "residual+window-gather+mask-split+mlp-packed"
    assert all(b.window_gather and b.mask_split for b in blocks)
    # savers chosen while compiled (as bench_svrt configures a row after a compiled one) stay restricted
    model.compile_blocks("ffn")
    model.set_bandwidth_savers("all")
    assert model.bandwidth_savers == "+".join(COMPILE_SAVERS)
    assert not any(b.window_gather or b.mask_split or b.pad_skip for b in blocks)
    model.compile_blocks("ffn")
    model.compile_blocks("none")
    assert set(model.bandwidth_savers.split("+")) == set(BANDWIDTH_SAVERS)
    assert all(b.window_gather and b.mask_split and b.pad_skip for b in blocks)
    assert set(COMPILE_SAVERS) < set(BANDWIDTH_SAVERS)


def test_with_needed_savers_adds_what_a_saver_needs() -> None:
    assert with_needed_savers("pad-skip") == "window-gather+mask-split+pad-skip"
    assert with_needed_savers("rel-bias") == "rel-bias"
    model = _small_vrt()
    for name in BANDWIDTH_SAVERS:  # each is a valid set on its own
        model.set_bandwidth_savers(with_needed_savers(name))
        assert name in model.bandwidth_savers.split("+")


@pytest.mark.parametrize("savers", ["none", "all"])
def test_flex_attention_forward_equals_plain(savers: str) -> None:
    """FlexAttention in every window-attention route (grouped masks, per-segment attention of the
    window-gather saver), forward in float64 (its backward needs a GPU: tests/model/test_vrt_cuda.py)."""
    cfg = micro_config(frames=5)
    model = _random_bias_model(cfg).eval()
    rgb, spikes, flows = inputs(1, 5, 32, 40, cfg.spike_bins, (16, 20))
    model.vrt.set_bandwidth_savers(savers)
    outs = {}
    with torch.no_grad():
        for impl in ("plain", "flex"):
            model.set_attention(impl)
            outs[impl] = model(rgb, spikes, flows)
    torch.testing.assert_close(outs["flex"], outs["plain"], rtol=1e-12, atol=1e-12)
