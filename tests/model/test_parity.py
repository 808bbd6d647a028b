"""Parity with the official VRT (CPU, float64): the golden runs of ``../shared/vrt_reference``.

The golden files were made by the official implementation in float64; a faithful implementation
matches ``output`` to ~1e-10. Per-module fingerprints (values at fixed flat positions) locate any
divergence: they are checked first so a failure names the first module that differs.
"""

from __future__ import annotations

import pytest
import torch

from tests.model.golden import load_golden_model

TOL = 1e-8


def _capture(model) -> dict[str, torch.Tensor]:
    """Module outputs in the official layout (B, C, T, H, W; ``norm`` channels-last as officially)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, channels_last: bool):
        def hook(_module, _inputs, out):
            seen[name] = out.permute(0, 4, 1, 2, 3) if channels_last else out

        return hook

    model.conv_first.register_forward_hook(keep("conv_first", False))
    for i in range(1, 8):
        getattr(model, f"stage{i}").register_forward_hook(keep(f"stage{i}", True))
    for i, layer in enumerate(model.stage8):
        layer.register_forward_hook(keep(f"stage8.{i}", True))
    model.norm.register_forward_hook(keep("norm", False))
    return seen


def _check_fingerprints(seen: dict[str, torch.Tensor], stages: dict) -> None:
    for name, fp in stages.items():  # in forward order: the first failure is the first divergence
        flat = seen[name].reshape(-1)
        assert flat.numel() == fp["numel"], f"{name}: {flat.numel()} values, official {fp['numel']}"
        err = (flat[fp["index"]] - fp["values"]).abs().max().item()
        assert err < TOL, f"{name} diverges from the official model: max error {err:.3g} at the fingerprint"
        assert abs(flat.mean().item() - fp["mean"]) < TOL and abs(flat.std().item() - fp["std"]) < TOL, name


@pytest.mark.parametrize(
    ("run_name", "impl", "savers"),  # the bandwidth savers change no number: the golden holds with and without
    [("spynet", "fused", "all"), ("given", "fused", "all"), ("given", "plain", "all"), ("given", "fused", "none")],
)
def test_golden_output(shared_dir, run_name: str, impl: str, savers: str) -> None:
    model, run, x = load_golden_model(shared_dir, run_name)
    model.set_attention(impl)
    model.set_bandwidth_savers(savers)
    seen = _capture(model)
    with torch.no_grad():
        if run["flows"] is None:  # the model's own SpyNet flows must match the official ones first
            backward, forward = model.compute_flows(x)
            for ours, ref in zip(backward + forward, run["flows_backward"] + run["flows_forward"], strict=True):
                assert (ours - ref).abs().max().item() < TOL
        out = model(x, flows=run["flows"])
    _check_fingerprints(seen, run["stages"])
    err = (out - run["output"]).abs().max().item()
    assert err < TOL, f"{run_name} run: max |ours - official| = {err:.3g}"
