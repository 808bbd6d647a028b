"""Export an svrt store to HDF5 and import it back, bit-exact (arrays and attributes).

HDF5 mirror: the same group tree (``/<split>/<sequence>/<array>``), datasets chunked one frame at a
time, zarr attributes stored as JSON strings under the attribute ``svrt_attrs``, dimension names as
``dimension_names``. Importing checks the whole file first (format, layout version, names, arrays,
attributes), builds the store beside its destination (``.<name>.svrt-new``) with this version's layout
(chunks, shards, codecs, checksums) and each sequence's completion marker last, then swaps it in: an
existing destination is replaced only when it is an svrt store, and only once the new one is whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from svrt_data.hdf5 import STORE_FORMAT, is_svrt_h5, open_h5
from svrt_data.names import name_problem
from svrt_data.store import layout as L
from svrt_data.store import owned
from svrt_data.store.reader import SvrtStore
from svrt_data.store.writer import output_kind
from svrt_errors import StoreError

__all__ = ["export_store_h5", "import_store_h5", "H5_FORMAT"]

H5_FORMAT = STORE_FORMAT


def _copy_blocks(src, dst, zarr_array) -> None:
    """Copy along the first axis in blocks of the zarr array's shards (whole shards: no rewrites)."""
    n = src.shape[0]
    step = max(1, (zarr_array.shards or zarr_array.chunks)[0])
    for a in range(0, n, step):
        dst[a : min(n, a + step)] = src[a : min(n, a + step)]


def check_h5_output(out: Path, *, overwrite: bool) -> None:
    """An HDF5 output may be new, or (with ``overwrite``) an HDF5 file svrt wrote; anything else is refused."""
    if not out.exists() and not out.is_symlink():
        owned.check_parent(out, "output")
        return
    if out.is_dir():
        raise StoreError(f"{out} is a folder; give a file name for the HDF5 output")
    if not overwrite:
        raise StoreError(f"{out} exists; pass --overwrite to replace it")
    if not is_svrt_h5(out):
        raise StoreError(f"{out} exists and is not an HDF5 file svrt wrote; refusing to overwrite it. Choose another "
                         "output name (or move the file yourself)")


