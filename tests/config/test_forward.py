"""Forwarding specifications (-L, -R, -D and the config keywords), parsed as ssh(1) does.

The expected results were checked against OpenSSH 9.2 (``ssh -G -L SPEC x``
prints what ssh made of a specification, or its error).
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashike.config.forward import (
    Forward,
    ForwardKind,
    ForwardSpecError,
    expand_variables,
    forward_from_config,
    parse_forward,
    parse_port,
)


@pytest.fixture(scope="module")
def services() -> None:
    """The services database must know pop3 (110/tcp): /etc/services, from
    Debian's netbase package. No skip: a missing database is a broken test host."""
    try:
        port = socket.getservbyname("pop3", "tcp")
    except OSError:
        pytest.fail(
            "socket.getservbyname('pop3', 'tcp') failed: the services database "
            "(/etc/services, Debian package netbase) is missing on this machine",
            pytrace=False,
        )
    assert port == 110, f"/etc/services maps pop3 to {port}, not 110"


def L(**kw: object) -> Forward:
    return Forward(kind="local", **kw)  # type: ignore[arg-type]


def R(**kw: object) -> Forward:
    return Forward(kind="remote", **kw)  # type: ignore[arg-type]


def D(**kw: object) -> Forward:
    return Forward(kind="dynamic", **kw)  # type: ignore[arg-type]


# --- every shape ------------------------------------------------------------------------

LOCAL_SHAPES: list[tuple[str, Forward]] = [
    ("8080:example.org:80", L(listen_port=8080, connect_host="example.org", connect_port=80)),
    (
        "localhost:8080:example.org:80",
        L(listen_host="localhost", listen_port=8080, connect_host="example.org", connect_port=80),
    ),
    ("*:8080:h:80", L(listen_host="*", listen_port=8080, connect_host="h", connect_port=80)),
    (":8080:h:80", L(listen_host="", listen_port=8080, connect_host="h", connect_port=80)),
    ("8080:/run/app.sock", L(listen_port=8080, connect_socket="/run/app.sock")),
    (
        "127.0.0.1:8080:/run/app.sock",
        L(listen_host="127.0.0.1", listen_port=8080, connect_socket="/run/app.sock"),
    ),
    ("/tmp/l.sock:h:80", L(listen_socket="/tmp/l.sock", connect_host="h", connect_port=80)),
    ("/tmp/l.sock:/run/r.sock", L(listen_socket="/tmp/l.sock", connect_socket="/run/r.sock")),
    # A relative path is a path as soon as it holds a '/'.
    ("./l.sock:h:80", L(listen_socket="./l.sock", connect_host="h", connect_port=80)),
]

REMOTE_SHAPES: list[tuple[str, Forward]] = [
    ("8080:h:80", R(listen_port=8080, connect_host="h", connect_port=80)),
    ("0.0.0.0:8080:h:80", R(listen_host="0.0.0.0", listen_port=8080, connect_host="h", connect_port=80)),
    ("8080:/run/app.sock", R(listen_port=8080, connect_socket="/run/app.sock")),
    ("bind:8080:/run/app.sock", R(listen_host="bind", listen_port=8080, connect_socket="/run/app.sock")),
    ("/tmp/r.sock:h:80", R(listen_socket="/tmp/r.sock", connect_host="h", connect_port=80)),
    ("/tmp/r.sock:/run/l.sock", R(listen_socket="/tmp/r.sock", connect_socket="/run/l.sock")),
    # Port 0: the server picks the port (ssh prints "Allocated port N").
    ("0:h:80", R(listen_port=0, connect_host="h", connect_port=80)),
    (":0:h:80", R(listen_host="", listen_port=0, connect_host="h", connect_port=80)),
    # Remote dynamic (SOCKS on the server side).
    ("1080", R(listen_port=1080)),
    ("0", R(listen_port=0)),
    ("localhost:1080", R(listen_host="localhost", listen_port=1080)),
    ("/tmp/socks.sock", R(listen_socket="/tmp/socks.sock")),
]

DYNAMIC_SHAPES: list[tuple[str, Forward]] = [
    ("1080", D(listen_port=1080)),
    ("localhost:1080", D(listen_host="localhost", listen_port=1080)),
    ("*:1080", D(listen_host="*", listen_port=1080)),
    (":1080", D(listen_host="", listen_port=1080)),
    ("[::1]:1080", D(listen_host="::1", listen_port=1080)),
    ("/tmp/socks.sock", D(listen_socket="/tmp/socks.sock")),
]


@pytest.mark.parametrize(("spec", "expected"), LOCAL_SHAPES)
def test_local_shapes(spec: str, expected: Forward) -> None:
    assert parse_forward("local", spec) == expected


