"""``svrt-data``: turn raw spike datasets into training stores.

Each command is thin: parse options, call one library function, report. Heavy imports (torch, zarr,
dask, cupy) happen inside commands, never at import, so ``svrt-data --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import SvrtGroup, geometry_option, library_errors, parse_size
from svrt_data.geometry import Geometry


@click.group(cls=SvrtGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svrt")
def main() -> None:
    """Spike-camera data tools: synthesize, align, inspect and voxelize spike datasets."""


def _open_stream(path: Path, geometry: Geometry | None, truncate: bool = False):
    """A .dat needs its geometry; an .h5 carries it."""
    from svrt_data.spike_io import SpikeStream

    if path.suffix.lower() in (".h5", ".hdf5"):
        from svrt_data.hdf5 import read_h5

        return read_h5(path)
    if geometry is None:
        raise click.UsageError(f"{path}: a .dat file stores no geometry; give --geometry HxW (e.g. 250x400)")
    return SpikeStream(path, geometry, truncate=truncate)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--geometry", "geometry_text", metavar="HxW|NAME", help="Spike frame size (required for .dat).")
@click.option("--flip/--no-flip", default=None, help="Rows stored bottom-up (default: registry's, else --flip).")
@click.option("--rate", "rate_hz", type=float, default=None, help="Spike rate in Hz (default 20000).")
@click.option("--truncate", is_flag=True, help="Ignore a trailing partial frame instead of failing.")
@click.option("--png", "png", type=click.Path(dir_okay=False, path_type=Path), help="Write a preview PNG here.")
@library_errors
def inspect(path: Path, geometry_text: str | None, flip: bool | None, rate_hz: float | None, truncate: bool,
            png: Path | None) -> None:
    """Describe a spike stream (.dat or .h5) or an svrt store (.zarr); optionally write a PNG preview."""
    from svrt_data.preview import stream_preview

    if path.is_dir():
        _inspect_store(path, png)
        return
    geometry = geometry_option(geometry_text, flip, rate_hz) if geometry_text else None
    stream = _open_stream(path, geometry, truncate)
    n = len(stream)
    rows = [
        ("file", str(path)),
        ("geometry", stream.geometry.describe()),
        ("frames", f"{n}" + (f" (dropped a partial frame of {stream.truncated_bytes} bytes)"
                            if getattr(stream, "truncated_bytes", 0) else "")),
        ("duration", f"{stream.duration_s * 1e3:.3f} ms"),
        ("firing rate", f"{stream.firing_rate():.4f} spikes/pixel/frame" if n else "n/a (empty stream)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
    if png is not None:
        if not n:
            raise click.ClickException(f"{path}: an empty stream has no preview")
        stream_preview(stream, png)
        click.echo(f"{'preview':<{width}}  {png} (time average of {n} frames)")


@main.command("export-h5")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--geometry", "geometry_text", metavar="HxW|NAME", help="Spike frame size (for a .dat SOURCE).")
@click.option("--flip/--no-flip", default=None, help="Rows stored bottom-up (default: registry's, else --flip).")
@click.option("--rate", "rate_hz", type=float, default=None, help="Spike rate in Hz (default 20000).")
@click.option("--chunk-frames", type=int, default=256, show_default=True, help="Frames per HDF5 chunk (.dat).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@library_errors
def export_h5_cmd(source: Path, out: Path, geometry_text: str | None, flip: bool | None, rate_hz: float | None,
                  chunk_frames: int, overwrite: bool) -> None:
    """Export an svrt store (SOURCE.zarr) or a .dat spike stream to HDF5; import-h5 reverses it bit-exactly."""
    from svrt_data.hdf5 import export_h5
    from svrt_data.store.h5 import check_h5_output, export_store_h5

    check_h5_output(out, overwrite=overwrite)  # new, or an HDF5 file svrt wrote (with --overwrite)
    if source.is_dir():
        export_store_h5(source, out, overwrite=overwrite)
        click.echo(f"wrote {out}")
        return
    geometry = geometry_option(geometry_text, flip, rate_hz) if geometry_text else None
    stream = _open_stream(source, geometry)
    export_h5(stream, out, chunk_frames=chunk_frames)
    click.echo(f"wrote {out}: {len(stream)} frames of {stream.height}x{stream.width}")


@main.command("import-h5")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--flip/--no-flip", default=None, help="Row order of the .dat to write (default: the source's).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@library_errors
def import_h5_cmd(source: Path, out: Path, flip: bool | None, overwrite: bool) -> None:
    """Turn an export-h5 file back into what it came from: an svrt store (OUT.zarr) or a .dat stream."""
    from svrt_data.hdf5 import import_h5, open_h5
    from svrt_data.store.h5 import H5_FORMAT, import_store_h5

    with open_h5(source) as f:
        is_store = f.attrs.get("svrt_format") == H5_FORMAT
    if is_store:
        import_store_h5(source, out, overwrite=overwrite)  # refuses anything at OUT but an svrt store
    else:
        if out.exists() or out.is_symlink():
            raise click.ClickException(
                f"{out} exists{'' if overwrite else '; pass --overwrite to replace it'}"
                + (" and svrt cannot prove it wrote it (.dat files carry no header); move or delete it yourself, "
                   "or choose another output" if overwrite else ""))
        import_h5(source, out, flip=flip)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("raw_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--validate", "validate_log", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Validate this existing align log against RAW_ROOT instead of writing one.")
@click.option("--manifest", help="A known layout (spk-gopro, sreds, spk-x4k1000fps, svrt-synth) or a manifest "
              ".yaml: geometry and rule come from it; the options below override it.")
@click.option("--rule", type=click.Choice(["per-frame-files", "centred", "timestamps"]), default=None,
              help="How blurry frames map to spike windows [default: per-frame-files].")
@click.option("--frames-per-blur", default=None,
              help="per-frame-files: spike frames per blurry frame: N, NN*k (NN from the sequence name) or "
                   "'file' [default: NN*8].")
@click.option("--exposure", type=float, help="centred: exposure length in spike frames.")
@click.option("--step", type=float, help="centred: spike frames between consecutive blurry frames.")
@click.option("--first-centre", type=float, help="centred: centre of blurry frame 0, in spike frames.")
@click.option("--stream", default="spike/stream.dat", show_default=True,
              help="centred: the long stream of each sequence, relative to the sequence folder.")
@click.option("--timestamps", "timestamps_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="timestamps: CSV split,sequence,frame,spike_file,start,end.")
@click.option("--unit", type=click.Choice(["s", "frames"]), default="s", show_default=True,
              help="timestamps: unit of start/end.")
@click.option("--geometry", "geometry_text", metavar="HxW|NAME", help="Spike frame size (not for --validate).")
@click.option("--flip/--no-flip", default=None, help="Rows stored bottom-up (default: registry's, else --flip).")
@click.option("--rate", "rate_hz", type=float, default=None, help="Spike rate in Hz (default 20000).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: RAW_ROOT/align.csv.")
@click.option("--overwrite", is_flag=True, help="Replace an existing log.")
@library_errors
def align(raw_root: Path, validate_log: Path | None, manifest: str | None, rule: str | None,
          frames_per_blur: str | None, exposure: float | None, step: float | None, first_centre: float | None,
          stream: str, timestamps_file: Path | None, unit: str, geometry_text: str | None, flip: bool | None,
          rate_hz: float | None, out: Path | None, overwrite: bool) -> None:
    """Write the align log of a raw dataset from a timing rule or a manifest, or validate an existing one."""
    from svrt_data import align as al

    if validate_log is not None:
        log = al.read_align_log(validate_log)
        al.validate_align_log(log, raw_root)
        n_seq = len(log.sequences())
        click.echo(f"{validate_log}: valid ({len(log.entries)} frames in {n_seq} sequences, "
                   f"{log.geometry.describe()})")
        return
    if manifest is not None and rule is None:
        from svrt_data.manifests import load_manifest

        m = load_manifest(manifest)
        for name in m.unverified:
            click.echo(f"warning: manifest {m.name}: {name} is not verified against a real copy; the log is "
                       "still validated against your streams", err=True)
        geometry = (geometry_option(geometry_text, flip, rate_hz) if geometry_text
                    else m.geometry(raw_root).with_options(flip=flip, rate_hz=rate_hz))
        spec = m.rule(frames_per_blur=frames_per_blur, exposure=exposure, step=step, first_centre=first_centre)
    else:
        if geometry_text is None:
            raise click.UsageError("--geometry is required to write an align log (e.g. --geometry 360x640), "
                                   "or use --manifest NAME")
        geometry = geometry_option(geometry_text, flip, rate_hz)
        rule = rule or "per-frame-files"
        if rule == "per-frame-files":
            spec = al.PerFrameFiles(frames_per_blur=frames_per_blur or "NN*8")
        elif rule == "centred":
            if exposure is None or step is None or first_centre is None:
                raise click.UsageError("--rule centred needs --exposure, --step and --first-centre")
            spec = al.CentredExposure(exposure, step, first_centre, stream)
        elif rule == "timestamps":
            if timestamps_file is None:
                raise click.UsageError("--rule timestamps needs --timestamps FILE")
            spec = al.Timestamps(str(timestamps_file), unit)
        else:
            raise click.UsageError(f"unknown rule {rule!r}")
    out = out or raw_root / "align.csv"
    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    log = al.build_align_log(raw_root, spec, geometry)
    al.write_align_log(log, out)
    click.echo(f"wrote {out}: {len(log.entries)} frames in {len(log.sequences())} sequences ({spec.describe()})")


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sequences", type=int, default=2, show_default=True, help="Sequences in the train split.")
@click.option("--test-sequences", type=int, default=1, show_default=True, help="Sequences in the test split.")
@click.option("--frames", type=int, default=6, show_default=True, help="Blurry frames per sequence.")
@click.option("--size", default="128x256", show_default=True, metavar="HxW", help="RGB frame size.")
@click.option("--spike-scale", type=float, default=0.5, show_default=True,
              help="Spike pixels per RGB pixel; the spike width must come out a multiple of 8.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds everything: same seed, same bytes.")
@click.option("--source-frames", type=int, default=7, show_default=True,
              help="NN: source frames per blurry frame (8 spike frames each; named SYNkkkk_NN_00).")
@click.option("--threshold", type=float, default=2.0, show_default=True, help="Integrate-and-fire threshold (>= 1).")
@click.option("--noise", "noise_std", type=float, default=0.0, show_default=True,
              help="Std of Gaussian intensity noise per pixel and spike frame (intensity in [0, 1]).")
@click.option("--dark-rate", type=float, default=0.0, show_default=True,
              help="Probability of a dark spike per pixel and spike frame.")
@click.option("--motion", type=float, default=1.0, show_default=True, help="Camera motion scale (0: static).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of your own photographs (default: scikit-image's bundled ones).")
@click.option("--overwrite", is_flag=True, help="Replace a synthetic dataset already in OUT_DIR.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sequences built at once, one process each (the files do not depend on it).")
@library_errors
def synth(out_dir: Path, sequences: int, test_sequences: int, frames: int, size: str, spike_scale: float, seed: int,
          source_frames: int, threshold: float, noise_std: float, dark_rate: float, motion: float,
          images: Path | None, overwrite: bool, workers: int) -> None:
    """Synthesize a raw dataset in the Spk-GoPro layout (blur, sharp, spike .dat, flow, align.csv)."""
    from svrt_data.synth import synthesize

    r = synthesize(out_dir, sequences=sequences, test_sequences=test_sequences, frames=frames,
                   size=parse_size(size), spike_scale=spike_scale, seed=seed, source_frames=source_frames,
                   threshold=threshold, noise_std=noise_std, dark_rate=dark_rate, motion=motion, images=images,
                   overwrite=overwrite, workers=workers)
    n_train = sum(split == "train" for split, _ in r.sequences)
    click.echo(f"wrote {r.out_dir}: {n_train} train + {len(r.sequences) - n_train} test sequences x {r.frames} frames "
               f"({r.size[0]}x{r.size[1]} RGB, {r.spike_size[0]}x{r.spike_size[1]} spikes, "
               f"{source_frames * 8} spike frames per blurry frame) in {r.seconds:.1f} s")
    click.echo(f"mean firing rate {r.firing_rate:.4f} spikes/pixel/frame; align log {r.align_log}")


def _inspect_store(path: Path, png: Path | None) -> None:
    from svrt_data.store import open_store
    from svrt_data.store.preview import sequence_preview

    store = open_store(path)
    vox = store.voxel
    click.echo(f"store {path}: layout v{store.attrs['svrt_layout']['version']}, voxels K={vox['bins']} "
               f"mode={vox['mode']} ({vox['dtype']})")
    header = ("split", "sequence", "frames", "rgb", "spikes", "spike frames", "sharp")
    rows = []
    for split, name in store.sequence_keys():
        seq = store.sequence(split, name)
        rows.append((split or "-", name, str(seq.n_frames), "x".join(map(str, seq.rgb_shape)),
                     "x".join(map(str, seq.spike_shape)), str(seq.spikes.shape[0]),
                     "yes" if seq.sharp is not None else "no"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for r in (header, *rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for key in store.incomplete():
        click.echo(f"incomplete: {key} (rerun svrt-data voxelize --resume)")
    total = sum(int(r[2]) for r in rows)
    click.echo(f"{len(rows)} complete sequences, {total} frames")
    if png is not None:
        if not rows:
            raise click.ClickException(f"{path}: no complete sequence to preview")
        split, name = store.sequence_keys()[0]
        sequence_preview(store.sequence(split, name), png)
        click.echo(f"preview: {png} ({split}/{name}, middle frame: blurry | spike average | voxel bins)")


@main.command()
@click.argument("raw_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--align", "align_log", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Align log (default: RAW_ROOT/align.csv).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Store to write: a new path, an empty folder or an svrt store.")
@click.option("--bins", type=click.IntRange(1, 1024), default=32, show_default=True, help="Voxel bins K.")
@click.option("--mode", type=click.Choice(["count", "linear"]), default="count", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cupy"]), default="auto",
              show_default=True, help="Voxelization backend (cupy: GPU workers only).")
@click.option("--overwrite", is_flag=True,
              help="Rebuild every sequence of an existing svrt store (each replaced only once its new version is "
                   "complete); sequences not in this run are deleted at the end.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip sequences already complete, after checking their inputs and chunks (damaged or incomplete "
                   "ones are rebuilt).")
@click.option("--sequences", "sequences_text", help="Comma-separated sequences (split/name or name) to write.")
@click.option("--scheduler", default="none", show_default=True,
              help="none (in-process), local (a local Dask cluster) or a scheduler address tcp://host:8786.")
@click.option("--workers", type=click.IntRange(1, 1024), default=2, show_default=True,
              help="Processes for --scheduler local.")
@click.option("--blur-dir", default="blur", show_default=True, help="Folder of blurry frames in each sequence.")
@click.option("--sharp-dir", default="sharp", show_default=True, help="Folder of sharp frames ('' for none).")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; write nothing.")
@library_errors
def voxelize(raw_root: Path, align_log: Path | None, out: Path, bins: int, mode: str, backend: str, overwrite: bool,
             resume: bool, sequences_text: str | None, scheduler: str, workers: int, blur_dir: str, sharp_dir: str,
             dry_run: bool) -> None:
    """Voxelize a raw dataset into an svrt Zarr store (validates everything before writing; resumable)."""
    from pipelines.voxelize_job import voxelize_dataset

    align_log = align_log or raw_root / "align.csv"
    if not align_log.is_file():
        raise click.UsageError(f"no align log at {align_log}; write one with `svrt-data align` or pass --align")
    seqs = [s.strip() for s in sequences_text.split(",") if s.strip()] if sequences_text else None
    report = voxelize_dataset(raw_root, align_log, out, bins=bins, mode=mode, backend=backend, overwrite=overwrite,
                              resume=resume, sequences=seqs, scheduler=scheduler, workers=workers, dry_run=dry_run,
                              blur_dir=blur_dir, sharp_dir=sharp_dir or None)
    plan = report.plan
    for line in report.cleaned:
        click.echo(f"cleanup: {line}")
    for key, why in report.rebuilt.items():
        click.echo(f"rebuild {key}: {why}")
    if dry_run:
        click.echo(f"dry run: {len(plan.tasks)} sequence(s) to write, {len(plan.skipped)} complete and skipped")
        for task_id, key, action, frames, shards in plan.table():
            click.echo(f"  task {task_id:>3}  {action:<7}  {key}  ({frames} frames, {shards} shards)")
        return
    secs = max(report.seconds, 1e-9)
    click.echo(f"wrote {len(report.written)} sequence(s) to {out}, skipped {len(plan.skipped)} complete"
               + (f", deleted {len(report.deleted)} not in this run ({', '.join(report.deleted[:5])})"
                  if report.deleted else ""))
    click.echo(f"  frames {report.frames}, spike frames {report.spike_frames}; read {report.bytes_in / 1e6:.1f} MB, "
               f"wrote {report.bytes_out / 1e6:.1f} MB in {report.seconds:.1f} s "
               f"({report.frames / secs:.1f} frames/s, {report.bytes_in / secs / 1e6:.1f} MB/s in)")


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-checksums", is_flag=True,
              help="Only check that every chunk exists (shard indexes), without decoding (faster).")
def verify(store: Path, no_checksums: bool) -> None:
    """Check a store: completeness, metadata, every chunk (present, crc32c, decodable), shapes, windows and
    array checksums. Lists every damaged array and chunk; exit status 1 if anything is wrong."""
    from svrt_data.store import verify_store

    report = verify_store(store, checksums=not no_checksums)
    for p in report.problems:
        click.echo(f"PROBLEM: {p}")
    click.echo(f"{store}: {report.sequences} sequences, {report.frames} frames: "
               f"{'all well' if report.ok else f'{len(report.problems)} problem(s)'}")
    if not report.ok:
        if report.damaged:
            click.echo(f"rebuild the damaged sequences from the raw data: {report.rebuild_hint()}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
