"""sshd_config's per-source admission keywords (OpenSSH 9.8): parsed with
sshd's defaults, and a keyword hashiked does not enforce is refused, never
ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hashike.config.srclimit import PenaltyPolicy
from hashike.config.sshd_config import ConfigError, ServerSettings, parse_server_config


def parse(tmp_path: Path, text: str) -> ServerSettings:
    path = tmp_path / "sshd_config"
    path.write_text(text, encoding="utf-8")
    return parse_server_config(str(path), [])


def test_defaults_are_no_per_source_limit_and_no_penalties(tmp_path: Path) -> None:
    s = parse(tmp_path, "")
    assert s.per_source_max_startups is None
    assert s.per_source_net_block_size == (32, 128)
    assert s.per_source_penalties is None
    assert s.per_source_penalty_exempt_list == ()


def test_per_source_keywords(tmp_path: Path) -> None:
    s = parse(
        tmp_path,
        "PerSourceMaxStartups 3\nPerSourceNetBlockSize 24:64\n"
        "PerSourcePenalties authfail:1m noauth:0 max:1h overflow:deny-all max-sources6:10\n"
        "PerSourcePenaltyExemptList 10.0.0.0/8,::1\n",
    )
    assert s.per_source_max_startups == 3
    assert s.per_source_net_block_size == (24, 64)
    assert s.per_source_penalties == PenaltyPolicy(
        authfail=60, noauth=0, max=3600, overflow4_deny_all=True, max_sources6=10
    )
    assert s.per_source_penalty_exempt_list == ("10.0.0.0/8", "::1")


@pytest.mark.parametrize(("value", "expected"), [("yes", PenaltyPolicy()), ("no", None)])
def test_penalties_yes_is_sshds_defaults(tmp_path: Path, value: str, expected: PenaltyPolicy | None) -> None:
    assert parse(tmp_path, f"PerSourcePenalties {value}\n").per_source_penalties == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "PerSourcePenalties refuseconnection:10s",
            "PerSourcePenalties refuseconnection is not supported by hashiked.",
        ),
        ("PerSourcePenalties bogus:1s", "Invalid PerSourcePenalties keyword 'bogus:1s'."),
        ("PerSourcePenalties authfail", "Invalid PerSourcePenalties keyword 'authfail'."),
        ("PerSourcePenalties authfail:soon", "Invalid PerSourcePenalties value 'authfail:soon'."),
        ("PerSourcePenalties overflow:maybe", "Invalid overflow mode 'maybe' in PerSourcePenalties."),
        ("PerSourceMaxStartups 0", "Invalid PerSourceMaxStartups '0'."),
        ("PerSourceNetBlockSize 33", "Invalid PerSourceNetBlockSize '33'."),
        ("PerSourcePenaltyExemptList 10.0.0.300", "Invalid PerSourcePenaltyExemptList entry '10.0.0.300'."),
    ],
)
def test_bad_values_are_refused_with_one_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"line 1: {message}") + "$"):
        parse(tmp_path, line + "\n")