@pytest.mark.parametrize(("spec", "expected"), REMOTE_SHAPES)
def test_remote_shapes(spec: str, expected: Forward) -> None:
    assert parse_forward("remote", spec) == expected


@pytest.mark.parametrize(("spec", "expected"), DYNAMIC_SHAPES)
def test_dynamic_shapes(spec: str, expected: Forward) -> None:
    assert parse_forward("dynamic", spec) == expected


def test_is_dynamic() -> None:
    assert parse_forward("dynamic", "1080").is_dynamic
    assert parse_forward("remote", "1080").is_dynamic
    assert not parse_forward("remote", "1080:h:80").is_dynamic
    assert not parse_forward("remote", "1080:/s/x").is_dynamic
    assert not parse_forward("local", "1080:h:80").is_dynamic


# --- IPv6 and field syntax --------------------------------------------------------------


def test_ipv6_in_brackets() -> None:
    assert parse_forward("local", "[::1]:8080:[fe80::1]:80") == L(
        listen_host="::1", listen_port=8080, connect_host="fe80::1", connect_port=80
    )
    assert parse_forward("local", "8080:[2001:db8::5]:443") == L(
        listen_port=8080, connect_host="2001:db8::5", connect_port=443
    )
    assert parse_forward("remote", "[::]:0:[::1]:22") == R(
        listen_host="::", listen_port=0, connect_host="::1", connect_port=22
    )
    # A zone index, which is why hosts are kept as written.
    assert parse_forward("local", "8080:[fe80::1%eth0]:80").connect_host == "fe80::1%eth0"


def test_slash_separated_ipv6_form_is_refused_as_ssh_does() -> None:
    # Old ssh versions accepted 8080/::1/80; since Unix sockets (OpenSSH 6.7)
    # a '/' marks a path and OpenSSH 9.2 prints this very error.
    with pytest.raises(ForwardSpecError, match=r"^Bad local forwarding specification '8080/::1/80'$"):
        parse_forward("local", "8080/::1/80")


def test_backslash_escapes() -> None:
    # An escaped ':' does not separate; an escaped '/' does not make a path.
    assert parse_forward("local", r"8080:h\:x:80").connect_host == "h:x"
    assert parse_forward("local", r"8080:\/x:80") == L(listen_port=8080, connect_host="/x", connect_port=80)
    assert parse_forward("local", r"a\:b/c:h:80").listen_socket == "a:b/c"
    # A bracketed field holding a '/' is a path.
    assert parse_forward("local", "8080:[/tmp/a:b]") == L(listen_port=8080, connect_socket="/tmp/a:b")


def test_leading_blanks_and_trailing_colon_are_tolerated() -> None:
    assert parse_forward("local", " \t8080:h:80") == L(listen_port=8080, connect_host="h", connect_port=80)
    assert parse_forward("local", "8080:h:80:") == L(listen_port=8080, connect_host="h", connect_port=80)
    assert parse_forward("local", "a:8080:h:80:") == L(
        listen_host="a", listen_port=8080, connect_host="h", connect_port=80
    )
    assert parse_forward("remote", "8080:") == R(listen_port=8080)


def test_a_field_with_a_slash_in_host_position_stays_a_host() -> None:
    # ssh: with three fields only the first and last are examined for paths.
    assert parse_forward("local", "8080:/x:80") == L(listen_port=8080, connect_host="/x", connect_port=80)


def test_empty_connect_host_is_accepted_like_ssh() -> None:
    assert parse_forward("local", "8080::80") == L(listen_port=8080, connect_host="", connect_port=80)


# --- ports --------------------------------------------------------------------------------


@pytest.mark.usefixtures("services")
def test_service_names() -> None:
    assert parse_forward("local", "40000:wisdom:pop3") == L(
        listen_port=40000, connect_host="wisdom", connect_port=110
    )
    assert parse_forward("local", "pop3:h:80").listen_port == 110
    assert parse_forward("dynamic", "pop3").listen_port == 110
    assert parse_port("pop3") == 110


@pytest.mark.usefixtures("services")
def test_unknown_service_name() -> None:
    with pytest.raises(ForwardSpecError, match=r"^Bad local forwarding specification '40000:wisdom:nosuch'$"):
        parse_forward("local", "40000:wisdom:nosuch")
    assert parse_port("nosuch") is None


def test_numeric_port_syntax_follows_strtoll() -> None:
    assert parse_port("80") == 80
    assert parse_port("080") == 80
    assert parse_port("+80") == 80
    assert parse_port(" 80") == 80
    assert parse_port("65535") == 65535
    assert parse_port("0") == 0
    assert parse_port("000000000080") == 80
    for bad in (
        "65536",
        "-1",
        "",
        " ",
        "8_0",
        "80 ",
        "\u0663",
        "0x50",
        "nul\x00",
        "9" * 5000,
        "-" + "0" * 9 + "1",
    ):
        assert parse_port(bad) is None, bad


