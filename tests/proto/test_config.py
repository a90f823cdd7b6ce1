"""Algorithm lists as ssh_config(5) and sshd_config(5) write them: a plain
list, or ``+`` (append), ``-`` (remove) and ``^`` (prepend) against the defaults."""

from __future__ import annotations

import pytest

from hashike.proto.config import apply_algorithm_spec

DEFAULTS = ("a", "b", "c")
SUPPORTED = ("a", "b", "c", "d", "e")


@pytest.mark.parametrize(
    ("spec", "result"),
    [
        ("d,a", ("d", "a")),  # a plain list replaces the defaults, in its order
        ("d,a,d", ("d", "a")),  # a name given twice counts once
        (" b ", ("b",)),
        ("a,,b,", ("a", "b")),  # empty names are dropped
        ("+d,a", ("a", "b", "c", "d")),  # appended; defaults stay first
        ("^d,b", ("d", "b", "a", "c")),  # prepended, in the given order
        ("-b", ("a", "c")),
        ("-b,x", ("a", "c")),  # removing a name we do not know is harmless
    ],
)
def test_algorithm_specs(spec: str, result: tuple[str, ...]) -> None:
    assert apply_algorithm_spec(spec, DEFAULTS, SUPPORTED) == result


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty algorithm list"),
        ("   ", "empty algorithm list"),
        ("a,x", "unsupported algorithm 'x'"),
        ("+x", "unsupported algorithm 'x'"),
        ("^x", "unsupported algorithm 'x'"),
        ("-a,b,c", "algorithm list is empty after removals"),
    ],
)
def test_bad_algorithm_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_algorithm_spec(spec, DEFAULTS, SUPPORTED)
