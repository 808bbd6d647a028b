"""Dataset manifests: one small versioned YAML file per known raw layout (``data_manifests/``).

A manifest names a layout's folders, spike geometry and row order, RGB size and the rule that maps
blurry frames to spike windows, so ``svrt-data align --manifest NAME RAW_ROOT`` can write the align
log of a downloaded dataset. Fields a manifest could not verify are listed under ``unverified`` and
reported; values it leaves ``null`` must come from the caller: nothing is guessed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from svrt_data.align import CentredExposure, PerFrameFiles, Rule
from svrt_data.geometry import Geometry
from svrt_data.names import name_problem, path_problem
from svrt_errors import ManifestError

__all__ = ["MANIFEST_VERSION", "Manifest", "list_manifests", "load_manifest"]

MANIFEST_VERSION = 1
_PACKAGE = "data_manifests"


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    splits: tuple[str, ...]
    layout: dict[str, Any]
    spike: dict[str, Any]
    rgb: dict[str, Any]
    align: dict[str, Any]
    unverified: tuple[str, ...] = ()
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def blur_dir(self) -> str:
        return self.layout.get("blur_dir", "blur")

    @property
    def sharp_dir(self) -> str | None:
        return self.layout.get("sharp_dir")

    def geometry(self, raw_root: str | os.PathLike | None = None) -> Geometry:
        """The spike geometry; for ``from_synth_json`` layouts read from ``RAW_ROOT/synth.json``."""
        if self.spike.get("from_synth_json"):
            if raw_root is None:
                raise ManifestError(f"manifest {self.name}: the geometry is in RAW_ROOT/synth.json; give RAW_ROOT")
            path = Path(raw_root) / "synth.json"
            try:
                lay = json.loads(path.read_text())["layout"]
                h, w = lay["spike_size"]
                return Geometry(int(h), int(w), bool(lay["spike_flip"]), float(lay["spike_rate_hz"]),
                                name=f"{h}x{w}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ManifestError(f"{path}: cannot read the spike layout ({exc}); was RAW_ROOT made by "
                                    "`svrt-data synth`?") from None
        try:
            return Geometry(int(self.spike["height"]), int(self.spike["width"]), bool(self.spike["flip"]),
                            float(self.spike.get("rate_hz", 20000.0)), name=self.name)
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest {self.name}: spike needs height, width, flip ({exc})") from None

    def rule(self, **overrides: float | str | None) -> Rule:
        """The align rule, with command-line values filling (or overriding) the manifest's."""
        spec = {**self.align, **{k: v for k, v in overrides.items() if v is not None}}
        kind = spec.get("rule")
        if kind == "per-frame-files":
            return PerFrameFiles(frames_per_blur=spec.get("frames_per_blur", "NN*8"))
        elif kind == "centred-exposure":
            missing = [k for k in ("exposure", "step", "first_centre") if spec.get(k) is None]
            if missing:
                flags = " ".join(f"--{k.replace('_', '-')} VALUE" for k in missing)
                raise ManifestError(f"manifest {self.name} leaves {', '.join(missing)} to you (they depend on "
                                    f"how your copy was built); pass {flags}")
            stream = self.layout.get("stream", "spike/stream.dat")
            return CentredExposure(float(spec["exposure"]), float(spec["step"]), float(spec["first_centre"]), stream)
        else:
            raise ManifestError(f"manifest {self.name}: unknown align rule {kind!r} "
                                "(expected per-frame-files or centred-exposure)")


def _check_names(data: dict, source: str) -> None:
    """Splits and the layout's folders become paths: refuse anything but plain names before they are used."""
    problems = []
    splits, layout = data["splits"], data["layout"]
    if not isinstance(splits, list) or not splits:
        problems.append(f"splits must be a non-empty list of folder names, got {splits!r}")
    else:
        problems += [f"split {s!r} {why}" for s in splits if (why := name_problem(s))]
    if not isinstance(layout, dict):
        problems.append(f"layout must be a mapping, got {layout!r}")
    else:
        for key in ("spike_dir", "blur_dir", "sharp_dir"):
            if layout.get(key) is not None and (why := name_problem(layout[key])):
                problems.append(f"layout.{key} {layout[key]!r} {why}")
        if layout.get("stream") is not None and (why := path_problem(layout["stream"])):
            problems.append(f"layout.stream {layout['stream']!r} {why}")
    if problems:
        raise ManifestError(f"{source}: " + "; ".join(problems) + "; names must be plain relative folder names")


def list_manifests() -> list[str]:
    """Names of the manifests shipped with svrt."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files(_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def load_manifest(name_or_path: str | os.PathLike) -> Manifest:
    """A shipped manifest by name (``spk-gopro``) or any manifest file by path."""
    import yaml

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        entry = resources.files(_PACKAGE) / f"{name_or_path}.yaml"
        if not entry.is_file():
            raise ManifestError(f"unknown manifest {str(name_or_path)!r}; shipped: {', '.join(list_manifests())}, "
                                "or give a path to a .yaml file")
        text, source = entry.read_text(encoding="utf-8"), f"{_PACKAGE}/{name_or_path}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping at the top level")
    version = data.get("manifest_version")
    if version != MANIFEST_VERSION:
        raise ManifestError(f"{source}: manifest_version {version!r} is not supported (this svrt reads "
                            f"{MANIFEST_VERSION})")
    missing = [k for k in ("name", "splits", "layout", "spike", "align") if k not in data]
    if missing:
        raise ManifestError(f"{source}: missing {', '.join(missing)}")
    _check_names(data, source)
    known = {"manifest_version", "name", "title", "splits", "layout", "spike", "rgb", "align", "unverified"}
    return Manifest(
        name=str(data["name"]), title=str(data.get("title", data["name"])), splits=tuple(data["splits"]),
        layout=dict(data["layout"]), spike=dict(data["spike"]), rgb=dict(data.get("rgb") or {}),
        align=dict(data["align"]), unverified=tuple(data.get("unverified") or ()), source=source,
        extra={k: v for k, v in data.items() if k not in known},
    )
