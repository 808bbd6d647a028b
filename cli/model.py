"""``svrt-model``: train, evaluate, run and profile VRT / VRT+Spike.

torch is imported inside the commands only: ``svrt-model --help`` must not import it.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svrt")
def main() -> None:
    """VRT / VRT+Spike models: train, evaluate, infer and profile."""
