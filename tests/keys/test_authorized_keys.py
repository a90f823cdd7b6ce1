"""Tests for hashike.keys.authorized_keys: sshd(8) AUTHORIZED_KEYS FILE FORMAT and
sshd_config(5) AuthorizedKeysFile. Where sshd's behaviour is not spelled out in the
man page (empty items, bare permitlisten ports, duplicates) the expectations were
checked against OpenSSH 9.2's sshd; tests/interop re-checks many against sshd."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashike.keys import authorized_keys as ak
from hashike.keys.authorized_keys import (
    AuthorizedKey,
    ForwardPermission,
    KeyOptions,
    OptionsError,
    expand_authorized_keys_files,
    expand_authorized_keys_path,
    find_authorized_key,
    load_authorized_keys,
    parse_authorized_key_line,
    parse_authorized_keys,
    parse_key_options,
)
from hashike.keys.keypair import generate_private_key
from hashike.proto.hostkey import KeyFormatError, PublicKey
from hashike.proto.wire import encode_string

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key() -> PublicKey:
    return generate_private_key("ssh-ed25519").public_key


@pytest.fixture(scope="module")
def other() -> PublicKey:
    return generate_private_key("ecdsa", 256).public_key


# --- lines ---------------------------------------------------------------------------


def test_line_without_options(key: PublicKey) -> None:
    entry = parse_authorized_key_line(key.openssh_line("alice@laptop  x"), 7)
    assert entry == AuthorizedKey(key, KeyOptions(), 7, "alice@laptop  x")
    assert parse_authorized_key_line(f"\t{key.openssh_line()}\t\r") == AuthorizedKey(key, KeyOptions(), 1, "")
    for blank in ("", "   ", "# comment", "  # indented comment", "\r"):
        assert parse_authorized_key_line(blank) is None


def test_line_with_options(key: PublicKey) -> None:
    entry = parse_authorized_key_line(f'no-pty,command="echo a b, c" {key.openssh_line("c")}')
    assert entry is not None
    assert entry.key == key and entry.comment == "c"
    assert entry.options.forced_command == "echo a b, c"
    assert not entry.options.allows_pty()


@pytest.mark.parametrize(
    ("options", "command"),
    [
        (r'command="echo \"hi\""', 'echo "hi"'),
        (r'command="a\b"', r"a\b"),  # a backslash not before a quote is kept
        (r'command="a\\\"b"', 'a\\\\"b'),
        (r'command="tab	and space"', "tab\tand space"),
        ('command=""', ""),  # an empty forced command is still a forced command
        ('command="x,y=z"', "x,y=z"),
        ('command="\u00e9"', "\u00e9"),
    ],
)
def test_quoting(key: PublicKey, options: str, command: str) -> None:
    entry = parse_authorized_key_line(f"{options} {key.openssh_line()}")
    assert entry is not None and entry.options.forced_command == command


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("command=foo", "missing start quote"),
        ('command="unterminated', "missing end quote"),
        (r'command="a\"', "missing end quote"),
        (r'command="a\\"', "missing end quote"),  # the last backslash escapes the quote
        ('command="a"x', "unexpected characters after option value"),
        ("bogus", "unknown key option"),
        ("no-restrict", "unknown key option"),
        ("no-cert-authority", "unknown key option"),
        ('no-pty="x"', "unknown key option"),
        ('restrict="x"', "unknown key option"),
        ('bogus="x"', "unknown key option"),
        ('command="a",command="b"', 'multiple "command" clauses'),
        ('from="a",from="b"', 'multiple "from" clauses'),
        ('expiry-time="20990101",expiry-time="20990101"', 'multiple "expiry-time" clauses'),
        ('principals="a",principals="b"', 'multiple "principals" clauses'),
        ('tunnel="1",tunnel="2"', 'multiple "tunnel" clauses'),
        ('tunnel="x"', "invalid tun device"),
        ('environment="=b"', "invalid environment string"),
        ('environment="A-B=c"', "invalid environment string"),
        ('environment="Ab"', "invalid environment string"),
        ('environment=""', "invalid environment string"),
        ('permitopen="1234"', "invalid permission port"),
        ('permitopen="h:0"', "invalid permission port"),
        ('permitopen="h:99999"', "invalid permission port"),
        ('permitopen="h:"', "invalid permission port"),
        ('permitopen="::1:22"', "invalid permission port"),
        ('permitopen="[::1]22"', "invalid permission hostname"),
        ('permitopen="[::1:22"', "invalid permission hostname"),
        ('permitopen="h:\u0661"', "invalid permission port"),  # non-ASCII digit
        ('permitlisten="h:0"', "invalid permission port"),
        ('permitlisten="x"', "invalid permission port"),
        ('expiry-time="2099010112"', "invalid expires time"),
        ('expiry-time="20991301"', "invalid expires time"),
        ('expiry-time="20990101Y"', "invalid expires time"),
        ('expiry-time="\u0662\u0660\u0669\u0669\u0660\u0661\u0660\u0661"', "invalid expires time"),
        ('expiry-time="00000101"', "invalid expires time"),
        (f'permitopen="h:{"9" * 5000}"', "invalid permission port"),
        (f'permitlisten="{"1" * 5000}"', "invalid permission port"),
        (f'tunnel="{"1" * 5000}"', "invalid tun device"),
        ('tunnel="2147483646"', "invalid tun device"),
    ],
)
def test_bad_options(options: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        parse_key_options(options)


def test_option_names_are_case_insensitive() -> None:
    options = parse_key_options('NO-PTY,Command="x",PermitOpen="h:1",No-Port-Forwarding')
    assert not options.pty and options.command == "x" and not options.port_forwarding
    assert options.permitopen == (ForwardPermission("h", 1),)


def test_empty_items_are_ignored_as_sshd_does() -> None:
    assert parse_key_options(",no-pty,,no-pty,") == KeyOptions(pty=False)
    assert parse_key_options("") == KeyOptions()


def test_every_flag() -> None:
    options = parse_key_options(
        "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty,no-user-rc,"
        "cert-authority,no-touch-required,verify-required"
    )
    assert options == KeyOptions(
        port_forwarding=False,
        agent_forwarding=False,
        x11_forwarding=False,
        pty=False,
        user_rc=False,
        cert_authority=True,
        no_touch_required=True,
        verify_required=True,
    )
    assert not any(
        (
            options.allows_port_forwarding(),
            options.allows_agent_forwarding(),
            options.allows_x11_forwarding(),
            options.allows_pty(),
            options.allows_user_rc(),
        )
    )


def test_restrict_and_re_enable() -> None:
    restricted = parse_key_options("restrict")
    assert restricted == KeyOptions(
        restrict=True,
        port_forwarding=False,
        agent_forwarding=False,
        x11_forwarding=False,
        pty=False,
        user_rc=False,
    )
    assert not restricted.permits_open("h", 1) and not restricted.permits_listen("localhost", 1)
    options = parse_key_options("restrict,port-forwarding,pty,agent-forwarding,X11-forwarding,user-rc")
    assert options == KeyOptions(restrict=True)
    partly = parse_key_options("restrict,port-forwarding")
    assert (
        partly.allows_port_forwarding() and not partly.allows_pty() and not partly.allows_agent_forwarding()
    )
    # Left to right: an option before restrict is overridden by it.
    assert parse_key_options("port-forwarding,pty,restrict") == restricted
    assert not parse_key_options("port-forwarding,no-port-forwarding").port_forwarding
    assert parse_key_options("no-port-forwarding,port-forwarding").port_forwarding


def test_value_options() -> None:
    options = parse_key_options(
        'environment="A=1",environment="B_2=x=y",environment="A=ignored",environment="9Z=",'
        'from="10.0.0.0/8,!10.1.2.3",principals="alice,bob",tunnel="5",'
        'expiry-time="20991231235959Z",permitopen="h:1",permitopen="[::1]:*",permitlisten="8080"'
    )
    assert options.environment == (("A", "1"), ("B_2", "x=y"), ("9Z", ""))
    assert options.from_patterns == "10.0.0.0/8,!10.1.2.3"
    assert options.principals == ("alice", "bob")
    assert options.tunnel == "5"
    assert parse_key_options('tunnel="any"').tunnel == "any"
    assert options.expiry_time == datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert options.permitopen == (ForwardPermission("h", 1), ForwardPermission("::1", None))
    assert options.permitlisten == (ForwardPermission("*", 8080),)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("20990101Z", datetime(2099, 1, 1, tzinfo=UTC)),
        ("209901011230Z", datetime(2099, 1, 1, 12, 30, tzinfo=UTC)),
        ("20990101123045z", datetime(2099, 1, 1, 12, 30, 45, tzinfo=UTC)),
    ],
)
def test_expiry_time_formats(spec: str, expected: datetime) -> None:
    assert parse_key_options(f'expiry-time="{spec}"').expiry_time == expected


def test_expiry_time_without_z_is_local_time() -> None:
    expiry = parse_key_options('expiry-time="209901011230"').expiry_time
    assert expiry is not None and expiry.tzinfo is not None
    assert expiry == datetime(2099, 1, 1, 12, 30).astimezone()


def test_expired() -> None:
    options = parse_key_options('expiry-time="20300601Z"')
    assert not options.expired(NOW - timedelta(days=1))
    assert options.expired(NOW)
    assert not KeyOptions().expired(NOW)


# --- forwarding permissions --------------------------------------------------------------


def test_permits_open() -> None:
    assert KeyOptions().permits_open("anything", 1)
    options = parse_key_options('permitopen="db.internal:5432",permitopen="[::1]:*",permitopen="*:443"')
    assert options.permits_open("db.internal", 5432)
    assert not options.permits_open("db.internal", 5433)
    assert not options.permits_open("DB.internal", 5432)  # literal names, no lookup (sshd(8))
    assert options.permits_open("::1", 1) and options.permits_open("::1", 65535)
    assert options.permits_open("example.com", 443) and not options.permits_open("example.com", 80)
    # No pattern matching in permitopen: only a lone "*" is a wildcard.
    assert not parse_key_options('permitopen="*.internal:1"').permits_open("a.internal", 1)
    assert not parse_key_options('no-port-forwarding,permitopen="h:1"').permits_open("h", 1)
    # sshd accepts an empty host: it grants nothing real.
    assert not parse_key_options('permitopen=":22"').permits_open("localhost", 22)


def test_permits_listen() -> None:
    assert KeyOptions().permits_listen("0.0.0.0", 1)
    options = parse_key_options('permitlisten="localhost:8080",permitlisten="*.lan:*",permitlisten="[::1]:9"')
    assert options.permits_listen("localhost", 8080) and options.permits_listen("LOCALHOST", 8080)
    assert not options.permits_listen("127.0.0.1", 8080)  # "localhost" is only that name
    assert options.permits_listen("box.lan", 1) and options.permits_listen("box.lan", 0)
    assert not options.permits_listen("box.lan.evil", 1)
    assert options.permits_listen("::1", 9) and not options.permits_listen("::1", 10)
    bare = parse_key_options('permitlisten="8080"')  # a bare port: any listen address
    assert bare.permits_listen("localhost", 8080) and bare.permits_listen("0.0.0.0", 8080)
    assert not bare.permits_listen("localhost", 0)  # port 0 needs a "*" port
    assert not parse_key_options('restrict,permitlisten="8080"').permits_listen("localhost", 8080)


# --- from= ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "address", "hostname", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1", None, True),
        ("127.0.0.*", "127.0.0.9", None, True),
        ("127.0.0.?", "127.0.0.10", None, False),
        ("10.0.0.0/8,127.0.0.1", "127.0.0.1", None, True),
        ("127.0.0.0/8", "127.1.2.3", None, True),
        ("127.0.0.0/8", "128.0.0.1", None, False),
        ("127.0.0.1/8", "127.0.0.1", None, False),  # host bits set: invalid, refuses all
        ("127.0.0.1/33", "127.0.0.1", None, False),
        ("bad/cidr,*", "127.0.0.1", None, False),
        ("", "127.0.0.1", None, False),
        ("!127.0.0.1,*", "127.0.0.1", None, False),
        ("!127.0.0.1,*", "127.0.0.2", None, True),
        ("127.0.0.1/32,!127.0.0.1", "127.0.0.1", None, False),
        ("!10.0.0.1", "127.0.0.1", None, False),  # only negative: nothing allows
        ("::1", "::1", None, True),
        ("2001:db8::/32", "2001:db8::5", None, True),
        ("2001:db8::/32", "127.0.0.1", None, False),
        ("127.0.0.1", "::ffff:127.0.0.1", None, True),  # v4-mapped seen as v4
        ("fe80::1", "fe80::1%eth0", None, True),
        ("localhost", "127.0.0.1", None, False),  # names only when looked up
        ("*.example.com", "192.0.2.1", "Host.Example.com", True),
        ("*.example.com,!bad.example.com", "192.0.2.1", "bad.example.com", False),
        ("*.example.com", "192.0.2.1", None, False),
    ],
)
def test_allows_from(patterns: str, address: str, hostname: str | None, allowed: bool) -> None:
    options = parse_key_options(f'from="{patterns}"')
    assert options.allows_from(address, hostname) is allowed
    assert KeyOptions().allows_from(address, hostname)


# --- files ---------------------------------------------------------------------------------


def test_parse_file_skips_bad_lines_with_warnings(key: PublicKey, other: PublicKey) -> None:
    blob = base64.b64encode(key.blob).decode()
    dss = base64.b64encode(encode_string("ssh-dss") + encode_string(b"x")).decode()
    text = "\n".join(
        [
            "# my keys",
            f"bogus-option {key.openssh_line()}",  # 2
            f"{key.openssh_line('good')}",  # 3
            f'command="unterminated {key.openssh_line()}',  # 4
            f"ssh-dss {dss} old",  # 5
            f"ssh-ed25519 {blob[:-2]}",  # 6
            f"ssh-rsa {blob}",  # 7
            "ssh-ed25519",  # 8
            f"no-pty ,no-pty {key.openssh_line()}",  # 9: a space ends the options
            f"ssh-ed25519-cert-v01@openssh.com {blob}",  # 10
            "",
            f'restrict,port-forwarding,permitopen="127.0.0.1:9" {other.openssh_line("fwd")}',  # 12
            "no-pty",  # 13
        ]
    )
    keys, warnings = parse_authorized_keys(text)
    assert [(k.line, k.key, k.comment) for k in keys] == [(3, key, "good"), (12, other, "fwd")]
    assert keys[1].options.permits_open("127.0.0.1", 9) and not keys[1].options.allows_pty()
    assert warnings == [
        (2, "bad key options: unknown key option"),
        (4, "bad key options: missing end quote"),
        (5, "unsupported key type 'ssh-dss'"),
        (6, "key data is not valid base64"),
        (7, "key type 'ssh-rsa' does not match the key data (ssh-ed25519)"),
        (8, "missing key type or key data"),
        (9, "unsupported key type ',no-pty'"),
        (10, "unsupported key type 'ssh-ed25519-cert-v01@openssh.com'"),
        (13, "missing key type or key data"),
    ]


def test_overlong_and_non_utf8_lines(key: PublicKey) -> None:
    data = (
        key.openssh_line("c" * ak.MAX_LINE_LENGTH).encode()
        + b"\nno-pty\xff "
        + key.openssh_line().encode()
        + b"\r\n"
        + key.openssh_line().encode()
    )
    keys, warnings = parse_authorized_keys(data)
    assert [k.line for k in keys] == [3]
    assert warnings == [(1, "line too long"), (2, "line is not valid UTF-8")]


def test_parse_line_raises_for_bad_lines(key: PublicKey) -> None:
    with pytest.raises(OptionsError):
        parse_authorized_key_line(f"bogus {key.openssh_line()}")
    with pytest.raises(KeyFormatError):
        parse_authorized_key_line("ssh-ed25519 AAAA")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_parse_never_raises(data: bytes) -> None:
    parse_authorized_keys(data)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["restrict", "no-pty", ",", "=", '"', "\\", " ", "command", "from", "permitopen", "permitlisten",
             "environment", "expiry-time", "tunnel", "*", ":", "[", "]", "1", "a", "/", "!"]
        ),
        max_size=25,
    )
)  # fmt: skip
def test_options_parser_is_total(parts: list[str]) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB35jhwxQXbBjqRCmoXU+UVQxSMKxuE7pNYQxWUGiX6a"
    keys, _ = parse_authorized_keys("".join(parts) + " " + key)
    for entry in keys:
        entry.options.allows_from("127.0.0.1", "h")
        entry.options.permits_open("h", 1)
        entry.options.permits_listen("h", 1)
        entry.refusal("::1", NOW)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(ak._VALUED)),
    st.text(max_size=40) | st.from_regex(r"[0-9:*\[\]a-z/!.,]{0,30}", fullmatch=True) | st.just("9" * 5000),
)
def test_option_values_raise_only_options_error(name: str, value: str) -> None:
    try:
        options = parse_key_options(f'{name}="{value.replace(chr(34), chr(92) + chr(34))}"')
    except OptionsError:
        return
    options.allows_from("10.0.0.1", "h")
    options.permits_open("h", 1)
    options.permits_listen("h", 1)
    options.expired(NOW)


def test_load(tmp_path: Path, key: PublicKey) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(f"bad line\n{key.openssh_line()}\n")
    warnings: list[tuple[int, str]] = []
    keys = load_authorized_keys(path, warnings)
    assert [k.line for k in keys] == [2] and warnings == [(1, "bad key options: unknown key option")]
    assert load_authorized_keys(str(path)) == keys
    assert load_authorized_keys(tmp_path / "missing") == []
    assert load_authorized_keys(path / "not-a-dir") == []
    warnings = []
    assert load_authorized_keys(tmp_path, warnings) == []  # a directory: unreadable
    assert warnings == [(0, f"cannot read {tmp_path}: Is a directory")]


def test_load_caps_the_file_size(tmp_path: Path, key: PublicKey, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "authorized_keys"
    text = "".join(key.openssh_line(str(i)) + "\n" for i in range(10))
    path.write_text(text)
    monkeypatch.setattr(ak, "MAX_FILE_SIZE", len(text) // 2)
    warnings: list[tuple[int, str]] = []
    keys = load_authorized_keys(path, warnings)
    assert 0 < len(keys) < 10
    assert warnings == [(0, f"file larger than {len(text) // 2} bytes: the rest is ignored")]


# --- logging in ---------------------------------------------------------------------------


def entries(*lines: str) -> list[AuthorizedKey]:
    keys, warnings = parse_authorized_keys("\n".join(lines))
    assert warnings == []
    return keys


def test_find_authorized_key(key: PublicKey, other: PublicKey) -> None:
    keys = entries(
        f'from="10.0.0.0/8" {key.openssh_line("first")}',
        f'expiry-time="20200101Z" {key.openssh_line("expired")}',
        f"cert-authority {key.openssh_line('ca')}",
        f'principals="a" {key.openssh_line("principals")}',
        f'command="x" {key.openssh_line("last")}',
    )
    assert [k.refusal("127.0.0.1", NOW) for k in keys] == [
        "key is not allowed from 127.0.0.1 (from=)",
        "key has expired (expiry-time)",
        "key is a certification authority (cert-authority): it only signs certificates",
        "principals= is only valid on a cert-authority line",
        None,
    ]
    found = find_authorized_key(keys, key, "127.0.0.1", NOW)
    assert found is not None and found.comment == "last" and found.options.forced_command == "x"
    found = find_authorized_key(keys, key, "10.1.1.1", NOW)
    assert found is not None and found.comment == "first"
    assert find_authorized_key(keys, other, "10.1.1.1", NOW) is None
    assert find_authorized_key(keys[:4], key, "127.0.0.1", NOW) is None


# --- AuthorizedKeysFile ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (".ssh/authorized_keys", "/home/al/.ssh/authorized_keys"),
        ("%h/.ssh/authorized_keys", "/home/al/.ssh/authorized_keys"),
        ("/etc/ssh/keys/%u", "/etc/ssh/keys/al"),
        ("/etc/ssh/keys/%U", "/etc/ssh/keys/1000"),
        ("keys/%u%%h", "/home/al/keys/al%h"),
        ("%%", "/home/al/%"),
    ],
)
def test_expand_authorized_keys_path(pattern: str, expected: str) -> None:
    assert expand_authorized_keys_path(pattern, "al", "/home/al", 1000) == expected


@pytest.mark.parametrize("pattern", ["%x", "a%", "/k/%U"])
def test_expand_authorized_keys_path_errors(pattern: str) -> None:
    with pytest.raises(ValueError):
        expand_authorized_keys_path(pattern, "al", "/home/al")


def test_expand_authorized_keys_files() -> None:
    assert expand_authorized_keys_files(".ssh/authorized_keys  .ssh/authorized_keys2", "al", "/h") == [
        "/h/.ssh/authorized_keys",
        "/h/.ssh/authorized_keys2",
    ]
    assert expand_authorized_keys_files("none", "al", "/h") == []
    assert expand_authorized_keys_files("None", "al", "/h") == []
