"""A hostile user's corpus: bad inputs and faults against `svrt-data` and the Dataset.

Every case asserts the exit status (or exception type), the message, and that nothing outside the
command's own output changed (a hash of the whole working tree before and after). The rules are
general, so each class of input is tried in several forms (parametrized), and the kill -9 cases check
that a killed `voxelize` (and `--overwrite`) never loses data and that a rerun equals a clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.data import main
from pipelines.voxelize_job import voxelize_dataset
from svrt_data.store import layout as L
from svrt_data.store import open_store, verify_store
from svrt_data.store.h5 import export_store_h5
from svrt_errors import SvrtError
from tests.store_helpers import assert_same_store, make_raw, store_contents

REPO = Path(__file__).resolve().parents[1]
SEQ = "train/SYN0000_07_00"  # a sequence of make_raw's dataset


# -- helpers ---------------------------------------------------------------------------------------


def tree_digest(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every file, folder and link under ``root`` (except ``skip``) -> a hash of its content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames:
            out[str((here / name).relative_to(root)) + "/"] = "dir"
        for name in filenames:
            p = here / name
            if p in skip:
                continue
            out[str(p.relative_to(root))] = (f"link:{os.readlink(p)}" if p.is_symlink()
                                             else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def cli(*args: object) -> tuple[int, str]:
    """Run svrt-data in-process; a traceback (an uncaught exception) fails the test."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"uncaught {type(res.exception).__name__}: {res.exception}\n{res.output}")
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def refused(root: Path, *args: object, code: int = 1, match: str, skip: tuple[Path, ...] = ()) -> str:
    """Run a command that must fail: exit ``code``, a message matching ``match``, ``root`` unchanged."""
    before = tree_digest(root, skip=skip)
    status, output = cli(*args)
    assert status == code, output
    assert re.search(match, output, re.S), output
    assert tree_digest(root, skip=skip) == before, "the command changed files it had no business touching"
    return output


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return make_raw(tmp_path_factory.mktemp("raw") / "raw", frames=3)