def export_store_h5(store: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Write every complete sequence of ``store`` into an HDF5 file (atomically; reads are checked)."""
    import h5py

    src = SvrtStore(store)
    seqs = src.sequences()
    out = Path(out)
    check_h5_output(out, overwrite=overwrite)
    tmp = owned.temp_path(out)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["svrt_format"] = H5_FORMAT
            f.attrs["svrt_attrs"] = json.dumps(src.attrs, sort_keys=True)
            for seq in tqdm(seqs, desc="export-h5", unit="seq", disable=not progress):
                g = f.require_group(seq.key)
                g.attrs["svrt_attrs"] = json.dumps(dict(seq.attrs), sort_keys=True)
                for spec in L.ARRAYS:
                    if spec.name == "sharp" and seq.sharp is None:
                        continue
                    arr = seq.array(spec.name)
                    shape = tuple(arr.shape)
                    chunks = (1, *shape[1:]) if shape[0] and spec.name != "windows" else None
                    ds = g.create_dataset(spec.name, shape=shape, dtype=arr.dtype, chunks=chunks)
                    ds.attrs["dimension_names"] = json.dumps(list(arr.metadata.dimension_names or ()))
                    ds.attrs["svrt_attrs"] = json.dumps(dict(arr.attrs), sort_keys=True)
                    _copy_blocks(arr, ds, arr)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _json_attr(obj: Any, where: str) -> dict:
    try:
        value = json.loads(obj.attrs["svrt_attrs"])
    except KeyError:
        raise StoreError(f"{where}: no 'svrt_attrs' attribute; not written by `svrt-data export-h5`") from None
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{where}: 'svrt_attrs' is not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(value, dict):
        raise StoreError(f"{where}: 'svrt_attrs' is not a JSON object; the file is damaged")
    return value


def _sequence_layout(hg: Any, attrs: dict) -> dict[str, L.ArrayLayout]:
    """The layout's arrays for an exported sequence: sizes from its attributes, frames from ``blur``."""
    seq = attrs[L.SEQUENCE_ATTR]
    spike, rgb, voxel = seq["spike"], seq["rgb"], seq["voxel"]
    return L.sequence_arrays(L.SequenceGeometry(
        int(hg["blur"].shape[0]), (int(rgb["height"]), int(rgb["width"])), (int(spike["height"]), int(spike["width"])),
        int(spike["frames"]), int(voxel["bins"]), voxel["mode"], "sharp" in hg))


def _array_problem(ds: Any, a: L.ArrayLayout) -> str | None:
    import numpy as np

    if tuple(ds.shape) != a.shape or np.dtype(ds.dtype) != np.dtype(a.dtype):
        return f"{ds.dtype} {tuple(ds.shape)}, expected {a.dtype} {a.shape}"
    try:
        dims = tuple(json.loads(ds.attrs["dimension_names"]))
    except (KeyError, TypeError, ValueError):
        return "no readable dimension_names attribute"
    return None if dims == a.dims else f"dimension names {dims}, expected {a.dims}"


def _plan_import(f: Any, h5_path: Path) -> tuple[dict, dict[str, dict[str, L.ArrayLayout]]]:
    """Check the whole file before anything is written: ``(root attributes, {sequence key: its arrays})``, the
    arrays as :func:`~svrt_data.store.layout.sequence_arrays` lays them out for the sequence's sizes."""
    import h5py

    if f.attrs.get("svrt_format") != H5_FORMAT:
        raise StoreError(f"{h5_path} was not written by `svrt-data export-h5` (no svrt_format={H5_FORMAT!r})")
    root_attrs = _json_attr(f, str(h5_path))
    L.check_layout_version(root_attrs, str(h5_path))
    keys: list[str] = []
    problems: list[str] = []
    layouts: dict[str, dict[str, L.ArrayLayout]] = {}
    known = {a.name for a in L.ARRAYS}

    def collect(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Group) and "svrt_attrs" in obj.attrs and "blur" in obj:
            keys.append(name)

    f.visititems(collect)
    if not keys:
        problems.append("it holds no sequence")
    for key in keys:
        parts = key.split("/")
        bad = [f"{p!r} {why}" for p in parts if (why := name_problem(p))]
        if len(parts) > 2 or bad:
            problems.append(f"/{key}: not a plain split/sequence name ({'; '.join(bad) or 'too deep'})")
            continue
        hg = f[key]
        attrs = _json_attr(hg, f"{h5_path}:/{key}")
        if not isinstance(attrs.get(L.COMPLETE_ATTR), dict) or L.SEQUENCE_ATTR not in attrs:
            problems.append(f"/{key}: no completion marker or sequence attributes")
            continue
        try:
            arrays = _sequence_layout(hg, attrs)
        except (StoreError, KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"/{key}: its attributes do not describe a sequence of layout v{L.LAYOUT_VERSION} "
                            f"({type(exc).__name__}: {exc})")
            continue
        layouts[key] = arrays
        problems += [f"/{key}/{name}: missing" for name in arrays if name not in hg]
        for name, ds in hg.items():
            if name not in known or not isinstance(ds, h5py.Dataset):
                problems.append(f"/{key}/{name}: not an array of layout v{L.LAYOUT_VERSION} ({sorted(known)})")
                continue
            _json_attr(ds, f"{h5_path}:/{key}/{name}")
            why = _array_problem(ds, arrays[name])
            if why is not None:
                problems.append(f"/{key}/{name}: {why}")
    if problems:
        raise StoreError(f"{h5_path} cannot be imported: " + "; ".join(problems[:10]))
    return root_attrs, {key: layouts[key] for key in sorted(keys)}


def import_store_h5(h5_path: str | os.PathLike, store: str | os.PathLike, *, overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Rebuild a store from :func:`export_store_h5`'s file (see the module docstring)."""
    import zarr

    store, h5_path = Path(store), Path(h5_path)
    owned.recover_path(store)
    kind = output_kind(store)  # refuses files and folders svrt did not write
    if kind == "absent":
        owned.check_parent(store, "store")
    elif kind in ("svrt", "svrt-other") and not overwrite:
        raise StoreError(f"{store} exists; pass overwrite=True (--overwrite) to replace it")
    with open_h5(h5_path) as f:
        root_attrs, layouts = _plan_import(f, h5_path)
        tmp = owned.temp_path(store)
        if tmp.exists() or tmp.is_symlink():
            owned.remove_temp(tmp)
        try:
            root = zarr.open_group(str(tmp), mode="w-")
            root.attrs.update(root_attrs)
            for key, arrays in tqdm(layouts.items(), desc="import-h5", unit="seq", disable=not progress):
                hg = f[key]
                attrs = json.loads(hg.attrs["svrt_attrs"])
                complete = attrs.pop(L.COMPLETE_ATTR)
                zg = root.require_group(key)
                zg.attrs.update(attrs)
                for name, ds in hg.items():
                    arr = arrays[name].create_in(zg, attributes=json.loads(ds.attrs["svrt_attrs"]))
                    if ds.shape[0]:
                        _copy_blocks(ds, arr, arr)
                zg.attrs.update({L.COMPLETE_ATTR: complete})
        except Exception:
            owned.remove_temp(tmp)  # a failed import leaves nothing behind; the destination is untouched
            raise
    owned.swap_in(tmp, store)
    return store
