"""SpikeAccumulator: gamma's parametrisation, end to end from the dataset's raw bits (gamma = 1 gives the
stored voxels exactly), learnable decays against the float64 reference, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.spike_accumulate_ref import spike_accumulate_reference
from svrt_data.loader import ClipKey, SpikeDeblurDataset, collate_clips
from svrt_data.loader.spike_transform import SpikeTransform
from svrt_model.errors import ModelConfigError
from svrt_model.spike.accumulator import SpikeAccumulator
from tests.test_dataset import BINS, build_coord_store


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    store = build_coord_store(tmp_path_factory.mktemp("acc"), rgb=(128, 160), spike=(64, 80), frames=(6, 5))
    kw = {"clip_len": 3, "stride": 1, "crop": (64, 64), "seed": 1}
    vox = SpikeDeblurDataset(store, "train", spike_input="voxels", **kw)
    raw = SpikeDeblurDataset(store, "train", spike_input="raw", **kw)
    keys = [ClipKey(1, i) for i in range(min(len(vox), 3))]
    return collate_clips(vox.__getitems__(keys)), collate_clips(raw.__getitems__(keys))


def test_init_gamma_one_gives_the_stored_voxels_end_to_end(batches) -> None:
    vox, raw = batches
    out = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw)
    acc = SpikeAccumulator(BINS, init_gamma=1.0)
    assert torch.equal(acc.gamma, torch.ones(BINS))
    got = acc(out["spike_bits"], out["spike_bin_ranges"])
    assert got.dtype == torch.float32 and got.shape == vox["spikes"].shape
    assert torch.equal(got, vox["spikes"].float())


def test_learnable_decays_match_the_reference_and_get_gradients(batches) -> None:
    _, raw = batches
    bins = 3  # several frames a bin, so that gamma matters
    out = SpikeTransform(spike_input="raw", bins=bins, raw_output="bits")(raw)
    ranges = out["spike_bin_ranges"]
    assert (ranges[..., 1] - ranges[..., 0]).max() > 2
    gammas = np.linspace(0.3, 0.95, bins)
    acc = SpikeAccumulator(bins, init_gamma=gammas.tolist()).double()
    torch.testing.assert_close(acc.gamma, torch.from_numpy(gammas), rtol=1e-6, atol=0)  # float32 parameter
    got = acc(out["spike_bits"], out["spike_bin_ranges"])
    want = spike_accumulate_reference(out["spike_bits"].numpy(), out["spike_bin_ranges"].numpy(),
                                      acc.gamma.detach().numpy())
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    got.square().mean().backward()
    assert torch.isfinite(acc.raw_gamma.grad).all() and (acc.raw_gamma.grad != 0).all()


def test_gamma_stays_in_zero_one_whatever_the_parameter() -> None:
    acc = SpikeAccumulator(4)
    with torch.no_grad():
        acc.raw_gamma.copy_(torch.tensor([-1e4, -3.0, 5.0, 60.0]))
    g = acc.gamma
    assert ((g > 0) & (g <= 1)).all()
    assert g[0] == 1.0 and g[3] < 1e-20


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bins": 0}, r"bins must be a positive int \(K\), got 0"),
        ({"bins": 3, "init_gamma": 1.5}, r"init_gamma must be one value or 3 values in \(0, 1\], got 1.5"),
        ({"bins": 3, "init_gamma": [0.5, 0.5]}, r"init_gamma must be one value or 3 values"),
        ({"bins": 2, "init_gamma": 0.0}, r"in \(0, 1\]"),
    ],
)
def test_bad_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ModelConfigError, match=match):
        SpikeAccumulator(**kwargs)


def test_bins_must_match_the_ranges(batches) -> None:
    _, raw = batches
    out = SpikeTransform(spike_input="raw", bins=5, raw_output="bits")(raw)
    with pytest.raises(ModelConfigError, match=rf"ranges hold 5 bins per frame but the accumulator has {BINS}; "
                                               rf"build SpikeTransform with bins={BINS}"):
        SpikeAccumulator(BINS)(out["spike_bits"], out["spike_bin_ranges"])
