"""``svrt-data``: turn raw spike datasets into training stores.

Each command is thin: parse options, call one library function, report. Heavy imports (torch, zarr,
dask, cupy) happen inside commands, never at import, so ``svrt-data --help`` stays instant.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svrt")
def main() -> None:
    """Spike-camera data tools: synthesize, align, inspect and voxelize spike datasets."""
