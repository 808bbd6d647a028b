"""Parity with the original S-VRT (CPU, float64): the golden files of ``../shared/svrt_reference``.

The original implementation ran in float64 on float32 parameters; we load the same parameters by their
original names (strictly), cast to float64 and compare the probes in forward order (temporal
self-attention of the 4 scales, then the fused outputs of stages 1-4) before the output, so a failure
names the first module that diverges.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from svrt_model import VRTSpike, VRTSpikeConfig
from svrt_model.errors import UntrainedSpyNetWarning
from tests.model.spike_reference import golden_files, golden_model

TOL = 1e-8


def _probe(name: str, values: torch.Tensor, fp: dict) -> None:
    flat = values.reshape(-1)
    assert flat.numel() == fp["numel"], f"{name}: {flat.numel()} values, original {fp['numel']}"
    err = (flat[fp["index"]] - fp["values"]).abs().max().item()
    assert err <= TOL, f"{name} diverges from the original S-VRT: max error {err:.3g} at the probe positions"
    assert abs(flat.mean().item() - fp["mean"]) <= TOL and abs(flat.std().item() - fp["std"]) <= TOL, name


@pytest.mark.parametrize(("run_name", "impl", "savers"), [  # the backbone's bandwidth savers on (default) and off
    ("spynet", "fused", "all"), ("given", "fused", "all"), ("given", "reference", "all"), ("given", "fused", "none"),
])
def test_golden_run(shared_dir, run_name: str, impl: str, savers: str) -> None:
    model, golden = golden_model(shared_dir, impl)
    model.vrt.set_bandwidth_savers(savers)
    ref = golden["runs"][run_name]
    flows = None if run_name == "spynet" else (
        [f.double() for f in ref["flows_backward"]], [f.double() for f in ref["flows_forward"]]
    )
    seen: dict[str, object] = {}
    model.spike_temporal_sa.register_forward_hook(lambda _m, _a, out: seen.__setitem__("tsa", out))
    for i, block in enumerate(model.cross_attn_fuse.fuse_blocks):  # block outputs: (B, T, H*W, C) tokens
        block.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(f"fuse{i}", out))
    with torch.no_grad():
        out = model(golden["rgb"], golden["spikes"], flows=flows)
    for i, fp in enumerate(ref["probes"]["tsa"]):  # layout (B, C, T, H, W) as the original
        _probe(f"spike_temporal_sa scale {i + 1}", seen["tsa"][i], fp)
    h = golden["rgb"].shape[-2]
    for i in range(4):  # layout (B, T, C, H, W) as the original
        tokens = seen[f"fuse{i}"]
        fused = tokens.unflatten(2, (h >> i, -1)).permute(0, 1, 4, 2, 3)  # B T H W C -> B T C H W
        _probe(f"cross_attn_fuse scale {i + 1} (after VRT stage {i + 1})", fused, ref["probes"][f"fuse{i}"])
    err = (out - ref["output"]).abs().max().item()
    assert err <= TOL, f"{run_name} run ({impl}): max |ours - original| = {err:.3g}"


def test_state_dict_names_and_shapes_are_the_originals(shared_dir) -> None:
    path = shared_dir / "svrt_reference" / "svrt_state_dict_keys.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    original = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")[:2]
            original[key] = tuple(int(v) for v in re.findall(r"\d+", shape))
    weights, _ = golden_files(shared_dir)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRTSpike(VRTSpikeConfig.from_dict(weights["config"]))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == original
    assert list(ours) == list(original)  # the same registration order, too
