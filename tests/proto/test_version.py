"""RFC 4253 §4.2 protocol version exchange: the identification line and its limits."""

from __future__ import annotations

import pytest

from hashike.proto.constants import DisconnectReason
from hashike.proto.errors import RemoteProtocolError
from hashike.proto.version import (
    MAX_LINE,
    MAX_PRE_BYTES,
    MAX_PRE_LINES,
    PeerVersion,
    VersionParser,
    identification_line,
)


def _parse(data: bytes, *, peer_is_server: bool = True) -> tuple[PeerVersion, bytes]:
    done = VersionParser(peer_is_server=peer_is_server).feed(data)
    assert done is not None
    return done


def test_identification_line() -> None:
    # RFC 4253 §4.2: SSH-protoversion-softwareversion, ended by CR LF.
    assert identification_line("hashike_0.1") == b"SSH-2.0-hashike_0.1\r\n"


def test_parse_software_and_comments() -> None:
    version, rest = _parse(b"SSH-2.0-OpenSSH_9.6 Debian-3 extra\r\n")
    assert version == PeerVersion(
        line=b"SSH-2.0-OpenSSH_9.6 Debian-3 extra",  # V_S for the exchange hash: no CR LF
        software="OpenSSH_9.6",
        comments="Debian-3 extra",
        banner_lines=(),
    )
    assert rest == b""


def test_bytes_after_the_line_are_returned() -> None:
    version, rest = _parse(b"SSH-2.0-x\r\n\x00\x00\x01\x0c\x0a\x14")
    assert version.software == "x"
    assert rest == b"\x00\x00\x01\x0c\x0a\x14"


def test_a_bare_lf_ends_the_line_too() -> None:
    # RFC 4253 §4.2 asks for CR LF but tells implementations to accept LF alone.
    version, _ = _parse(b"SSH-2.0-old\n")
    assert (version.line, version.software) == (b"SSH-2.0-old", "old")


def test_one_byte_at_a_time() -> None:
    parser = VersionParser(peer_is_server=True)
    data = b"hello\r\nSSH-2.0-slow comment\r\nNEXT"
    for i in range(len(data) - 5):
        assert parser.feed(data[i : i + 1]) is None
    done = parser.feed(data[-5:])
    assert done is not None
    version, rest = done
    assert (version.software, version.comments, version.banner_lines, rest) == (
        "slow",
        "comment",
        ("hello",),
        b"NEXT",
    )


def test_one_point_nine_nine_is_two() -> None:
    # RFC 4253 §5.1: a server that also speaks 1.x says 1.99.
    assert _parse(b"SSH-1.99-compat\r\n")[0].software == "compat"


@pytest.mark.parametrize(
    "line",
    [b"SSH-1.5-old", b"SSH-3.0-new", b"SSH-2.0", b"SSH-2.0-", b"SSH-2.0- comment", b"SSH-"],
)
def test_unsupported_versions(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="protocol version not supported") as caught:
        _parse(line + b"\r\n")
    assert caught.value.reason == DisconnectReason.PROTOCOL_VERSION_NOT_SUPPORTED


def test_nul_and_non_ascii_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="NUL"):
        _parse(b"SSH-2.0-a\x00b\r\n")
    with pytest.raises(RemoteProtocolError, match="US-ASCII"):
        _parse("SSH-2.0-café\r\n".encode())


# ----------------------------------------------------------- line length


def test_longest_line_is_255_with_cr_lf() -> None:
    # RFC 4253 §4.2: at most 255 characters, CR LF included.
    longest = b"SSH-2.0-" + b"v" * (MAX_LINE - 10) + b"\r\n"
    assert len(longest) == MAX_LINE
    assert _parse(longest)[0].line == longest[:-2]
    too_long = b"SSH-2.0-" + b"v" * (MAX_LINE - 9) + b"\r\n"
    with pytest.raises(RemoteProtocolError, match="too long"):
        _parse(too_long)


def test_a_line_that_never_ends_is_refused_at_the_limit() -> None:
    parser = VersionParser(peer_is_server=True)
    assert parser.feed(b"SSH-2.0-" + b"v" * (MAX_LINE - 8)) is None  # 255 bytes, no LF yet
    with pytest.raises(RemoteProtocolError, match="too long"):
        parser.feed(b"v")


def test_a_long_banner_line_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="too long"):
        _parse(b"x" * MAX_LINE + b"\r\nSSH-2.0-x\r\n")


# --------------------------------------------------- lines before the version


def test_server_banner_lines() -> None:
    version, _ = _parse(b"welcome\r\n\r\nbad \xff byte\nSSH-2.0-x\r\n")
    assert version.banner_lines == ("welcome", "", "bad \ufffd byte")


def test_a_client_sends_no_lines_before_its_version() -> None:
    # RFC 4253 §4.2: only the server may send other lines first.
    with pytest.raises(RemoteProtocolError, match="client sent data before"):
        _parse(b"hello\r\nSSH-2.0-x\r\n", peer_is_server=False)
    assert _parse(b"SSH-2.0-x\r\n", peer_is_server=False)[0].software == "x"


def test_at_most_max_pre_lines() -> None:
    assert len(_parse(b"\r\n" * MAX_PRE_LINES + b"SSH-2.0-x\r\n")[0].banner_lines) == MAX_PRE_LINES
    with pytest.raises(RemoteProtocolError, match="too many lines"):
        _parse(b"\r\n" * (MAX_PRE_LINES + 1) + b"SSH-2.0-x\r\n")


def test_at_most_max_pre_bytes() -> None:
    line = b"b" * 198 + b"\r\n"  # 200 bytes
    count = MAX_PRE_BYTES // len(line)
    assert count < MAX_PRE_LINES
    assert len(_parse(line * count + b"SSH-2.0-x\r\n")[0].banner_lines) == count
    with pytest.raises(RemoteProtocolError, match="too many lines"):
        _parse(line * (count + 1) + b"SSH-2.0-x\r\n")