def test_port_zero_rules() -> None:
    assert parse_forward("remote", "0:h:80").listen_port == 0
    assert parse_forward("remote", "0").listen_port == 0
    for kind, spec in (("local", "0:h:80"), ("local", "h:0:x:80"), ("dynamic", "0"), ("dynamic", "h:0")):
        with pytest.raises(ForwardSpecError):
            parse_forward(kind, spec)  # type: ignore[arg-type]
    for kind in ("local", "remote"):
        with pytest.raises(ForwardSpecError):
            parse_forward(kind, "8080:h:0")  # type: ignore[arg-type]


# --- errors -------------------------------------------------------------------------------

BAD_LOCAL = [
    "",
    "   ",
    "8080",
    "8080:h",
    "h:8080",
    "/tmp/l.sock",
    "/tmp/l.sock:8080",
    "8080:h:80:x",
    "a:8080:h:80:x",
    "8080:h:http2000",
    "65536:h:80",
    "8080:h:65536",
    "[::1]8080:h:80",
    "[a:8080:h:80",
    "a\\",
    "/tmp/a:h:/tmp/b",
    "8080:h:${HASHIKE_TEST_UNSET_VARIABLE}",
    "8080:h:${",
    "8080:h:${}",
]


@pytest.mark.parametrize("spec", BAD_LOCAL)
def test_bad_local_specifications(spec: str) -> None:
    with pytest.raises(ForwardSpecError) as info:
        parse_forward("local", spec, env={})
    assert str(info.value) == f"Bad local forwarding specification '{spec}'"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec", ["", "h:8080:x", "8080:h:80:x", "-1", "[::1]"])
def test_bad_remote_specifications(spec: str) -> None:
    with pytest.raises(ForwardSpecError, match=r"^Bad remote forwarding specification '.*'$"):
        parse_forward("remote", spec)


@pytest.mark.parametrize("spec", ["", "1080:h:80", "a:1080:h:80", "1080:/run/x.sock", "/a:/b", "65536", "x"])
def test_bad_dynamic_specifications(spec: str) -> None:
    with pytest.raises(ForwardSpecError) as info:
        parse_forward("dynamic", spec)
    assert str(info.value) == f"Bad dynamic forwarding specification '{spec}'"


def test_length_limits() -> None:
    # NI_MAXHOST (1025) for hosts, sun_path (108) for sockets, NUL included.
    assert parse_forward("local", f"8080:{'h' * 1024}:80").connect_host == "h" * 1024
    with pytest.raises(ForwardSpecError):
        parse_forward("local", f"8080:{'h' * 1025}:80")
    path = "/" + "s" * 106
    assert parse_forward("local", f"8080:{path}").connect_socket == path
    with pytest.raises(ForwardSpecError):
        parse_forward("local", f"8080:{path}s")


def test_error_messages_stay_on_one_line() -> None:
    with pytest.raises(ForwardSpecError) as info:
        parse_forward("local", "8080:h\n")
    assert str(info.value) == "Bad local forwarding specification '8080:h\\n'"


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown forwarding kind"):
        parse_forward("sideways", "1:h:2")  # type: ignore[arg-type]


# --- ${VAR} -------------------------------------------------------------------------------


def test_environment_variables_expand_before_fields_are_split() -> None:
    env = {"SOCK": "/run/app.sock", "PORT": "8080"}
    assert parse_forward("local", "${PORT}:${SOCK}", env=env) == L(
        listen_port=8080, connect_socket="/run/app.sock"
    )
    # '$' without '{' is literal.
    assert parse_forward("local", "8080:$h:80", env=env).connect_host == "$h"


def test_expand_variables() -> None:
    tokens = {"h": "host", "p": "22"}
    assert expand_variables("%h:%p %% ${A}", tokens, env={"A": "%h"}) == "host:22 % %h"
    assert expand_variables("%h ${A}", None, env={"A": "a"}) == "%h a"
    assert expand_variables("${A}", tokens, env={"A": "a"}, expand_env=False) == "${A}"
    with pytest.raises(ValueError, match="unknown key %x"):
        expand_variables("%x", tokens, env={})
    with pytest.raises(ValueError, match="invalid format"):
        expand_variables("abc%", tokens, env={})
    with pytest.raises(ValueError, match=r"env var \$\{B\} has no value"):
        expand_variables("${B}", tokens, env={})
    with pytest.raises(ValueError, match="missing closing"):
        expand_variables("${B", tokens, env={})


