"""Plain YAML data <-> frozen dataclasses, with errors that name the key, where it came from and the choices.

One generic builder serves every section of a run configuration and the model's own config dataclasses
(``VRTConfig``, ``VRTSpikeConfig``): the dataclass fields and their type hints are the schema, so there is
no second list of keys to keep in step. Values are checked against the hints (``int``, ``float``, ``bool``,
``str``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]``, nested dataclasses); a float field also takes an
int or a string that reads as a float (YAML reads ``1e-3`` as a string; ``1.0e-3`` is a float).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

import yaml

from svrt_model.errors import RunConfigError

__all__ = ["Origin", "build", "deep_merge", "describe_type", "parse_override", "set_path", "to_plain"]

Origin = Callable[[str], str]
"""``origin(dotted_key) -> "file X"`` or ``"override 'a.b=1'"``: where a value came from, for messages."""


class _Mismatch(Exception):
    """A value does not fit a type hint (turned into a RunConfigError naming the key)."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe_type(tp: Any) -> str:
    """A short human name of a type hint: ``int``, ``one of 'a', 'b'``, ``list of int``, ``float or null``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        named = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe_type(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe_type(a) for a in args)})"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str, origin: Origin) -> Any:
    if tp is Any:
        return value
    kind = typing.get_origin(tp)
    if kind in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, origin)
            except _Mismatch:
                continue
        raise _Mismatch
    if kind is Literal:
        for choice in typing.get_args(tp):
            if value == choice and type(value) is type(choice):
                return value
        raise _Mismatch
    if kind is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, key, origin) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(a, v, key, origin) for a, v in zip(args, value, strict=True))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return build(tp, value, prefix=key, origin=origin)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise RunConfigError(f"config key {key!r}: the schema uses the type {tp!r}, which the loader does not support")


def build(cls: type, data: Mapping[str, Any], *, prefix: str, origin: Origin) -> Any:
    """Build the frozen dataclass ``cls`` from plain data, checking every key and value.

    Args:
        cls: a dataclass whose fields have type hints.
        data: its values (missing fields keep their defaults).
        prefix: the dotted name of this mapping in the whole config (``""`` at the top), for messages.
        origin: where each dotted key came from, for messages.

    Raises:
        RunConfigError: an unknown key (listing the valid ones), a value of the wrong type (with the
            expected type), or a value the dataclass itself refuses (its message, with the key's origin).
    """
    if not isinstance(data, Mapping):
        where = prefix or "the top level"
        raise RunConfigError(f"{origin(prefix)}: {where} must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            section = f"section {prefix!r}" if prefix else "the top level"
            raise RunConfigError(
                f"{origin(key)}: unknown key {key!r}; valid keys in {section}: {', '.join(sorted(fields))}"
            )
        try:
            kwargs[name] = _coerce(hints[name], value, key, origin)
        except _Mismatch:
            raise RunConfigError(
                f"{origin(key)}: {key} must be {describe_type(hints[name])}, got {value!r}"
                f" ({type(value).__name__})"
            ) from None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # the dataclass's own checks (RunConfigError, ModelConfigError, ...)
        where = prefix or "the config"
        raise RunConfigError(f"{origin(prefix)}: {where}: {exc}") from exc


def to_plain(obj: Any) -> Any:
    """A dataclass (or nested values) as YAML-ready data: dicts, lists, str, int, float, bool, None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``; mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> ``(["train", "lr"], 0.001)``: the value is read as YAML (``a=[1, 2]`` gives a list,
    ``a=null`` None, ``a=abc`` a string)."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(p.strip() for p in path):
        raise RunConfigError(
            f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. train.steps=100 or train.lr=1.0e-3"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RunConfigError(f"override {text!r}: the value is not valid YAML ({exc.problem})") from exc
    return [p.strip() for p in path], value


def set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``path = [a, b, c]``, creating mappings on the way."""
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None or not isinstance(child, Mapping) else dict(child)
            node[part] = child
        node = child
    node[path[-1]] = value
