"""``svrt-data``: turn raw spike datasets into training stores.

Each command is thin: parse options, call one library function, report. Heavy imports (torch, zarr,
dask, cupy) happen inside commands, never at import, so ``svrt-data --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import geometry_option, geometry_options, library_errors
from svrt_data.geometry import Geometry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    """Describe a spike stream (.dat or .h5): geometry, frames, firing rate; optionally a PNG preview."""
    from svrt_data.preview import stream_preview

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
@geometry_options
@click.option("--chunk-frames", type=int, default=256, show_default=True, help="Frames per HDF5 chunk.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@library_errors
def export_h5_cmd(source: Path, out: Path, geometry: Geometry, chunk_frames: int, overwrite: bool) -> None:
    """Export a .dat spike stream to HDF5 (packed upright rows, chunked along time)."""
    from svrt_data.hdf5 import export_h5

    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    stream = _open_stream(source, geometry)
    export_h5(stream, out, chunk_frames=chunk_frames)
    click.echo(f"wrote {out}: {len(stream)} frames of {stream.height}x{stream.width}")


@main.command("import-h5")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--flip/--no-flip", default=None, help="Row order of the .dat to write (default: the source's).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@library_errors
def import_h5_cmd(source: Path, out: Path, flip: bool | None, overwrite: bool) -> None:
    """Write an HDF5 spike stream (from export-h5) back to a .dat file, bit for bit."""
    from svrt_data.hdf5 import import_h5

    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    import_h5(source, out, flip=flip)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("raw_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--validate", "validate_log", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Validate this existing align log against RAW_ROOT instead of writing one.")
@click.option("--rule", type=click.Choice(["per-frame-files", "centred", "timestamps"]), default="per-frame-files",
              show_default=True, help="How blurry frames map to spike windows.")
@click.option("--frames-per-blur", default="NN*8", show_default=True,
              help="per-frame-files: spike frames per blurry frame: N, NN*k (NN from the sequence name) or 'file'.")
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
def align(raw_root: Path, validate_log: Path | None, rule: str, frames_per_blur: str, exposure: float | None,
          step: float | None, first_centre: float | None, stream: str, timestamps_file: Path | None, unit: str,
          geometry_text: str | None, flip: bool | None, rate_hz: float | None, out: Path | None,
          overwrite: bool) -> None:
    """Write the align log of a raw dataset from a timing rule, or validate an existing one."""
    from svrt_data import align as al

    if validate_log is not None:
        log = al.read_align_log(validate_log)
        al.validate_align_log(log, raw_root)
        n_seq = len(log.sequences())
        click.echo(f"{validate_log}: valid ({len(log.entries)} frames in {n_seq} sequences, "
                   f"{log.geometry.describe()})")
        return
    if geometry_text is None:
        raise click.UsageError("--geometry is required to write an align log (e.g. --geometry 360x640)")
    geometry = geometry_option(geometry_text, flip, rate_hz)
    if rule == "per-frame-files":
        spec = al.PerFrameFiles(frames_per_blur=frames_per_blur)
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
