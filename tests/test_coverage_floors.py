"""scripts/coverage_floors.py fails exactly when a package is below its floor."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import coverage
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "coverage_floors.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coverage_floors", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measured_tree(tmp_path: Path, proto_hit: int) -> Path:
    """A fake hashike tree: proto/a.py (10 lines, ``proto_hit`` of them run)
    and keys/b.py (10 lines, all run); returns the data file."""
    for sub in ("proto", "keys"):
        (tmp_path / "src" / "hashike" / sub).mkdir(parents=True)
    files = {"proto/a.py": proto_hit, "keys/b.py": 10}
    data = coverage.CoverageData(basename=str(tmp_path / ".coverage"))
    for name, hit in files.items():
        path = tmp_path / "src" / "hashike" / name
        path.write_text("".join(f"x{i} = {i}\n" for i in range(10)))
        data.add_lines({str(path): list(range(1, hit + 1))})
    data.write()
    return tmp_path / ".coverage"


def pyproject(tmp_path: Path, proto: int, whole: int) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[tool.hashike.coverage-floors]\n"hashike.proto" = {proto}\n"hashike" = {whole}\n')
    return path


@pytest.mark.parametrize(
    ("proto_hit", "floors", "status", "complaint"),
    [
        (10, (98, 90), 0, None),
        (9, (90, 90), 0, None),  # exactly at the floor passes
        (9, (98, 90), 1, "coverage: hashike.proto is 90.00%, below its floor of 98%"),
        (5, (50, 90), 1, "coverage: hashike is 75.00%, below its floor of 90%"),
    ],
)
def test_floors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    proto_hit: int,
    floors: tuple[int, int],
    status: int,
    complaint: str | None,
) -> None:
    data = measured_tree(tmp_path, proto_hit)
    config = pyproject(tmp_path, *floors)
    assert load_script().main(["--data-file", str(data), "--pyproject", str(config)]) == status
    out, err = capsys.readouterr()
    assert f"hashike.proto    {proto_hit * 10:6.2f}%" in out
    assert "hashike.keys     100.00%" in out
    if complaint is None:
        assert err == ""
    else:
        assert err.strip() == complaint
        assert "a.py" in out  # the missing lines are shown


def test_missing_data_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = pyproject(tmp_path, 98, 90)
    status = load_script().main(["--data-file", str(tmp_path / "none"), "--pyproject", str(config)])
    assert status == 2
    assert "run the tests with --cov first" in capsys.readouterr().err
