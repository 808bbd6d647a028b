"""The generic YAML -> frozen dataclass builder: keys, types, choices and where a bad value came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from svrt_model.errors import RunConfigError
from svrt_model.train.schema import build, deep_merge, describe_type, parse_override, set_path, to_plain


@dataclass(frozen=True)
class Inner:
    size: tuple[int, ...] = (1, 2)
    scale: float | None = None


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    lr: float = 1.0
    steps: int = 1
    flag: bool = False
    pair: tuple[float, float] = (0.9, 0.99)
    inner: Inner = Inner()

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise RunConfigError(f"steps must be >= 1, got {self.steps}")


def _origin(key: str) -> str:
    return f"file F.yaml [{key}]"


def test_builds_nested_values_with_coercions() -> None:
    got = build(Outer, {"mode": "b", "lr": "1e-3", "steps": 3, "pair": [0.5, 1], "inner": {"size": [4, 5, 6]}},
                prefix="", origin=_origin)
    assert got == Outer(mode="b", lr=0.001, steps=3, pair=(0.5, 1.0), inner=Inner(size=(4, 5, 6)))
    assert isinstance(got.pair[1], float)
    assert to_plain(got) == {"name": "x", "mode": "b", "lr": 0.001, "steps": 3, "flag": False, "pair": [0.5, 1.0],
                             "inner": {"size": [4, 5, 6], "scale": None}}
    assert build(Outer, to_plain(got), prefix="", origin=_origin) == got


@pytest.mark.parametrize(("data", "message"), [
    ({"stepz": 1}, r"file F\.yaml \[stepz\]: unknown key 'stepz'; valid keys in the top level: flag, inner, lr, "
                   r"mode, name, pair, steps"),
    ({"inner": {"sise": 1}}, r"\[inner\.sise\]: unknown key 'inner\.sise'; valid keys in section 'inner': scale, size"),
    ({"mode": "c"}, r"\[mode\]: mode must be one of 'a', 'b', got 'c' \(str\)"),
    ({"steps": 1.5}, r"steps must be int, got 1\.5 \(float\)"),
    ({"steps": True}, r"steps must be int, got True \(bool\)"),
    ({"flag": "yes"}, r"flag must be bool, got 'yes' \(str\)"),
    ({"lr": "fast"}, r"lr must be float, got 'fast'"),
    ({"pair": [1.0]}, r"pair must be a list of 2 values \(float, float\), got \[1\.0\]"),
    ({"inner": {"size": "12"}}, r"inner\.size must be a list of int, got '12'"),
    ({"inner": {"scale": []}}, r"inner\.scale must be float or null, got \[\]"),
    ({"inner": 3}, r"inner must be a mapping \(Inner\), got 3"),
    ({"steps": 0}, r"file F\.yaml \[\]: the config: steps must be >= 1, got 0"),
])
def test_errors_name_key_origin_and_choices(data: dict, message: str) -> None:
    with pytest.raises(RunConfigError, match=message):
        build(Outer, data, prefix="", origin=_origin)


def test_overrides_are_yaml_typed() -> None:
    assert parse_override("train.steps=100") == (["train", "steps"], 100)
    assert parse_override("data.crop=[64, 128]") == (["data", "crop"], [64, 128])
    assert parse_override("log.val_split=null") == (["log", "val_split"], None)
    assert parse_override("a.b=abc") == (["a", "b"], "abc")
    assert parse_override("a=1.0e-3") == (["a"], 0.001)
    for bad in ("train.steps", "=3", "a..b=1"):
        with pytest.raises(RunConfigError, match="expected KEY=VALUE"):
            parse_override(bad)
    with pytest.raises(RunConfigError, match="not valid YAML"):
        parse_override("a=[1, 2")


def test_merge_and_set_path() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}, "d": {"e": 1}}) == {"a": {"b": 3, "c": 2},
                                                                                        "d": {"e": 1}}
    tree: dict = {"a": {"b": 1}}
    set_path(tree, ["a", "c", "d"], 5)
    assert tree == {"a": {"b": 1, "c": {"d": 5}}}
    assert describe_type(float | None) == "float or null"
