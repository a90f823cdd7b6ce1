"""The per-user runtime directory: where it is, how it is created, what is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hashike.config.runtime_dir import RuntimeDirError, check_private, runtime_dir


def test_xdg_runtime_dir_used_when_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = runtime_dir()
    assert path == tmp_path / "hashike"
    assert (path.stat().st_mode & 0o777) == 0o700


def test_falls_back_to_tmp_without_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert runtime_dir() == Path("/tmp") / f"hashike-{os.getuid()}"


def test_missing_xdg_dir_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "absent"))
    assert runtime_dir() == Path("/tmp") / f"hashike-{os.getuid()}"


def test_wide_mode_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "hashike").mkdir(mode=0o755)
    os.chmod(tmp_path / "hashike", 0o755)
    with pytest.raises(RuntimeDirError, match="mode 0755; it must be 0700"):
        runtime_dir()


def test_wrong_owner_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As root (CI containers) hand the directory to nobody; as a user, a root-owned one is foreign.
    if os.getuid() == 0:
        foreign = tmp_path / "hashike"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        with pytest.raises(RuntimeDirError, match="owned by uid 65534, not 0"):
            runtime_dir()
    else:
        with pytest.raises(RuntimeDirError, match="owned by uid 0"):
            check_private(Path("/usr"))


def test_symlink_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "hashike").symlink_to(real)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(RuntimeDirError, match="not a directory"):
        runtime_dir()
