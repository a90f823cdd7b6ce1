"""Fail when a package's test coverage is below its floor.

Reads the data that ``pytest --cov`` left in ``.coverage`` (the parent and
every child process it measured, already combined) and the floors in
pyproject.toml's ``[tool.hashike.coverage-floors]``, e.g.
``"hashike.proto" = 98``. Prints one line per package of src/hashike, and
for each package below its floor its missing lines, then a line saying so.

Usage: ``python scripts/coverage_floors.py [--data-file .coverage]``.
"""

from __future__ import annotations

import argparse
import io
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import coverage
from coverage.exceptions import NoDataError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hashike.proto", "hashike.keys", "hashike.config", "hashike.aio", "hashike.cli", "hashike")


def load_floors(pyproject: Path) -> dict[str, float]:
    table = tomllib.loads(pyproject.read_text())["tool"]["hashike"]["coverage-floors"]
    return {str(name): float(floor) for name, floor in table.items()}


def pattern(package: str) -> str:
    """The ``include`` pattern for a package's files (its subpackages too)."""
    return f"*/{package.replace('.', '/')}/*"


def report(cov: coverage.Coverage, package: str, *, missing: bool = False) -> tuple[float | None, str]:
    """The package's total as coverage's own report computes it (None: no
    file of it was measured), and the report's text."""
    out = io.StringIO()
    try:
        total = cov.report(include=[pattern(package)], file=out, show_missing=missing, skip_covered=missing)
    except NoDataError:
        return None, ""
    return total, out.getvalue()


def check(cov: coverage.Coverage, floors: dict[str, float]) -> list[tuple[str, float | None, float]]:
    """Print every package's coverage; return (package, total, floor) for each floor not met."""
    below: list[tuple[str, float | None, float]] = []
    for package in sorted({*PACKAGES, *floors}, key=lambda p: (p == "hashike", p)):
        total, _ = report(cov, package)
        floor = floors.get(package)
        shown = "no data" if total is None else f"{total:6.2f}%"
        met = total is not None and floor is not None and total >= floor
        verdict = "" if floor is None else f"  (floor {floor:g}%: {'ok' if met else 'BELOW'})"
        print(f"{package:<16} {shown}{verdict}")
        if floor is not None and not met:
            below.append((package, total, floor))
    return below


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-file", default=str(ROOT / ".coverage"))
    parser.add_argument("--pyproject", default=str(ROOT / "pyproject.toml"))
    args = parser.parse_args(argv)
    if not Path(args.data_file).is_file():
        print(f"coverage: no data in {args.data_file}; run the tests with --cov first", file=sys.stderr)
        return 2
    cov = coverage.Coverage(data_file=args.data_file, config_file=args.pyproject)
    cov.load()
    below = check(cov, load_floors(Path(args.pyproject)))
    for package, _total, _floor in below:
        print(f"\n{package}, what is missing:")
        print(report(cov, package, missing=True)[1].rstrip("\n"), flush=True)
    for package, total, floor in below:
        shown = "not measured" if total is None else f"{total:.2f}%"
        print(f"coverage: {package} is {shown}, below its floor of {floor:g}%", file=sys.stderr)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
