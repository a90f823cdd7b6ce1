"""The per-user runtime directory where running hashike clients register.

`$XDG_RUNTIME_DIR/hashike` when XDG_RUNTIME_DIR is set and is ours (the XDG
Base Directory spec makes it owner-only), else `/tmp/hashike-$UID`. The
directory holds control sockets, so like ssh's ControlPath directory it must
be owner-only: one that exists with another owner or a wider mode is refused
rather than repaired, because someone else may already be inside it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["RuntimeDirError", "check_private", "runtime_dir"]


class RuntimeDirError(ValueError):
    """The runtime directory exists but is not safe to use."""


def _base() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        try:
            st = os.stat(xdg)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            return Path(xdg) / "hashike"
    return Path("/tmp") / f"hashike-{os.getuid()}"


def check_private(path: Path) -> None:
    """Raise RuntimeDirError unless `path` is a directory we own, mode 0700 or narrower."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"runtime directory {path} is not a directory")
    if st.st_uid != os.getuid():
        raise RuntimeDirError(f"runtime directory {path} is owned by uid {st.st_uid}, not {os.getuid()}")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise RuntimeDirError(f"runtime directory {path} has mode {mode:04o}; it must be 0700")


def runtime_dir() -> Path:
    """Return the runtime directory, creating it 0700 if absent."""
    path = _base()
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    check_private(path)
    return path