@pytest.fixture(scope="module")
def store(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    voxelize_dataset(raw, raw / "align.csv", out, bins=4, backend="numpy", progress=False)
    return out


@pytest.fixture
def work(raw, store, tmp_path) -> Path:
    """A private copy of the raw dataset and the store under ``tmp_path``."""
    shutil.copytree(raw, tmp_path / "raw", copy_function=shutil.copy2)  # same mtimes: the same inputs
    shutil.copytree(store, tmp_path / "s.zarr")
    return tmp_path


def _shard(store: Path, seq: str, array: str) -> Path:
    return sorted(p for p in (store / seq / array / "c").rglob("*") if p.is_file())[0]


# -- align logs --------------------------------------------------------------------------------------


def _log_with_row(work: Path, edit) -> Path:
    lines = (work / "raw" / "align.csv").read_text().splitlines()
    header = [line for line in lines if line.startswith("#")] + [lines[sum(1 for x in lines if x.startswith("#"))]]
    rows = lines[len(header):]
    path = work / "evil.csv"
    path.write_text("\n".join(header + [edit(r) for r in rows]) + "\n")
    return path


BAD_SEQUENCE_NAMES = ["../../other/train/SEQ", "/tmp/abs", "..", ".", "a/b", "a\\b", ".SYN0000_07_00.svrt-new",
                      "bad\tname", "x\x7fy", "nul\x00byte", "n" * 300]


@pytest.mark.parametrize("name", BAD_SEQUENCE_NAMES)
def test_align_log_sequence_names_must_be_plain(work, name):
    # a crafted row names a folder outside the store; also for the store's own temporary names
    victim = work / "other" / "train" / "SEQ"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("precious")
    log = _log_with_row(work, lambda r: r.replace("SYN0000_07_00,", f"{name},", 1) if r.startswith("train,") else r)
    refused(work, "align", work / "raw", "--validate", log, match=r"line \d+: sequence .* (contains|is|starts|longer)")
    refused(work, "voxelize", work / "raw", "--align", log, "--out", work / "s.zarr", "--backend", "numpy",
            "--bins", "4", match=r"line \d+: sequence .*plain folder names")
    assert (victim / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("split", ["..", "../x", "/abs", ".hidden", "tab\there"])
def test_align_log_split_names_must_be_plain(work, split):
    log = _log_with_row(work, lambda r: split + r[r.index(","):] if r.startswith("train,") else r)
    refused(work, "voxelize", work / "raw", "--align", log, "--out", work / "new.zarr", "--backend", "numpy",
            match=r"line \d+: split .*plain folder names")


@pytest.mark.parametrize("spike_file", ["/etc/passwd", "../raw/train/SYN0000_07_00/spike/000000.dat",
                                        "train/../../x.dat", "train\\SYN0000_07_00\\spike\\000000.dat"])
def test_align_log_spike_files_must_stay_relative(work, spike_file):
    log = _log_with_row(work, lambda r: ",".join([*r.split(",")[:3], spike_file, *r.split(",")[4:]]))
    refused(work, "align", work / "raw", "--validate", log, match=r"spike_file .* (absolute|component|contains)")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"expected the header '# svrt-align-log', got an empty file"),
        ("split,sequence\n", r"expected the header '# svrt-align-log'"),
        ("# svrt-align-log\n# format_version: 2\n# rate_hz: 1\n# height: 32\n# width: 64\n# flip: true\n",
         r"format_version 2 is not supported"),
        ("# svrt-align-log\n# format_version: 1\n# rate_hz: 20000\n# width: 64\n# flip: true\n",
         r"header lacks height"),
        ("# svrt-align-log\n# format_version: 1\n# rate_hz: 20000\n# height: 32\n# width: 64\n# flip: true\n"
         "split,sequence,frame,spike_file,t0,t1\n", r"has a header but no rows"),
        ("# svrt-align-log\n# format_version: 1\n# rate_hz: 20000\n# height: 32\n# width: 64\n# flip: true\n"
         "split,sequence,frame,file,t0,t1\n", r"expected columns"),
        ("# svrt-align-log\n# format_version: 1\n# rate_hz: 20000\n# height: 32\n# width: 64\n# flip: true\n"
         "split,sequence,frame,spike_file,t0,t1\ntrain,SYN0000_07_00,zero,x.dat,0,56\n", r"frame must be an integer"),
        ("# svrt-align-log\n# format_version: 1\n# rate_hz: 20000\n# height: 32\n# width: 64\n# flip: true\n"
         "split,sequence,frame,spike_file,t0,t1\ntrain,SYN0000_07_00,0,x.dat,0\n", r"expected 6 fields"),
        ("# svrt-align-log\n# format_version: 1\n# rate_hz: 20000\n# height: 32\n# width: 64\n# flip: maybe\n",
         r"flip must be true or false"),
    ],
)
def test_malformed_align_logs(work, text, match):
    (work / "bad.csv").write_text(text)
    refused(work, "voxelize", work / "raw", "--align", work / "bad.csv", "--out", work / "new.zarr", "--backend",
            "numpy", match=match)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: ",".join([*r.split(",")[:5], "1e9"]), r"lies outside .*frames \[0, 56\)"),
        (lambda r: ",".join([*r.split(",")[:4], "30", "10"]), r"empty or reversed"),
        (lambda r: ",".join([*r.split(",")[:4], "nan", "10"]), r"empty or reversed"),
        (lambda r: r.replace(",1,", ",0,", 1) if ",1," in r else r, r"frames must be 0\.\.\d+ once each"),
    ],
)
def test_align_log_windows_and_frames(work, edit, match):
    log = _log_with_row(work, edit)
    refused(work, "voxelize", work / "raw", "--align", log, "--out", work / "s.zarr", "--backend", "numpy",
            "--bins", "4", match=match)


def test_align_log_pointing_at_a_truncated_dat(work):
    dat = work / "raw" / SEQ / "spike" / "000001.dat"
    dat.write_bytes(dat.read_bytes()[:-7])
    refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "4",
            match=r"000001\.dat.*not a whole number")


# -- manifests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("manifest_version: 1\nname: x\nsplits: ['../up']\nlayout: {}\nspike: {}\nalign: {}\n", r"split '\.\./up'"),
        ("manifest_version: 1\nname: x\nsplits: [train]\nlayout: {blur_dir: /abs}\nspike: {}\nalign: {}\n",
         r"layout\.blur_dir '/abs'"),
        ("manifest_version: 1\nname: x\nsplits: [train]\nlayout: {stream: ../s.dat}\nspike: {}\nalign: {}\n",
         r"layout\.stream '\.\./s\.dat'"),
        ("manifest_version: 3\nname: x\n", r"manifest_version 3 is not supported"),
        ("[unclosed: yaml\n", r"not valid YAML"),
    ],
)
def test_bad_manifests(work, body, match):
    (work / "m.yaml").write_text(body)
    refused(work, "align", work / "raw", "--manifest", work / "m.yaml", "--out", work / "a.csv", match=match)


