from __future__ import annotations

import pytest

from svrt_data import GEOMETRIES, Geometry, GeometryError, get_geometry, parse_geometry
from svrt_data.geometry import geometries_fitting


def test_registry_holds_the_geometries_in_use():
    expected = {"250x400": (250, 400, 12500), "250x416": (250, 400, 13000), "360x640": (360, 640, 28800),
                "180x320": (180, 320, 7200), "500x800": (500, 800, 50000), "1000x1000": (1000, 1000, 125000),
                "1000x1024": (1000, 1000, 128000)}
    for name, (h, w, fb) in expected.items():
        g = GEOMETRIES[name]
        assert (g.height, g.width, g.frame_bytes) == (h, w, fb), name
    assert get_geometry("spk-gopro").flip is True
    assert get_geometry("spike-x4k").flip is False  # simulator data stored top-down
    assert get_geometry("vidar-250x400-40k").rate_hz == 40000.0


def test_parse_geometry():
    g = parse_geometry("64x128")
    assert (g.height, g.width, g.flip, g.rate_hz) == (64, 128, True, 20000.0)
    assert parse_geometry("360x640", flip=False).flip is False
    assert parse_geometry("spk-gopro", rate_hz=40000).rate_hz == 40000
    with pytest.raises(GeometryError, match=r"expected 'HxW' \(e.g. 250x400\) or one of: .*spk-gopro"):
        parse_geometry("big")


def test_invalid_geometries_are_refused():
    with pytest.raises(GeometryError, match="must be positive"):
        Geometry(0, 8)
    with pytest.raises(GeometryError, match="not a whole number of bytes"):
        Geometry(3, 5)
    with pytest.raises(GeometryError, match="do not fit stored rows"):
        Geometry(4, 16, stored_width=16, col_offset=8)
    with pytest.raises(GeometryError, match="byte-aligned"):
        Geometry(4, 12, stored_width=16, col_offset=4)
    with pytest.raises(GeometryError, match="unknown geometry 'nope'"):
        get_geometry("nope")


def test_sizes_fitting_several_geometries_are_listed():
    fits = {g.name for g in geometries_fitting(12500 * 100)}
    assert {"vidar-250x400", "vidar-250x400-40k"} <= fits
    assert "spk-gopro" not in fits
