"""The loader subpackage: small modules, the old import paths re-exporting the same objects with a warning."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.test_import_order import ORDER, REPO, build_graph

pytest.importorskip("torch")

# old module -> {name there: (new module, name there)}
MOVED = {
    "svrt_data.dataset": {
        "SpikeDeblurDataset": ("svrt_data.loader.dataset", "SpikeDeblurDataset"),
        "ClipKey": ("svrt_data.loader.sampler", "ClipKey"),
        "ClipSampler": ("svrt_data.loader.sampler", "ClipSampler"),
        "collate_clips": ("svrt_data.loader.collate", "collate_clips"),
        "move_batch": ("svrt_data.loader.collate", "move_batch"),
        "DEVICE_KEYS": ("svrt_data.loader.collate", "DEVICE_KEYS"),
        "RELEASE_KEY": ("svrt_data.loader.batch_buffers", "RELEASE_KEY"),
        "make_loader": ("svrt_data.loader.recipe", "make_loader"),
        "worker_init": ("svrt_data.loader.recipe", "worker_init"),
        "SequenceAssembler": ("svrt_data.loader.assemble", "SequenceAssembler"),
    },
    "svrt_data.clip_plan": {
        "AUGMENTS": ("svrt_data.loader.clip_plan", "AUGMENTS"),
        "ClipPlan": ("svrt_data.loader.clip_plan", "ClipPlan"),
        "ClipSpec": ("svrt_data.loader.clip_plan", "ClipSpec"),
        "SequenceShape": ("svrt_data.loader.clip_plan", "ClipSource"),
    },
    "svrt_data.clip_reader": {
        "ClipReader": ("svrt_data.loader.clip_reader", "ClipReader"),
        "SequenceInfo": ("svrt_data.loader.store_scan", "SequenceInfo"),
        "scan_store": ("svrt_data.loader.store_scan", "scan_store"),
        "READERS": ("svrt_data.loader.store_scan", "READERS"),
        "SPIKE_INPUTS": ("svrt_data.loader.store_scan", "SPIKE_INPUTS"),
    },
    "svrt_data.clip_geometry": {name: ("svrt_data.loader.clip_geometry", name) for name in (
        "IDENTITY", "AxisScale", "Dihedral", "flip_packed_x", "shift_packed", "transpose_packed")},
    "svrt_data.spike_transform": {"SpikeTransform": ("svrt_data.loader.spike_transform", "SpikeTransform")},
    "svrt_data.transforms": {name: ("svrt_data.loader.transforms", name) for name in (
        "FLOAT_DTYPES", "Compose", "VoxelStats", "compose", "log1p", "normalize", "to_float", "voxel_transform")},
    "svrt_data.store_stats": {"store_voxel_stats": ("svrt_data.loader.store_stats", "store_voxel_stats")},
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_and_gives_the_same_objects(old: str) -> None:
    homes = {module for module, _ in MOVED[old].values()}
    new_path = homes.pop() if len(homes) == 1 else "svrt_data.loader"
    sys.modules.pop(old, None)  # the warning fires when the module is first imported
    with pytest.warns(DeprecationWarning) as rec:
        shim = importlib.import_module(old)
    assert [str(w.message) for w in rec] == [
        f"{old} is deprecated and will be removed in the next release; import from {new_path} instead"]
    assert sorted(shim.__all__) == sorted(MOVED[old])
    for name, (module, new_name) in MOVED[old].items():
        assert getattr(shim, name) is getattr(importlib.import_module(module), new_name), (old, name)


def test_top_level_names_are_the_loaders() -> None:
    import svrt_data
    import svrt_data.loader as loader
    from svrt_data.loader import dataset, recipe, spike_transform

    assert svrt_data.SpikeDeblurDataset is loader.SpikeDeblurDataset is dataset.SpikeDeblurDataset
    assert svrt_data.SpikeTransform is loader.SpikeTransform is spike_transform.SpikeTransform
    assert svrt_data.make_loader is loader.make_loader is recipe.make_loader
    for name in loader.__all__:
        assert getattr(loader, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'dataset_v2'"):
        loader.dataset_v2  # noqa: B018


def test_no_module_imports_a_deprecated_path() -> None:
    _, edges = build_graph(REPO, ORDER)
    bad = [e.where() for e in edges if e.target in MOVED]
    assert not bad, "library code imports deprecated loader paths:\n" + "\n".join(bad)


def test_loader_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in sorted(Path(REPO, "svrt_data/loader").glob("*.py"))}
    assert len(sizes) >= 14
    assert all(n <= 400 for n in sizes.values()), sizes