# -- raw trees: images ------------------------------------------------------------------------------


def _png(work: Path, i: int = 2, kind: str = "blur") -> Path:
    return sorted((work / "raw" / SEQ / kind).glob("*.png"))[i]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), r"truncated or damaged"),
        (lambda p: p.write_bytes(p.read_bytes()[:60]), r"truncated or damaged"),
        (lambda p: p.write_bytes(b"not a png at all"), r"cannot read this image"),
        (lambda p: p.unlink(), r"2 (sharp )?images (in .* but 3 frames in the align log|but 3 blurry)"),
        (lambda p: __import__("PIL.Image").Image.new("RGB", (10, 10)).save(p), r"images of different sizes"),
        (lambda p: __import__("PIL.Image").Image.new("I;16", (128, 64)).save(p), r"not 8-bit RGB/gray"),
    ],
)
@pytest.mark.parametrize("kind", ["blur", "sharp"])
def test_damaged_images_fail_before_anything_is_written(work, damage, match, kind):
    """Also with --overwrite onto a good store: the old store is never touched."""
    damage(_png(work, kind=kind))
    refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "4",
            "--overwrite", match=match)
    refused(work, "voxelize", work / "raw", "--out", work / "new.zarr", "--backend", "numpy", match=match)


# -- voxelize targets and options -------------------------------------------------------------------


def _setup_target(work: Path, kind: str) -> Path:
    if kind == "file":
        (work / "afile").write_text("x")
        return work / "afile"
    if kind == "foreign folder":
        (work / "notes").mkdir()
        (work / "notes" / "a.txt").write_text("x")
        return work / "notes"
    if kind == "the raw dataset":
        return work / "raw"
    if kind == "under a file":
        (work / "afile").write_text("x")
        return work / "afile" / "s.zarr"
    if kind == "missing parent":
        return work / "no" / "such" / "s.zarr"
    if kind == "zarr group not svrt":
        import zarr

        zarr.open_group(str(work / "other.zarr"), mode="w").attrs["mine"] = 1
        return work / "other.zarr"
    if kind == "damaged root":
        (work / "s.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_')
        return work / "s.zarr"
    raise AssertionError(kind)


TARGETS = {
    "file": r"exists and is not a folder",
    "foreign folder": r"folder svrt did not write .*a\.txt",
    "the raw dataset": r"folder svrt did not write .*align\.csv",
    "under a file": r"afile is a file, not a folder",
    "missing parent": r"the folder .*no/such does not exist",
    "zarr group not svrt": r"folder svrt did not write",
    "damaged root": r"folder svrt did not write .*not valid zarr metadata",
}


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_voxelize_refuses_targets_it_did_not_write(work, kind, overwrite):
    out = _setup_target(work, kind)
    refused(work, "voxelize", work / "raw", "--out", out, "--backend", "numpy", "--bins", "4",
            *(["--overwrite"] if overwrite else []), match=TARGETS[kind])


@pytest.mark.parametrize("kind", ["file", "foreign folder", "zarr group not svrt", "under a file", "missing parent"])
def test_import_h5_refuses_targets_it_did_not_write(work, kind):
    export_store_h5(work / "s.zarr", work / "s.h5", progress=False)
    out = _setup_target(work, kind)
    refused(work, "import-h5", work / "s.h5", out, "--overwrite", match=TARGETS[kind] + "|exists and")


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (["--scheduler", "bogus"], 1, r"--scheduler 'bogus' is neither"),
        (["--scheduler", "tcp://host"], 1, r"port required"),
        (["--bins", "0"], 2, r"Invalid value for '--bins'"),
        (["--mode", "cubic"], 2, r"Invalid value for '--mode'"),
        (["--sequences", "train/NOPE"], 1, r"--sequences names not in the align log: \['train/NOPE'\]"),
        (["--blur-dir", "nowhere"], 1, r"0 images in .*nowhere"),
        (["--workers", "0", "--scheduler", "local"], 2, r"Invalid value for '--workers'"),
    ],
)
def test_voxelize_bad_options(work, args, code, match):
    refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "4", *args,
            code=code, match=match)


