"""Split and sequence names, and relative file paths, checked before they ever become paths.

Names come from align logs, manifests, HDF5 files and the command line, and end up as folders of a
store (``<store>/<split>/<sequence>``) that writers create and replace. A name is therefore a *plain
relative name*: one path component, not empty, no separator (``/`` or ``\\``), not ``.`` or ``..``,
no control character, not hidden (a leading ``.``: svrt's own temporary folders are hidden, so a
hidden name could collide with them), at most 255 bytes. Relative paths (``spike_file`` in an align
log) are ``/``-separated plain names, where hidden components are allowed (they are only read).

:func:`name_problem` / :func:`path_problem` return what is wrong (or None), so callers can report every
bad row at once; :func:`check_name` raises. :func:`inside` resolves a path and proves it stays under
a root (symbolic links included).
"""

from __future__ import annotations

import os
from pathlib import Path

from svrt_errors import SvrtValueError

__all__ = ["MAX_NAME_BYTES", "name_problem", "path_problem", "check_name", "check_split", "inside"]

MAX_NAME_BYTES = 255  # the usual file-name limit (ext4, xfs, APFS)


def _component_problem(text: str, *, hidden_ok: bool) -> str | None:
    if text == "":
        return "is empty"
    if text in (".", ".."):
        return f"is {text!r}, which names a folder relative to another"
    if "/" in text or "\\" in text:
        return "contains a path separator ('/' or '\\')"
    bad = [c for c in text if ord(c) < 32 or ord(c) == 127]
    if bad:
        return f"contains the control character {bad[0]!r}"
    if not hidden_ok and text.startswith("."):
        return "starts with '.' (hidden names are reserved for svrt's temporary folders)"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if text != text.strip():
        return "starts or ends with white space"
    return None


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain relative name, or None when it is one."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    return _component_problem(name, hidden_ok=False)


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a relative ``/``-separated path of plain components, or None."""
    if not isinstance(path, str):
        return f"is a {type(path).__name__}, not a string"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return "is an absolute path; give it relative to the raw dataset root"
    if "\\" in path:
        return "contains '\\'; use '/' as the separator"
    for part in path.split("/"):
        why = _component_problem(part, hidden_ok=True)
        if why is not None:
            return f"has a component {part!r} that {why}"
    return None


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it is a plain relative name; raise :class:`SvrtValueError` naming ``what``."""
    why = name_problem(name)
    if why is not None:
        raise SvrtValueError(f"{what} {name!r} {why}; split and sequence names must be plain folder names "
                             "(letters, digits, '_', '-', ... without '/', '..' or a leading '.')")
    return name  # type: ignore[return-value]


def check_split(split: object, what: str = "split") -> str:
    """Like :func:`check_name`, but the empty string (a dataset without splits) is allowed."""
    return "" if split == "" else check_name(split, what)


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root/parts...``, resolved, after proving it stays inside ``root`` (raises otherwise)."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise SvrtValueError(f"{Path(root).joinpath(*parts)} resolves to {target}, outside {base}; refusing to "
                             "read or write there (a symbolic link or '..' leads out of the folder)")
    return target
