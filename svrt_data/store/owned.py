"""What a writer may replace or delete, and how it swaps a finished replacement in.

The rule: a writer deletes or overwrites only what it can prove it created: an svrt store (its root
``zarr.json`` carries the ``svrt_layout`` attribute), an svrt sequence inside one (``svrt_sequence``),
or its own temporary folders, named ``.<name>.svrt-new`` / ``.<name>.svrt-old`` beside ``<name>``.
Anything else that exists where a writer would write is refused, naming the path.

A replacement is built under ``.<name>.svrt-new`` and swapped in only when complete:
:func:`swap_in` exchanges the two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``), then
deletes the old one; where the file system cannot exchange, it renames ``<name>`` to
``.<name>.svrt-old`` and the new folder to ``<name>``. A run killed at any moment leaves ``<name>``
whole (old or new) or, in the two-rename window, ``.<name>.svrt-old`` whole, which
:func:`recover_folder` puts back before anything else happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

from svrt_errors import StoreError

__all__ = ["NEW", "OLD", "exchange", "temp_path", "is_temp_name", "swap_in", "remove_temp", "recover_path",
           "recover_folder", "check_parent", "describe_entries"]

NEW = ".svrt-new"
OLD = ".svrt-old"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def temp_path(path: Path, kind: str = NEW) -> Path:
    """``.<name>.svrt-new`` (or ``-old``) beside ``path``."""
    if kind not in (NEW, OLD):
        raise StoreError(f"internal: temporary kind {kind!r}")
    return path.with_name(f".{path.name}{kind}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith((NEW, OLD)) and len(name) > len(NEW) + 1


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths; False where the system cannot (then nothing happened)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def remove_temp(path: Path) -> None:
    """Delete one of svrt's own temporary folders (or files); refuses any other name."""
    if not is_temp_name(path.name):
        raise StoreError(f"internal: refusing to delete {path}, which is not an svrt temporary name")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def swap_in(new: Path, final: Path) -> None:
    """Put the complete folder ``new`` (a temporary name) at ``final``, replacing what is there.

    The caller has proven that whatever is at ``final`` may be replaced.
    """
    if not final.exists() and not final.is_symlink():
        os.rename(new, final)
        return
    if final.is_dir() and not final.is_symlink() and exchange(new, final):
        remove_temp(new)  # it now holds the old folder
        return
    old = temp_path(final, OLD)
    if old.exists():
        remove_temp(old)
    os.rename(final, old)
    os.rename(new, final)
    remove_temp(old)


def recover_path(final: Path) -> list[str]:
    """Finish or undo a swap of ``final`` that a killed run left behind; delete its unfinished build.

    ``.<name>.svrt-old`` goes back to ``<name>`` when ``<name>`` is missing (the kill fell between the two
    renames) and is deleted otherwise; ``.<name>.svrt-new`` is deleted (a build that was not swapped in,
    or an old folder left after an exchange). Returns what was done, for the report.
    """
    done: list[str] = []
    old, new = temp_path(final, OLD), temp_path(final, NEW)
    if old.exists() or old.is_symlink():
        if final.exists() or final.is_symlink():
            remove_temp(old)
            done.append(f"deleted {old} (left by an interrupted swap)")
        else:
            os.rename(old, final)
            done.append(f"restored {final} from {old.name} (a swap was interrupted)")
    if new.exists() or new.is_symlink():
        remove_temp(new)
        done.append(f"deleted {new} (an unfinished build)")
    return done


def recover_folder(folder: Path) -> list[str]:
    """:func:`recover_path` for every svrt temporary name in ``folder`` (a store or split folder)."""
    try:
        names = sorted({p.name for p in folder.iterdir() if is_temp_name(p.name)})
    except (FileNotFoundError, NotADirectoryError):
        return []
    done: list[str] = []
    for name in names:
        final = folder / name[1 : -len(NEW)]  # NEW and OLD have the same length
        done += recover_path(final)
    return done


def check_parent(path: Path, what: str) -> None:
    """Refuse an output whose parent folder is missing or is not a folder: one clear line."""
    parent = path.parent if str(path.parent) else Path(".")
    for up in (parent, *parent.parents):
        if up.exists() or up.is_symlink():
            if not up.is_dir():
                raise StoreError(f"{what} {path}: {up} is a file, not a folder; choose an output path in a folder")
            break
    if not parent.is_dir():
        raise StoreError(f"{what} {path}: the folder {parent} does not exist; create it first (svrt does not "
                         "create missing parent folders)")


def describe_entries(folder: Path, limit: int = 5) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