def test_resume_refuses_a_store_built_from_other_inputs(work):
    dat = work / "raw" / SEQ / "spike" / "000001.dat"
    data = bytearray(dat.read_bytes())
    data[10] ^= 0xFF  # same size, other content, other mtime
    dat.write_bytes(bytes(data))
    refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "4",
            match=rf"{SEQ}: {SEQ}/spike/000001\.dat changed since it was stored.*--overwrite")
    png = _png(work, 0)
    png.write_bytes(png.read_bytes() + b"\0")  # one byte longer: caught by size
    refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "4",
            match=r"000000\.png has \d+ bytes, \d+ when stored")


def test_resume_refuses_other_voxel_settings_and_other_layouts(work):
    refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "8",
            match=r"holds voxels .*'bins': 4.*pass --overwrite")
    meta = json.loads((work / "s.zarr" / "zarr.json").read_text())
    meta["attributes"][L.ROOT_ATTR]["version"] = 1
    (work / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "4",
            match=r"layout version 1; this svrt reads version 2 \(version 1 stores carry no chunk checksums\)"
                  r".*--overwrite")


def test_a_foreign_folder_at_a_sequence_path_is_never_replaced(work):
    seq = work / "s.zarr" / SEQ
    shutil.rmtree(seq)
    seq.mkdir()
    (seq / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"], ["--no-resume"]):
        refused(work, "voxelize", work / "raw", "--out", work / "s.zarr", "--backend", "numpy", "--bins", "4",
                *extra, match=r"SYN0000_07_00 exists and is not an svrt sequence; refusing to replace it")


# -- damaged stores: verify, readers, resume ---------------------------------------------------------


def _flip(path: Path, at: int = 40) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x5A
    path.write_bytes(bytes(raw))


def _empty_index_entry(path: Path, chunks_in_shard: int) -> None:
    """Mark the first chunk empty in the shard index and recompute the index checksum (deliberate damage)."""
    import google_crc32c

    raw = bytearray(path.read_bytes())
    n = 16 * chunks_in_shard
    index = bytearray(raw[-n - 4 : -4])
    index[0:16] = b"\xff" * 16
    raw[-n - 4 :] = bytes(index) + int(google_crc32c.value(bytes(index))).to_bytes(4, "little")
    path.write_bytes(bytes(raw))


DAMAGE = {
    "deleted voxel shard": (lambda s: _shard(s, SEQ, "voxels").unlink(), r"voxels: chunk \(0, 0, 0, 0\).*missing"),
    "flipped blur byte": (lambda s: _flip(_shard(s, SEQ, "blur")), r"blur: chunk \(.*checksum mismatch"),
    "flipped spikes byte": (lambda s: _flip(_shard(s, SEQ, "spikes")), r"spikes: chunk \(.*checksum mismatch"),
    "flipped voxel byte": (lambda s: _flip(_shard(s, SEQ, "voxels"), 20), r"voxels: chunk \(.*checksum mismatch"),
    "truncated shard": (lambda s: _shard(s, SEQ, "sharp").write_bytes(_shard(s, SEQ, "sharp").read_bytes()[:40]),
                        r"sharp: chunk \(0, 0, 0, 0\).*cannot hold its index"),
    "flipped shard index": (lambda s: _flip(_shard(s, SEQ, "voxels"), -10), r"shard index checksum mismatch"),
    "empty index entry": (lambda s: _empty_index_entry(_shard(s, SEQ, "voxels"), 3),
                          r"voxels: chunk \(0, 0, 0, 0\).*marks it empty"),
    "deleted windows chunk": (lambda s: _shard(s, SEQ, "windows").unlink(), r"windows: chunk \(0, 0\).*missing"),
    "truncated array zarr.json": (lambda s: (s / SEQ / "voxels" / "zarr.json").write_text('{"shape": [3, 4'),
                                  r"voxels/zarr\.json is not valid JSON"),
    "truncated group zarr.json": (lambda s: (s / SEQ / "zarr.json").write_text('{"attri'),
                                  rf"{SEQ}: .*zarr\.json is not valid zarr metadata"),
    "missing completion marker": (lambda s: _drop_marker(s / SEQ), rf"{SEQ}: incomplete \(no completion marker\)"),
    "deleted array": (lambda s: shutil.rmtree(s / SEQ / "spikes"), rf"{SEQ}/spikes: missing"),
}


def _drop_marker(folder: Path) -> None:
    meta = json.loads((folder / "zarr.json").read_text())
    del meta["attributes"][L.COMPLETE_ATTR]
    (folder / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_verify_reports_every_kind_of_damage_and_resume_repairs_it(work, damage):
    s = work / "s.zarr"
    DAMAGE[damage][0](s)
    out = refused(work, "verify", s, match=DAMAGE[damage][1] + r".*rebuild the damaged sequences")
    assert f"--sequences {SEQ} --no-resume" in out
    # the command verify prints rebuilds exactly the damaged sequence, beside the old one
    status, output = cli("voxelize", work / "raw", "--out", s, "--backend", "numpy", "--bins", "4",
                         "--sequences", SEQ, "--no-resume")
    assert status == 0, output
    assert verify_store(s).ok
    assert store_contents(s)[tuple(SEQ.split("/"))] == store_contents(_pristine(work))[tuple(SEQ.split("/"))]


def _pristine(work: Path) -> Path:
    out = work / "pristine.zarr"
    if not out.exists():
        voxelize_dataset(work / "raw", work / "raw" / "align.csv", out, bins=4, backend="numpy", progress=False)
    return out


@pytest.mark.parametrize("damage", ["deleted voxel shard", "empty index entry", "deleted windows chunk",
                                    "truncated array zarr.json", "missing completion marker"])
def test_plain_resume_rebuilds_missing_chunks_and_markers(work, damage):
    s = work / "s.zarr"
    DAMAGE[damage][0](s)
    others = tree_digest(s, skip=(s / SEQ,))
    status, output = cli("voxelize", work / "raw", "--out", s, "--backend", "numpy", "--bins", "4")
    assert status == 0, output
    assert f"rebuild {SEQ}:" in output and "wrote 1 sequence(s)" in output and "skipped 2 complete" in output
    assert verify_store(s).ok
    assert tree_digest(s, skip=(s / SEQ,)) == others  # the other sequences were not touched


@pytest.mark.parametrize("damage", ["deleted voxel shard", "flipped voxel byte", "empty index entry",
                                    "flipped shard index"])
def test_readers_never_return_damaged_data(work, damage):
    s = work / "s.zarr"
    DAMAGE[damage][0](s)
    seq = open_store(s).sequence(*SEQ.split("/"))
    with pytest.raises(SvrtError, match=r"voxels: chunk \(.*svrt-data verify"):
        seq.voxels[...]  # zarr-python, checked
    from svrt_data.loader import SpikeDeblurDataset

    ds = SpikeDeblurDataset(s, "train", clip_len=2, mode="eval", sequences=["SYN0000_07_00"])
    with pytest.raises(SvrtError, match=r"voxels: chunk \(.*svrt-data verify"):
        for i in range(len(ds)):
            ds[i]  # the fast reader
    ref = SpikeDeblurDataset(s, "train", clip_len=2, mode="eval", sequences=["SYN0000_07_00"],
                             reader="zarr")
    with pytest.raises(SvrtError, match=r"voxels: chunk \(.*svrt-data verify"):
        for i in range(len(ref)):
            ref[i]


def test_inspect_and_export_of_damaged_stores_are_one_line(work):
    s = work / "s.zarr"
    _flip(_shard(s, SEQ, "blur"))
    refused(work, "export-h5", s, work / "s.h5", match=r"blur: chunk .*checksum mismatch.*svrt-data verify")
    (s / "zarr.json").write_text("{")
    refused(work, "inspect", s, match=r"zarr\.json is not valid zarr metadata")
    refused(work, "verify", s, match=r"root cannot be read")


# -- HDF5 --------------------------------------------------------------------------------------------


def test_hdf5_bad_inputs(work):
    (work / "x.h5").write_bytes(b"noth5 at all")
    refused(work, "inspect", work / "x.h5", match=r"x\.h5: not a readable HDF5 file")
    refused(work, "import-h5", work / "x.h5", work / "y.zarr", match=r"x\.h5: not a readable HDF5 file")
    (work / "notes.txt").write_text("mine")
    export_store_h5(work / "s.zarr", work / "s.h5", progress=False)
    refused(work, "export-h5", work / "s.zarr", work / "notes.txt", "--overwrite",
            match=r"notes\.txt exists and is not an HDF5 file svrt wrote")
    refused(work, "export-h5", work / "s.zarr", work / "s.h5", match=r"s\.h5 exists; pass --overwrite")


def test_import_h5_validates_fully_before_replacing_a_store(work, store):
    import h5py

    export_store_h5(work / "s.zarr", work / "s.h5", progress=False)
    shutil.copy(work / "s.h5", work / "old.h5")
    with h5py.File(work / "old.h5", "r+") as f:
        attrs = json.loads(f.attrs["svrt_attrs"])
        attrs[L.ROOT_ATTR]["version"] = 1
        f.attrs["svrt_attrs"] = json.dumps(attrs)
    refused(work, "import-h5", work / "old.h5", work / "s.zarr", "--overwrite", match=r"layout version 1")
    shutil.copy(work / "s.h5", work / "evil.h5")
    with h5py.File(work / "evil.h5", "r+") as f:
        f.move("train/SYN0000_07_00", "train/.SYN0000_07_00.svrt-new")
    refused(work, "import-h5", work / "evil.h5", work / "s.zarr", "--overwrite", match=r"not a plain split/sequence")
    with h5py.File(work / "evil.h5", "r+") as f:
        f.move("train/.SYN0000_07_00.svrt-new", "train/SYN0000_07_00")
        f["train/SYN0000_07_00"].attrs["svrt_attrs"] = "{not json"
    refused(work, "import-h5", work / "evil.h5", work / "s.zarr", "--overwrite", match=r"not valid JSON")
    (work / "a.dat").write_bytes(b"mine")
    status, _ = cli("export-h5", work / "raw" / SEQ / "spike" / "000000.dat", work / "a.h5", "--geometry", "32x64")
    assert status == 0
    refused(work, "import-h5", work / "a.h5", work / "a.dat", "--overwrite", match=r"cannot prove it wrote it")
    # and a good import with --overwrite replaces the store by one equal to it
    status, output = cli("import-h5", work / "s.h5", work / "s.zarr", "--overwrite")
    assert status == 0, output
    assert_same_store(store, work / "s.zarr")
    assert verify_store(work / "s.zarr").ok and not list(work.glob(".*svrt-*"))


def _edited_h5(work: Path, edit) -> Path:
    import h5py

    path = work / "edited.h5"
    shutil.copy(work / "s.h5", path)
    with h5py.File(path, "r+") as f:
        edit(f[SEQ])
    return path


def _set_spike_width(group, width: int) -> None:
    attrs = json.loads(group.attrs["svrt_attrs"])
    attrs[L.SEQUENCE_ATTR]["spike"]["width"] = width
    group.attrs["svrt_attrs"] = json.dumps(attrs)


def _short_windows(group) -> None:
    good = group["windows"][...]
    keep = dict(group["windows"].attrs)
    del group["windows"]
    group.create_dataset("windows", data=good[:2])
    group["windows"].attrs.update(keep)


@pytest.mark.parametrize("edit, match", [
    (_short_windows, rf"/{SEQ}/windows: float64 \(2, 2\), expected float64 \(3, 2\)"),
    (lambda g: g["voxels"].attrs.__setitem__("dimension_names", json.dumps(["frame", "bin", "y", "x"])),
     rf"/{SEQ}/voxels: dimension names \('frame', 'bin', 'y', 'x'\), expected \('frame', 'bin', 'spike_y', "
     r"'spike_x'\)"),
    (lambda g: _set_spike_width(g, 60), rf"/{SEQ}: its attributes do not describe a sequence of layout v2 .*spike "
                                        r"width 60 is not a multiple of 8"),
    (lambda g: _set_spike_width(g, 72), rf"/{SEQ}/spikes: uint8 \(\d+, 32, 8\), expected uint8 \(\d+, 32, 9\)"),
])
def test_import_h5_takes_the_arrays_from_the_layout(work, edit, match):
    # every exported array must be the one sequence_arrays describes for the sequence's attributes, checked
    # before anything is written: the store to be replaced stays as it was
    export_store_h5(work / "s.zarr", work / "s.h5", progress=False)
    refused(work, "import-h5", _edited_h5(work, edit), work / "s.zarr", "--overwrite",
            match=r"edited\.h5 cannot be imported: .*" + match)


# -- Dataset arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "../train"}, r"split '\.\./train'"),
        ({"split": "/abs"}, r"split '/abs'"),
        ({"split": "train", "sequences": ["../../x"]}, r"has no sequence\(s\) \['\.\./\.\./x'\]"),
        ({"split": "train", "cache_bytes": -1}, r"cache_bytes must be an integer >= 0"),
    ],
)
def test_dataset_arguments(work, kwargs, match):
    from svrt_data.loader import SpikeDeblurDataset

    split = kwargs.pop("split")
    before = tree_digest(work)
    with pytest.raises(SvrtError, match=match):
        SpikeDeblurDataset(work / "s.zarr", split, clip_len=2, mode="eval", **kwargs)
    assert tree_digest(work) == before


