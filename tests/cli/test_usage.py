"""Usage errors in OpenSSH's words and exit statuses (issue 13, item 12):
getopt's line, the usage text, and 255 for hashike as for ssh, 1 for hashiked
as for sshd; never argparse's wording or its exit status 2."""

from __future__ import annotations

import pytest

from hashike.cli import client, server


def _run(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exited:
        main(argv)  # type: ignore[operator]
    code = exited.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["-Z", "host"], "unknown option -- Z"),
        (["-NZ", "host"], "unknown option -- Z"),
        (["host", "-Z"], "unknown option -- Z"),  # ssh reads options after the destination too
        (["--bogus", "host"], "unknown option -- -"),
        (["-p"], "option requires an argument -- p"),
        (["host", "-l"], "option requires an argument -- l"),
        (["-p", "abc", "host"], "Bad port 'abc'"),
    ],
)
def test_hashike_usage_error_is_getopts_line_then_usage_exit_255(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(client.main, argv, capsys)
    assert code == 255
    assert err[0] == line
    assert err[1].startswith("usage: hashike [-46")
    assert "destination [command [argument ...]]" in err[-1]


def test_hashike_without_destination_prints_only_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(client.main, [], capsys)
    assert code == 255
    assert err[0].startswith("usage: hashike ")


def test_hashike_option_values_are_not_options(capsys: pytest.CaptureFixture[str]) -> None:
    """A value that looks like an option is the option's value, as with getopt."""
    parser = client._parser()
    assert parser.scan_options(["-l", "-Z", "host"]) == (2, None)
    assert parser.scan_options(["-lZ", "host"]) == (1, None)
    assert parser.scan_options(["--", "-Z"]) == (1, None)  # "--" ends the options and counts
    assert parser.scan_options(["-N", "-Z", "x"]) == (2, "unknown option -- Z")


@pytest.mark.parametrize(
    ("argv", "line"), [(["-Z"], "unknown option -- Z"), (["-p"], "option requires an argument -- p")]
)
def test_hashiked_usage_error_is_sshds_version_and_usage_exit_1(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(server.main, argv, capsys)
    assert code == 1
    assert err[0] == line
    assert err[1].startswith("hashike_")  # sshd names its version before the usage
    assert err[2].startswith("usage: hashiked [-d]")