# --- config-file forms ---------------------------------------------------------------------


def test_config_forms() -> None:
    assert forward_from_config("local", "8080", "h:80") == L(
        listen_port=8080, connect_host="h", connect_port=80
    )
    assert forward_from_config("local", "[::1]:8080", "[::1]:80") == L(
        listen_host="::1", listen_port=8080, connect_host="::1", connect_port=80
    )
    assert forward_from_config("local", "/tmp/l.sock", "/run/r.sock") == L(
        listen_socket="/tmp/l.sock", connect_socket="/run/r.sock"
    )
    assert forward_from_config("remote", "8080", "h:80") == R(
        listen_port=8080, connect_host="h", connect_port=80
    )
    assert forward_from_config("remote", "8080") == R(listen_port=8080)
    assert forward_from_config("dynamic", "localhost:1080") == D(listen_host="localhost", listen_port=1080)


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("local", ("8080",), "Missing target argument."),
        ("local", ("8080:h:80",), "Missing target argument."),
        ("local", ("bad", "h:80"), "Bad forwarding specification."),
        ("local", ("0", "h:80"), "Bad forwarding specification."),
        ("remote", ("8080", "h"), "Bad forwarding specification."),
        ("remote", ("x",), "Bad forwarding specification."),
        ("dynamic", ("1080", "h:80"), "Bad forwarding specification."),
        ("dynamic", ("0",), "Bad forwarding specification."),
    ],
)
def test_config_form_errors(kind: ForwardKind, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ForwardSpecError) as info:
        forward_from_config(kind, *args)
    assert str(info.value) == message


# --- describe() and round trips -------------------------------------------------------------


def test_describe() -> None:
    assert parse_forward("local", "8080:h:80").describe() == "-L 8080:h:80"
    assert parse_forward("local", "[::1]:8080:[fe80::1]:80").describe() == "-L [::1]:8080:[fe80::1]:80"
    assert parse_forward("local", "*:8080:h:80").describe() == "-L *:8080:h:80"
    assert parse_forward("local", ":8080:h:80").describe() == "-L :8080:h:80"
    assert parse_forward("local", "/tmp/l:/run/r").describe() == "-L /tmp/l:/run/r"
    assert parse_forward("remote", "0").describe() == "-R 0"
    assert parse_forward("remote", "bind:8080:/run/s").describe() == "-R bind:8080:/run/s"
    assert parse_forward("dynamic", "[::1]:1080").describe() == "-D [::1]:1080"
    assert parse_forward("dynamic", "/tmp/socks").describe() == "-D /tmp/socks"
    assert parse_forward("local", "8080:h\\:x/y:80").describe() == "-L 8080:h\\:x\\/y:80"


@pytest.mark.parametrize(("spec", "expected"), LOCAL_SHAPES)
def test_every_local_shape_round_trips(spec: str, expected: Forward) -> None:
    assert parse_forward("local", expected.spec()) == expected


@pytest.mark.parametrize(("spec", "expected"), REMOTE_SHAPES + DYNAMIC_SHAPES)
def test_every_remote_and_dynamic_shape_round_trips(spec: str, expected: Forward) -> None:
    assert parse_forward(expected.kind, expected.spec()) == expected


# Text ssh can carry in a field: anything but NUL, and no "${" (expanded before
# fields are split, with no way to escape it).
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40).filter(
    lambda s: "${" not in s
)
_host = _text
_path = st.tuples(_text, _text).map(lambda p: f"{p[0]}/{p[1]}").filter(lambda s: len(s.encode()) < 108)
_port = st.integers(1, 65535)


@st.composite
def _forwards(draw: st.DrawFn) -> Forward:
    kind: ForwardKind = draw(st.sampled_from(["local", "remote", "dynamic"]))
    listen_port = draw(st.integers(0 if kind == "remote" else 1, 65535))
    if draw(st.booleans()):
        listen: dict[str, object] = {"listen_socket": draw(_path)}
    else:
        listen = {"listen_port": listen_port, "listen_host": draw(st.none() | _host)}
    if kind == "dynamic" or (kind == "remote" and draw(st.booleans())):
        return Forward(kind=kind, **listen)  # type: ignore[arg-type]
    if draw(st.booleans()):
        target: dict[str, object] = {"connect_socket": draw(_path)}
    else:
        target = {"connect_host": draw(_host), "connect_port": draw(_port)}
    return Forward(kind=kind, **listen, **target)  # type: ignore[arg-type]


@given(_forwards())
def test_spec_round_trips(fwd: Forward) -> None:
    assert parse_forward(fwd.kind, fwd.spec(), env={}) == fwd