def test_dataset_refuses_v1_stores_with_the_rebuild_command(work):
    from svrt_data.loader import SpikeDeblurDataset

    meta = json.loads((work / "s.zarr" / "zarr.json").read_text())
    meta["attributes"][L.ROOT_ATTR]["version"] = 1
    (work / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(SvrtError, match=r"version 1.*svrt-data voxelize RAW --out .*s\.zarr --overwrite"):
        SpikeDeblurDataset(work / "s.zarr", "train", clip_len=2, mode="eval")


# -- bugs are reported as bugs -----------------------------------------------------------------------


def test_an_internal_error_says_it_is_a_bug(work, monkeypatch):
    import svrt_data.store.verify as v

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(v, "verify_store", broken)
    monkeypatch.setattr("svrt_data.store.verify_store", broken)
    out = refused(work, "verify", work / "s.zarr", code=2,
                  match=r"internal error, a bug in svrt: TypeError: unsupported operand\. Please report it to the "
                        r"svrt maintainers .*SVRT_DEBUG=1")
    assert len(out.strip().splitlines()) == 1


# -- kill -9 -----------------------------------------------------------------------------------------


def _spawn(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.data", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _kill_when(p: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL ``p`` as soon as ``ready()``; True when it was killed before finishing."""
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if ready():
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.002)
    p.wait()
    return False


def _temps(store: Path) -> list[Path]:
    """The writers' temporary folders in ``store`` (beside sequences, with or without a split). Never recurses
    into them: a running writer renames them away at any moment."""
    return [p for pattern in (".*.svrt-new", "*/.*.svrt-new") for p in store.glob(pattern)] if store.exists() else []


def _bins(folder: Path) -> int | None:
    try:
        return json.loads((folder / "zarr.json").read_text())["attributes"][L.SEQUENCE_ATTR]["voxel"]["bins"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory) -> Path:
    return make_raw(tmp_path_factory.mktemp("big") / "raw", sequences=4, test_sequences=1, frames=12, seed=7)


def test_kill_9_during_voxelize_then_rerun(big_raw, tmp_path):
    clean = tmp_path / "clean.zarr"
    voxelize_dataset(big_raw, big_raw / "align.csv", clean, bins=8, backend="numpy", progress=False)
    out = tmp_path / "k.zarr"
    p = _spawn("voxelize", big_raw, "--out", out, "--bins", "8", "--backend", "numpy")
    # kill while a sequence is being built after at least one was swapped in
    killed = _kill_when(p, lambda: bool(_temps(out)) and any(_bins(d) for d in out.glob("*/SYN*")))
    assert killed, "the run finished before it could be killed; make the data larger"
    s = open_store(out)
    assert s.incomplete() == [] and 1 <= len(s.sequence_keys()) < 5  # whole sequences only
    for split, name in s.sequence_keys():  # every sequence in place is complete and equal to the clean one
        assert store_contents(out)[(split, name)] == store_contents(clean)[(split, name)]
    status, output = cli("voxelize", big_raw, "--out", out, "--bins", "8", "--backend", "numpy")
    assert status == 0, output
    assert "cleanup: deleted" in output and "skipped" in output
    assert_same_store(clean, out)
    assert verify_store(out).ok and not _temps(out)


def test_kill_9_during_overwrite_never_loses_the_old_store(big_raw, tmp_path):
    old = tmp_path / "old.zarr"
    voxelize_dataset(big_raw, big_raw / "align.csv", old, bins=4, backend="numpy", progress=False)
    old_contents = store_contents(old)
    new = tmp_path / "new.zarr"
    voxelize_dataset(big_raw, big_raw / "align.csv", new, bins=8, backend="numpy", progress=False)
    new_contents = store_contents(new)
    out = tmp_path / "o.zarr"
    shutil.copytree(old, out)
    p = _spawn("voxelize", big_raw, "--out", out, "--bins", "8", "--backend", "numpy", "--overwrite")
    killed = _kill_when(p, lambda: bool(_temps(out)) and any(_bins(d) == 8 for d in out.glob("*/SYN*")))
    assert killed, "the run finished before it could be killed; make the data larger"
    # nothing lost: every sequence is in place, complete, and either the old one or its full replacement
    keys = [(split, name) for split, name in open_store(out).sequence_keys(include_incomplete=True)]
    assert sorted(keys) == sorted(k for k in old_contents if k != "root")
    kinds = []
    for split, name in keys:
        folder = out / split / name
        attrs = json.loads((folder / "zarr.json").read_text())["attributes"]
        assert L.COMPLETE_ATTR in attrs
        got = {an: np.asarray(__import__("zarr").open_array(str(folder / an), mode="r")[...]).tobytes()
               for an in ("blur", "sharp", "spikes", "windows", "voxels")}
        source = old_contents if _bins(folder) == 4 else new_contents
        assert got == {an: source[(split, name)][1][an][2] for an in got}
        kinds.append(_bins(folder))
    assert 4 in kinds and 8 in kinds  # killed between two replacements
    status, output = cli("voxelize", big_raw, "--out", out, "--bins", "8", "--backend", "numpy", "--overwrite")
    assert status == 0, output
    assert_same_store(new, out)
    assert verify_store(out).ok and not _temps(out)


# -- other writers: align --out, inspect --png, synth --overwrite -----------------------------------


def test_align_and_preview_outputs_replace_only_their_own_files(work):
    (work / "notes.txt").write_text("mine")
    refused(work, "align", work / "raw", "--geometry", "32x64", "--out", work / "notes.txt", "--overwrite",
            match=r"notes\.txt exists and is not an align log")
    dat = work / "raw" / SEQ / "spike" / "000000.dat"
    refused(work, "inspect", dat, "--geometry", "32x64", "--png", work / "notes.txt",
            match=r"notes\.txt exists and is not a preview svrt wrote")
    status, output = cli("inspect", dat, "--geometry", "32x64", "--png", work / "p.png")
    assert status == 0, output
    first = (work / "p.png").read_bytes()
    status, output = cli("inspect", dat, "--geometry", "32x64", "--png", work / "p.png")  # its own: replaced
    assert status == 0 and (work / "p.png").read_bytes() == first


@pytest.mark.parametrize(("args", "match"), [(["--frames", "0"], r"frames .* must be >= 1"),
                                             (["--size", "64x100"], r"spike width must be a multiple of 8"),
                                             (["--threshold", "0.5"], r"threshold")])
def test_synth_overwrite_with_bad_parameters_keeps_the_old_dataset(work, args, match):
    refused(work, "synth", work / "raw", "--overwrite", *args, match=match)


def test_synth_overwrite_builds_beside_and_keeps_foreign_files(work, monkeypatch):
    (work / "raw" / "notes.txt").write_text("mine")
    import svrt_data.synth.builder as b

    real, calls = b._build_sequence, {"n": 0}

    def dies_on_the_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(b, "_build_sequence", dies_on_the_second)
    refused(work, "synth", work / "raw", "--overwrite", "--frames", "2", "--size", "64x128", match="disk full",
            skip=(work / "raw" / ".synth.svrt-new",))
    monkeypatch.setattr(b, "_build_sequence", real)
    status, output = cli("synth", work / "raw", "--overwrite", "--frames", "2", "--size", "64x128",
                         "--sequences", "1", "--test-sequences", "0")
    assert status == 0, output
    assert (work / "raw" / "notes.txt").read_text() == "mine" and not (work / "raw" / "test").exists()
    assert sorted(p.name for p in (work / "raw").iterdir()) == ["align.csv", "notes.txt", "synth.json", "train"]
