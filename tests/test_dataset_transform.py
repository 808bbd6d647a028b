"""SpikeTransform: the batch-side conversion, on the CPU (and on the GPU where CUDA is present)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from svrt_data.loader.collate import collate_clips, move_batch  # noqa: E402
from svrt_data.loader.dataset import SpikeDeblurDataset  # noqa: E402
from svrt_data.loader.sampler import ClipKey  # noqa: E402
from svrt_data.loader.spike_transform import SpikeTransform  # noqa: E402
from svrt_data.loader.store_stats import store_voxel_stats  # noqa: E402
from svrt_data.loader.transforms import VoxelStats, log1p, voxel_transform  # noqa: E402
from svrt_data.voxelize import bin_frame_ranges, voxelize  # noqa: E402
from svrt_errors import SvrtValueError  # noqa: E402
from tests.test_dataset import BINS, build_coord_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_coord_store(tmp_path_factory.mktemp("coords_t"), rgb=(128, 160), spike=(64, 80), frames=(6, 5))


def _batches(store, seed=2, epoch=1):
    kw = {"clip_len": 3, "stride": 1, "crop": (64, 64), "seed": seed}
    vox = SpikeDeblurDataset(store, "train", spike_input="voxels", **kw)
    raw = SpikeDeblurDataset(store, "train", spike_input="raw", **kw)
    keys = [ClipKey(epoch, i) for i in range(len(vox))]
    return collate_clips(vox.__getitems__(keys)), collate_clips(raw.__getitems__(keys))


def test_rgb_and_voxels_follow_the_transforms_module(store):
    vox, _ = _batches(store)
    stats = VoxelStats(per_bin=True).update(log1p(vox["spikes"].numpy()))
    t = SpikeTransform(spike_input="voxels", log1p=True, stats=stats)
    out = t(vox)
    assert out["blur"].dtype == torch.float32 and torch.equal(out["blur"], vox["blur"].float() * (1.0 / 255.0))
    assert torch.equal(out["sharp"], vox["sharp"].float() * (1.0 / 255.0))
    want = voxel_transform(log1p=True, stats=stats)(vox["spikes"])
    torch.testing.assert_close(out["spikes"], want, rtol=1e-6, atol=1e-6)
    assert out["spikes"].shape == vox["spikes"].shape and vox["spikes"].dtype == torch.uint8  # input untouched
    assert set(t.state_dict()) == {"mean", "std"} and t.mean.shape == (BINS, 1, 1)
    plain = SpikeTransform(log1p=False, rgb_scale=None)(vox)
    assert plain["blur"].dtype == torch.uint8 and torch.equal(plain["spikes"], vox["spikes"].float())
    scalar = SpikeTransform(log1p=False, mean=0.5, std=0.25, dtype=torch.float64)(vox)
    torch.testing.assert_close(scalar["spikes"], (vox["spikes"].double() - 0.5) / 0.25)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_raw_rebinning_reproduces_the_stored_voxels(store, backend):
    vox, raw = _batches(store)
    t = SpikeTransform(spike_input="raw", bins=BINS, log1p=False, rgb_scale=None, backend=backend)
    out = t(raw)
    assert out["spikes"].shape == vox["spikes"].shape
    assert torch.equal(out["spikes"], vox["spikes"].float())  # same K: exactly the store's voxels, crop, flips
    assert torch.equal(out["blur"], vox["blur"])


def test_raw_rebinning_any_k_and_linear_mode(store):
    _, raw = _batches(store, seed=5)
    for bins, mode in ((5, "count"), (7, "linear")):
        out = SpikeTransform(spike_input="raw", bins=bins, bin_mode=mode, log1p=False, backend="numpy")(raw)
        for b in range(raw["blur"].shape[0]):
            n = int(raw["spike_len"][b])
            want = voxelize(raw["spike_bits"][b, :n].numpy(), raw["spike_windows"][b].numpy(), bins=bins, mode=mode,
                            backend="numpy")
            np.testing.assert_array_equal(out["spikes"][b].numpy(), np.asarray(want, np.float32))


def test_bits_hand_off_for_a_learnable_accumulator(store):
    vox, raw = _batches(store, seed=3)
    out = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw)
    ranges = out["spike_bin_ranges"]
    b, s = raw["spike_bits"].shape[:2]
    assert ranges.shape == (b, 3, BINS, 2) and ranges.dtype == torch.int64
    assert out["spike_bits"] is raw["spike_bits"] and "spikes" not in out
    bits = np.unpackbits(raw["spike_bits"].numpy(), axis=-1, bitorder="little")  # B S hs ws
    for i in range(b):
        want = bin_frame_ranges(raw["spike_windows"][i].numpy(), BINS, s)
        np.testing.assert_array_equal(ranges[i].numpy(), want)
        # gamma = 1: summing the bits of each bin's frames gives the stored counts
        sums = np.stack([np.stack([bits[i, a:z].sum(0) for a, z in clip]) for clip in want])
        np.testing.assert_array_equal(sums, vox["spikes"][i].numpy())


def test_stats_from_the_store(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=1, crop=None, mode="eval")
    frames = np.concatenate([ds[i]["spikes"].numpy() for i in range(len(ds))])
    want = VoxelStats(per_bin=True).update(log1p(frames))
    got = store_voxel_stats(store, "train", log1p=True, max_frames=1000)
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
    np.testing.assert_allclose(got.std, want.std, rtol=1e-12)
    t = SpikeTransform.from_store(store, "train", max_frames=1000)
    np.testing.assert_allclose(t.mean.flatten().numpy(), want.mean, rtol=1e-6)
    # raw input with another K: the stats of the stored spikes re-binned at that K
    got4 = store_voxel_stats(store, "train", bins=4, log1p=False, per_bin=False, max_frames=1000)
    raw = SpikeDeblurDataset(store, "train", clip_len=1, crop=None, mode="eval", spike_input="raw")
    re = [voxelize(it["spike_bits"].numpy()[: it["spike_len"]], it["spike_windows"].numpy(), bins=4, backend="numpy")
          for it in (raw[i] for i in range(len(raw)))]
    want4 = VoxelStats(per_bin=False).update(np.concatenate(re))
    np.testing.assert_allclose([got4.mean, got4.std], [want4.mean, want4.std], rtol=1e-12)
    sample = store_voxel_stats(store, "train", max_frames=3, seed=1)
    assert sample.count[0] == 3 * 64 * 80
    with pytest.raises(SvrtValueError, match="max_frames must be a positive integer"):
        store_voxel_stats(store, "train", max_frames=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spike_input": "raw"}, r"raw input needs bins=K"),
        ({"mean": 0.0}, r"mean and std go together"),
        ({"mean": 0.0, "std": 1.0, "stats": VoxelStats(per_bin=False).update(np.zeros((1, 2, 2)))}, r"not both"),
        ({"spike_input": "raw", "bins": 4, "mean": [0.0] * 3, "std": [1.0] * 3}, r"3 per-bin statistics for bins=4"),
        ({"raw_output": "events"}, r"raw_output must be 'voxels' or 'bits'"),
        ({"dtype": torch.int32}, r"dtype must be a float dtype"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(SvrtValueError, match=message):
        SpikeTransform(**kwargs)


def test_batch_errors(store):
    vox, raw = _batches(store)
    with pytest.raises(SvrtValueError, match=r"the batch has no 'spike_bits'/'spike_windows'"):
        SpikeTransform(spike_input="raw", bins=4)(vox)
    with pytest.raises(SvrtValueError, match=r"the batch has no 'spikes'"):
        SpikeTransform()(raw)
    with pytest.raises(SvrtValueError, match=r"blur must be a uint8 tensor"):
        SpikeTransform()({**vox, "blur": vox["blur"].float()})
    with pytest.raises(SvrtValueError, match=r"5 per-bin statistics for voxels of shape"):
        SpikeTransform(mean=[0.0] * 5, std=[1.0] * 5)(vox)


@pytest.mark.needs_cuda
def test_gpu_rebinning_and_transform_match_the_cpu(store):
    vox, raw = _batches(store, seed=9)
    dev = torch.device("cuda")
    stats = VoxelStats(per_bin=True).update(log1p(vox["spikes"].numpy()))
    t = SpikeTransform(spike_input="raw", bins=BINS, log1p=False, rgb_scale=None).to(dev)
    gpu_raw = move_batch(raw, dev)
    assert gpu_raw["spike_bits"].is_cuda and not gpu_raw["spike_windows"].is_cuda
    out = t(gpu_raw)
    assert out["spikes"].is_cuda and torch.equal(out["spikes"].cpu(), vox["spikes"].float())
    for bins in (5, 32):
        want = SpikeTransform(spike_input="raw", bins=bins, log1p=False, backend="numpy")(raw)["spikes"]
        got = SpikeTransform(spike_input="raw", bins=bins, log1p=False).to(dev)(gpu_raw)["spikes"]
        assert torch.equal(got.cpu(), want)
    full = SpikeTransform(log1p=True, stats=stats)
    cpu = full(vox)
    gpu = full.to(dev)(move_batch(vox, dev))
    torch.testing.assert_close(gpu["spikes"].cpu(), cpu["spikes"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gpu["blur"].cpu(), cpu["blur"])
    bits = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits").to(dev)(gpu_raw)
    assert bits["spike_bin_ranges"].is_cuda


def test_raw_rebinning_is_exact_for_non_dyadic_windows(tmp_path):
    """Windows like [0.1, 55.9) are not exact binary fractions: the store voxelized them in its own frame
    units; re-binning a clip's bits must compute the same bin edges (spike_first), not shifted ones."""
    from pipelines.voxelize_job import voxelize_dataset
    from svrt_data.align import AlignLog, read_align_log, write_align_log
    from tests.store_helpers import make_raw

    raw = make_raw(tmp_path / "raw", sequences=1, test_sequences=0, frames=6)
    log = read_align_log(raw / "align.csv")
    rng = np.random.default_rng(3)
    entries = [e.__class__(e.split, e.sequence, e.frame, e.spike_file, float(rng.uniform(0, 5)) + 0.1,
                           float(rng.uniform(50, 55)) + 1 / 3) for e in log.entries]
    write_align_log(AlignLog(log.header, entries), raw / "frac.csv")
    store = tmp_path / "s.zarr"
    voxelize_dataset(raw, raw / "frac.csv", store, bins=7, backend="numpy", progress=False)
    ds = SpikeDeblurDataset(store, "train", clip_len=3, stride=1, crop=None, spike_input="raw", augment="none",
                            mode="eval")
    batch = collate_clips(ds.__getitems__(list(range(len(ds)))))
    from svrt_data.store import open_store

    voxels = open_store(store).sequences("train")[0].voxels[...]
    t = SpikeTransform(spike_input="raw", bins=7, log1p=False, rgb_scale=None, backend="numpy")
    got = t.rebin(batch["spike_bits"], batch["spike_windows"], batch["spike_first"]).numpy()
    for i, frames in enumerate(batch["frames"].numpy()):
        np.testing.assert_array_equal(got[i], voxels[frames])
    ranges = t.bin_ranges(batch["spike_bits"], batch["spike_windows"], batch["spike_first"]).numpy()
    assert ranges.shape == (len(ds), 3, 7, 2) and (ranges[..., 1] >= ranges[..., 0]).all()
