"""Export an svrt store to HDF5 and import it back, bit-exact (arrays and attributes).

HDF5 mirror: the same group tree (``/<split>/<sequence>/<array>``), datasets chunked one frame at a
time, zarr attributes stored as JSON strings under the attribute ``svrt_attrs``, dimension names as
``dimension_names``. Importing rebuilds a store with this version's layout (chunks, shards, codecs)
and sets each sequence's completion marker last.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from svrt_data.store import layout as L
from svrt_data.store.reader import SvrtStore
from svrt_errors import StoreError

__all__ = ["export_store_h5", "import_store_h5"]

H5_FORMAT = "svrt-store"


def _copy_blocks(src, dst, zarr_array) -> None:
    """Copy along the first axis in blocks of the zarr array's shards (whole shards: no rewrites)."""
    n = src.shape[0]
    step = max(1, (zarr_array.shards or zarr_array.chunks)[0])
    for a in range(0, n, step):
        dst[a : min(n, a + step)] = src[a : min(n, a + step)]


def export_store_h5(store: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True) -> Path:
    """Write every complete sequence of ``store`` into an HDF5 file (atomically)."""
    import h5py

    src = SvrtStore(store)
    seqs = src.sequences()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.part")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["svrt_format"] = H5_FORMAT
            f.attrs["svrt_attrs"] = json.dumps(src.attrs, sort_keys=True)
            for seq in tqdm(seqs, desc="export-h5", unit="seq", disable=not progress):
                g = f.require_group(seq.key)
                g.attrs["svrt_attrs"] = json.dumps(dict(seq.attrs), sort_keys=True)
                for name, arr in seq.group.arrays():
                    shape = tuple(arr.shape)
                    chunks = (1, *shape[1:]) if shape[0] and name != "windows" else None
                    ds = g.create_dataset(name, shape=shape, dtype=arr.dtype, chunks=chunks)
                    ds.attrs["dimension_names"] = json.dumps(list(arr.metadata.dimension_names or ()))
                    ds.attrs["svrt_attrs"] = json.dumps(dict(arr.attrs), sort_keys=True)
                    _copy_blocks(arr, ds, arr)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def import_store_h5(h5_path: str | os.PathLike, store: str | os.PathLike, *, overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Rebuild a store from :func:`export_store_h5`'s file."""
    import h5py
    import zarr

    store = Path(store)
    if store.exists():
        if not overwrite:
            raise StoreError(f"{store} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(store)
    with h5py.File(h5_path, "r") as f:
        if f.attrs.get("svrt_format") != H5_FORMAT:
            raise StoreError(f"{h5_path} was not written by `svrt-data export-h5` (no svrt_format={H5_FORMAT!r})")
        root_attrs = json.loads(f.attrs["svrt_attrs"])
        L.check_layout_version(root_attrs, str(h5_path))
        root = zarr.open_group(str(store), mode="w")
        root.attrs.update(root_attrs)
        seq_groups: list[str] = []

        def collect(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Group) and "svrt_attrs" in obj.attrs and "blur" in obj:
                seq_groups.append(name)

        f.visititems(collect)
        for key in tqdm(sorted(seq_groups), desc="import-h5", unit="seq", disable=not progress):
            hg = f[key]
            attrs = json.loads(hg.attrs["svrt_attrs"])
            complete = attrs.pop(L.COMPLETE_ATTR)
            zg = root.require_group(key)
            zg.attrs.update(attrs)
            for name, ds in hg.items():
                shape = tuple(ds.shape)
                chunks, shards = L.chunking(name, shape)
                arr = zg.create_array(name, shape=shape, dtype=ds.dtype, chunks=chunks, shards=shards,
                                      compressors=L.compressors(name, str(ds.dtype)), fill_value=0,
                                      dimension_names=tuple(json.loads(ds.attrs["dimension_names"])),
                                      attributes=json.loads(ds.attrs["svrt_attrs"]))
                if shape[0]:
                    _copy_blocks(ds, arr, arr)
            zg.attrs.update({L.COMPLETE_ATTR: complete})
    return store

