"""hashiked's sshd_config(5) parser: keywords, precedence, syntax and errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from hashike.config.policy import ForwardingPolicy
from hashike.config.sshd_config import (
    DEFAULT_AUTHORIZED_KEYS_FILE,
    NO_REKEY_BYTES,
    ConfigError,
    ServerSettings,
    auth_methods,
    forwarding_policy,
    listen_endpoints,
    parse_listen_address,
    parse_server_config,
    transport_config,
)
from hashike.config.syntax import parse_size, parse_time
from hashike.keys.authorized_keys import ForwardPermission, KeyOptions
from hashike.proto.config import (
    DEFAULT_CIPHERS,
    DEFAULT_HOST_KEY_ALGORITHMS,
    DEFAULT_KEX,
    DEFAULT_MACS,
    TransportConfig,
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sshd_config"
    path.write_text(text, encoding="utf-8")
    return str(path)


def where(path: str, lineno: int) -> str:
    """A regex matching the start of an error message for this file and line."""
    return "^" + re.escape(f"{path} line {lineno}: ")


def parse_text(tmp_path: Path, text: str, overrides: list[str] | None = None) -> ServerSettings:
    return parse_server_config(write(tmp_path, text), overrides or [])


# --- defaults -----------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    s = parse_server_config(None, [])
    assert s == ServerSettings()
    assert s.port == 22
    assert s.listen_addresses == ()
    assert s.host_key_files == ()
    assert s.ciphers == DEFAULT_CIPHERS
    assert s.kex_algorithms == DEFAULT_KEX
    assert s.host_key_algorithms == DEFAULT_HOST_KEY_ALGORITHMS
    assert s.macs == DEFAULT_MACS
    assert s.rekey_bytes == TransportConfig().rekey_bytes
    assert s.rekey_seconds == TransportConfig().rekey_seconds
    assert s.login_grace_time == 120.0
    assert s.max_startups == (10, 30, 100)
    assert s.authorized_keys_files == (".ssh/authorized_keys",) == (DEFAULT_AUTHORIZED_KEYS_FILE,)
    assert s.pubkey_authentication is True
    assert s.password_authentication is False
    assert s.kbd_interactive_authentication is True
    assert s.password_file is None
    assert s.max_auth_tries == 6
    assert s.allow_users == ()
    assert s.banner is None
    assert auth_methods(s) == ("publickey",)
    assert s.allow_tcp_forwarding == "yes"
    assert s.permit_open is None
    assert s.disable_forwarding is False
    assert s.gateway_ports == "no"
    assert forwarding_policy(s) == ForwardingPolicy()


def test_settings_are_frozen() -> None:
    s = ServerSettings()
    with pytest.raises(AttributeError):
        s.port = 2222  # type: ignore[misc]


def test_empty_file_and_comments_only(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "") == ServerSettings()
    assert parse_text(tmp_path, "# Port 1\n   # indented comment\n\n\t\n") == ServerSettings()


def test_default_listen_is_loopback_only() -> None:
    assert listen_endpoints(ServerSettings(port=2200)) == (("127.0.0.1", 2200), ("::1", 2200))


# --- every keyword --------------------------------------------------------------


def test_port(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "Port 2222\n").port == 2222


def test_port_zero_means_any_free_port(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "Port 0\n").port == 0


@pytest.mark.parametrize("value", ["65536", "x", "-1", "22a"])
def test_bad_port(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"Port {value}\n")
    with pytest.raises(ConfigError, match=where(path, 1) + rf"Badly formatted port number '{value}'\.$"):
        parse_server_config(path, [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", None)),
        ("localhost", ("localhost", None)),
        ("127.0.0.1:2022", ("127.0.0.1", 2022)),
        ("example.org:22", ("example.org", 22)),
        ("[::1]:2022", ("::1", 2022)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("fe80::1:2", ("fe80::1:2", None)),
    ],
)
def test_parse_listen_address(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["", "[]:22", "[::1]22", "[::1]:", "host:", ":22", "host:99999", "[::1"])
def test_parse_listen_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(text)


def test_listen_address_accumulates_and_takes_port(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "ListenAddress 127.0.0.1\nListenAddress [::1]:2022\nPort 2200\n")
    assert s.listen_addresses == (("127.0.0.1", None), ("::1", 2022))
    assert listen_endpoints(s) == (("127.0.0.1", 2200), ("::1", 2022))


def test_bad_listen_address(tmp_path: Path) -> None:
    path = write(tmp_path, "Port 22\nListenAddress [::1]x\n")
    with pytest.raises(ConfigError, match=where(path, 2) + r"Bad ListenAddress '\[::1\]x'"):
        parse_server_config(path, [])


def test_host_key_accumulates_in_order(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "HostKey /k/ed25519\nHostKey /k/rsa\n", ["HostKey=/k/first"])
    assert s.host_key_files == ("/k/first", "/k/ed25519", "/k/rsa")


def test_ciphers(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "Ciphers aes128-ctr,chacha20-poly1305@openssh.com\n")
    assert s.ciphers == ("aes128-ctr", "chacha20-poly1305@openssh.com")


def test_algorithm_spec_modifiers(tmp_path: Path) -> None:
    s = parse_text(
        tmp_path,
        "Ciphers -aes128-ctr,aes256-ctr\n"
        "KexAlgorithms +ecdh-sha2-nistp256\n"
        "HostKeyAlgorithms ^rsa-sha2-256\n"
        "MACs hmac-sha2-512-etm@openssh.com\n",
    )
    assert s.ciphers == tuple(c for c in DEFAULT_CIPHERS if c not in ("aes128-ctr", "aes256-ctr"))
    assert s.kex_algorithms == (*DEFAULT_KEX, "ecdh-sha2-nistp256")
    assert s.host_key_algorithms[0] == "rsa-sha2-256"
    assert sorted(s.host_key_algorithms) == sorted(DEFAULT_HOST_KEY_ALGORITHMS)
    assert s.macs == ("hmac-sha2-512-etm@openssh.com",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Ciphers aes128-cbc", "Bad SSH2 cipher spec 'aes128-cbc'"),
        ("KexAlgorithms diffie-hellman-group1-sha1", "Bad SSH2 KexAlgorithms 'diffie-hellman-group1-sha1'"),
        ("HostKeyAlgorithms ssh-dss", "Bad key types 'ssh-dss'"),
        ("MACs hmac-sha1", "Bad SSH2 mac spec 'hmac-sha1'"),
        ("MACs -hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com", "Bad SSH2 mac spec"),
    ],
)
def test_unsupported_algorithms(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, f"# header\n{line}\n")
    with pytest.raises(ConfigError, match=where(path, 2) + rf"{message}"):
        parse_server_config(path, [])


@pytest.mark.parametrize(
    ("value", "nbytes", "seconds"),
    [
        ("default none", TransportConfig().rekey_bytes, math.inf),
        ("1G 1h", 1 << 30, 3600.0),
        ("500M", 500 << 20, TransportConfig().rekey_seconds),
        ("none", NO_REKEY_BYTES, TransportConfig().rekey_seconds),
        ("none none", NO_REKEY_BYTES, math.inf),
        ("64k 10m30s", 64 << 10, 630.0),
        ("1024 default", 1024, TransportConfig().rekey_seconds),
        ("2g 0", 2 << 30, math.inf),
    ],
)
def test_rekey_limit(tmp_path: Path, value: str, nbytes: int, seconds: float) -> None:
    s = parse_text(tmp_path, f"RekeyLimit {value}\n")
    assert (s.rekey_bytes, s.rekey_seconds) == (nbytes, seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1X", "Bad RekeyLimit size '1X'"),
        ("15", "RekeyLimit too small"),
        ("1G 1y", "Bad RekeyLimit time '1y'"),
        ("", "RekeyLimit missing argument"),
        ("1G 1h 1", "RekeyLimit garbage at end of line"),
    ],
)
def test_bad_rekey_limit(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, f"RekeyLimit {value}\n")
    with pytest.raises(ConfigError, match=where(path, 1) + rf"{message}"):
        parse_server_config(path, [])


def test_rekey_limit_first_wins_for_both_parts(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "RekeyLimit 1M 1m\nRekeyLimit 2M 2m\n")
    assert (s.rekey_bytes, s.rekey_seconds) == (1 << 20, 60.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("600", 600),
        ("600s", 600),
        ("10m", 600),
        ("10M", 600),
        ("1h30m", 5400),
        ("1d", 86400),
        ("2w", 1209600),
        ("1h15m10s", 4510),
        ("0", 0),
    ],
)
def test_parse_time(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "1x", "1h-", "-1", "1.5h", " 1"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


@pytest.mark.parametrize(
    ("text", "nbytes"), [("0", 0), ("16", 16), ("4K", 4096), ("3m", 3 << 20), ("1G", 1 << 30)]
)
def test_parse_size(text: str, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "K", "1T", "1.5G", "-1", "1 G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_login_grace_time(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "LoginGraceTime 2m\n").login_grace_time == 120.0
    assert parse_text(tmp_path, "LoginGraceTime 45\n").login_grace_time == 45.0
    assert parse_text(tmp_path, "LoginGraceTime 0\n").login_grace_time == 0.0


def test_status_socket(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "").status_socket is None
    assert parse_text(tmp_path, "StatusSocket /run/h/status\n").status_socket == "/run/h/status"
    assert parse_text(tmp_path, "StatusSocket none\n").status_socket is None
    assert parse_text(tmp_path, "", ["StatusSocket=/tmp/x"]).status_socket == "/tmp/x"


def test_bad_login_grace_time(tmp_path: Path) -> None:
    path = write(tmp_path, "LoginGraceTime soon\n")
    with pytest.raises(ConfigError, match=where(path, 1) + r"Invalid LoginGraceTime 'soon'\.$"):
        parse_server_config(path, [])


@pytest.mark.parametrize(
    ("value", "expected"), [("10:30:100", (10, 30, 100)), ("5:50:20", (5, 50, 20)), ("7", (7, 100, 7))]
)
def test_max_startups(tmp_path: Path, value: str, expected: tuple[int, int, int]) -> None:
    assert parse_text(tmp_path, f"MaxStartups {value}\n").max_startups == expected


@pytest.mark.parametrize("value", ["10:30", "a:b:c", "20:30:10", "10:0:100", "10:101:100", "0", "1:2:3:4"])
def test_bad_max_startups(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"MaxStartups {value}\n")
    with pytest.raises(ConfigError, match=where(path, 1) + rf"(Bad|Illegal) MaxStartups spec '{value}'\.$"):
        parse_server_config(path, [])


# --- user authentication ------------------------------------------------------------


def test_authorized_keys_file_patterns(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "AuthorizedKeysFile .ssh/authorized_keys /etc/hashike/keys/%u %h/k%%\n")
    assert s.authorized_keys_files == (".ssh/authorized_keys", "/etc/hashike/keys/%u", "%h/k%%")


@pytest.mark.parametrize("value", ["none", "None", "NONE"])
def test_authorized_keys_file_none(tmp_path: Path, value: str) -> None:
    assert parse_text(tmp_path, f"AuthorizedKeysFile {value}\n").authorized_keys_files == ()


def test_authorized_keys_file_first_line_wins(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "AuthorizedKeysFile /a /b\nAuthorizedKeysFile /c\n", ["AuthorizedKeysFile=/o"])
    assert s.authorized_keys_files == ("/o",)


@pytest.mark.parametrize("value", ["keys/%x", "keys/%", "%d/keys"])
def test_authorized_keys_file_bad_token(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"AuthorizedKeysFile .ssh/ok {value}\n")
    with pytest.raises(ConfigError, match=where(path, 1) + "AuthorizedKeysFile: bad token in"):
        parse_server_config(path, [])


def test_authorized_keys_file_needs_an_argument(tmp_path: Path) -> None:
    path = write(tmp_path, "AuthorizedKeysFile\n")
    with pytest.raises(ConfigError, match=where(path, 1) + r"AuthorizedKeysFile missing argument\.$"):
        parse_server_config(path, [])


@pytest.mark.parametrize(
    ("keyword", "field"),
    [
        ("PubkeyAuthentication", "pubkey_authentication"),
        ("PasswordAuthentication", "password_authentication"),
        ("KbdInteractiveAuthentication", "kbd_interactive_authentication"),
        ("ChallengeResponseAuthentication", "kbd_interactive_authentication"),
    ],
)
@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("no", False), ("Yes", True), ("NO", False)])
def test_flags(tmp_path: Path, keyword: str, field: str, value: str, expected: bool) -> None:
    assert getattr(parse_text(tmp_path, f"{keyword} {value}\n"), field) is expected


@pytest.mark.parametrize("value", ["true", "1", "on", "without-password"])
def test_bad_flag(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"PasswordAuthentication {value}\n")
    with pytest.raises(ConfigError) as info:
        parse_server_config(path, [])
    assert str(info.value) == f'{path} line 1: unsupported option "{value}".'


def test_challenge_response_is_an_alias_first_wins(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "ChallengeResponseAuthentication no\nKbdInteractiveAuthentication yes\n")
    assert s.kbd_interactive_authentication is False


def test_password_file(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "PasswordFile /etc/hashike/passwords\n").password_file == (
        "/etc/hashike/passwords"
    )
    assert parse_text(tmp_path, "PasswordFile none\n").password_file is None


def test_banner(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "Banner /etc/issue.net\n").banner == "/etc/issue.net"
    assert parse_text(tmp_path, "Banner none\n").banner is None


@pytest.mark.parametrize("line", ["PasswordFile", "Banner", "PasswordFile a b", "Banner ''"])
def test_path_keywords_take_one_argument(line: str) -> None:
    keyword = line.split()[0]
    with pytest.raises(ConfigError, match=rf"^command-line line 0: {keyword} "):
        parse_server_config(None, [line])


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3", 3), ("6", 6), ("100", 100)])
def test_max_auth_tries(tmp_path: Path, value: str, expected: int) -> None:
    assert parse_text(tmp_path, f"MaxAuthTries {value}\n").max_auth_tries == expected


@pytest.mark.parametrize("value", ["0", "-1", "x", "3.5", "\u00b3"])
def test_bad_max_auth_tries(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"MaxAuthTries {value}\n")
    with pytest.raises(ConfigError) as info:
        parse_server_config(path, [])
    assert str(info.value) == f"{path} line 1: Invalid MaxAuthTries '{value}'."


def test_allow_users_add_up_across_lines_and_sources(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "AllowUsers alice b?b\nAllowUsers carol@10.0.0.0/8\n", ["AllowUsers=dave*"])
    assert s.allow_users == ("dave*", "alice", "b?b", "carol@10.0.0.0/8")


@pytest.mark.parametrize("value", ["@host", "alice@", "ok @x"])
def test_bad_allow_users(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"AllowUsers {value}\n")
    with pytest.raises(ConfigError, match=where(path, 1) + r"Bad AllowUsers pattern '"):
        parse_server_config(path, [])


def test_allow_users_needs_an_argument() -> None:
    with pytest.raises(ConfigError, match=r"^command-line line 0: AllowUsers missing argument\.$"):
        parse_server_config(None, ["AllowUsers"])


@pytest.mark.parametrize(
    ("lines", "methods"),
    [
        ([], ("publickey",)),
        (["PubkeyAuthentication no"], ()),
        # Passwords need a PasswordFile: the flag alone offers nothing.
        (["PasswordAuthentication yes"], ("publickey",)),
        # A PasswordFile alone offers nothing either: PasswordAuthentication is no.
        (["PasswordFile /p"], ("publickey",)),
        (
            ["PasswordFile /p", "PasswordAuthentication yes"],
            ("publickey", "password", "keyboard-interactive"),
        ),
        (
            ["PasswordFile /p", "PasswordAuthentication yes", "KbdInteractiveAuthentication no"],
            ("publickey", "password"),
        ),
        (
            ["PasswordFile /p", "PasswordAuthentication yes", "PubkeyAuthentication no"],
            ("password", "keyboard-interactive"),
        ),
        (["PasswordFile none", "PasswordAuthentication yes"], ("publickey",)),
    ],
)
def test_auth_methods(lines: list[str], methods: tuple[str, ...]) -> None:
    assert auth_methods(parse_server_config(None, lines)) == methods


# --- forwarding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yes", "yes"), ("all", "yes"), ("ALL", "yes"), ("no", "no"), ("local", "local"), ("Remote", "remote")],
)
def test_allow_tcp_forwarding(value: str, expected: str) -> None:
    s = parse_server_config(None, [f"AllowTcpForwarding {value}"])
    assert s.allow_tcp_forwarding == expected
    assert forwarding_policy(s).allow_tcp_forwarding == expected


@pytest.mark.parametrize("value", ["maybe", "1", "true", "local,remote"])
def test_bad_allow_tcp_forwarding(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"AllowTcpForwarding {value}\n")
    with pytest.raises(ConfigError) as info:
        parse_server_config(path, [])
    assert str(info.value) == f'{path} line 1: unsupported option "{value}".'


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("any", None),
        ("none", ()),
        ("127.0.0.1:110", (ForwardPermission("127.0.0.1", 110),)),
        ("*:443 db.internal:*", (ForwardPermission("*", 443), ForwardPermission("db.internal", None))),
        ("*:*", (ForwardPermission("*", None),)),
        ("[::1]:8080", (ForwardPermission("::1", 8080),)),
    ],
)
def test_permit_open(values: str, expected: tuple[ForwardPermission, ...] | None) -> None:
    s = parse_server_config(None, [f"PermitOpen {values}"])
    assert s.permit_open == expected
    assert forwarding_policy(s).permit_open == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("PermitOpen", "PermitOpen missing argument."),
        ("PermitOpen any 127.0.0.1:80", 'PermitOpen "any" must appear alone.'),
        ("PermitOpen 127.0.0.1:80 none", 'PermitOpen "none" must appear alone.'),
        (
            "PermitOpen 80",
            "Invalid permit open specification '80': invalid permission port.",
        ),
        (
            "PermitOpen host:http",
            "Invalid permit open specification 'host:http': invalid permission port.",
        ),
        (
            "PermitOpen host:65536",
            "Invalid permit open specification 'host:65536': invalid permission port.",
        ),
        (
            "PermitOpen [::1:80",
            "Invalid permit open specification '[::1:80': invalid permission hostname.",
        ),
    ],
)
def test_bad_permit_open(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        parse_server_config(path, [])
    assert str(info.value) == f"{path} line 1: {message}"


def test_permit_open_first_line_wins_and_later_lines_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "PermitOpen 127.0.0.1:110\nPermitOpen any\n")
    assert parse_server_config(path, []).permit_open == (ForwardPermission("127.0.0.1", 110),)
    # -o comes first, so it overrides the file, as any keyword does.
    assert parse_server_config(path, ["PermitOpen=none"]).permit_open == ()
    bad = write(tmp_path, "PermitOpen any\nPermitOpen nonsense\n")
    with pytest.raises(ConfigError, match=where(bad, 2)):
        parse_server_config(bad, [])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("any", None),
        ("none", ()),
        ("40001", (ForwardPermission("*", 40001),)),
        (
            "localhost:* *.example.org:8080",
            (ForwardPermission("localhost", None), ForwardPermission("*.example.org", 8080)),
        ),
        ("[::1]:40001", (ForwardPermission("::1", 40001),)),
    ],
)
def test_permit_listen(values: str, expected: tuple[ForwardPermission, ...] | None) -> None:
    s = parse_server_config(None, [f"PermitListen {values}"])
    assert s.permit_listen == expected
    assert forwarding_policy(s).permit_listen == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("PermitListen none 40001", 'PermitListen "none" must appear alone.'),
        (
            "PermitListen host:http",
            "Invalid permit listen specification 'host:http': invalid permission port.",
        ),
    ],
)
def test_bad_permit_listen(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_config(None, [line])
    assert str(info.value) == f"command-line line 0: {message}"


def test_gateway_ports_reaches_the_policy() -> None:
    s = parse_server_config(None, ["GatewayPorts clientspecified"])
    assert forwarding_policy(s).remote_bind_hosts("*") == ("0.0.0.0", "::")
    assert forwarding_policy(s).remote_bind_hosts("localhost") == ("127.0.0.1", "::1")


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("no", False), ("YES", True)])
def test_disable_forwarding(value: str, expected: bool) -> None:
    s = parse_server_config(None, [f"DisableForwarding {value}"])
    assert s.disable_forwarding is expected
    assert forwarding_policy(s).disable_forwarding is expected


@pytest.mark.parametrize("value", ["no", "yes", "clientspecified", "ClientSpecified"])
def test_gateway_ports(value: str) -> None:
    assert parse_server_config(None, [f"GatewayPorts {value}"]).gateway_ports == value.lower()


@pytest.mark.parametrize("line", ["GatewayPorts all", "DisableForwarding local", "GatewayPorts"])
def test_bad_forwarding_values(line: str) -> None:
    with pytest.raises(ConfigError, match=r"^command-line line 0: .*(unsupported option|missing argument)"):
        parse_server_config(None, [line])


@pytest.mark.parametrize(
    ("lines", "key_options", "target", "allowed"),
    [
        ([], None, ("127.0.0.1", 110), True),
        (["AllowTcpForwarding no"], None, ("127.0.0.1", 110), False),
        (["AllowTcpForwarding remote"], None, ("127.0.0.1", 110), False),
        (["AllowTcpForwarding local"], None, ("127.0.0.1", 110), True),
        (["AllowTcpForwarding all"], None, ("127.0.0.1", 110), True),
        (["PermitOpen none"], None, ("127.0.0.1", 110), False),
        (["PermitOpen 127.0.0.1:110"], None, ("127.0.0.1", 110), True),
        (["PermitOpen 127.0.0.1:110"], None, ("127.0.0.1", 111), False),
        # Compared literally: localhost is not 127.0.0.1.
        (["PermitOpen 127.0.0.1:110"], None, ("localhost", 110), False),
        (["PermitOpen *:110"], None, ("localhost", 110), True),
        (["DisableForwarding yes", "AllowTcpForwarding yes"], None, ("127.0.0.1", 110), False),
        # authorized_keys narrows the server's policy and never widens it.
        ([], KeyOptions(port_forwarding=False), ("127.0.0.1", 110), False),
        (
            ["PermitOpen 127.0.0.1:110"],
            KeyOptions(permitopen=(ForwardPermission("127.0.0.1", 111),)),
            ("127.0.0.1", 111),
            False,
        ),
        (
            ["AllowTcpForwarding no"],
            KeyOptions(permitopen=(ForwardPermission("127.0.0.1", 110),)),
            ("127.0.0.1", 110),
            False,
        ),
    ],
)
def test_forwarding_policy(
    lines: list[str], key_options: KeyOptions | None, target: tuple[str, int], allowed: bool
) -> None:
    policy = forwarding_policy(parse_server_config(None, lines))
    assert policy.allows_local(key_options, *target) is allowed


# --- precedence -------------------------------------------------------------------


def test_first_value_wins_in_file(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "Port 2222\nPort 3333\nCiphers aes128-ctr\nCiphers aes256-ctr\n")
    assert s.port == 2222
    assert s.ciphers == ("aes128-ctr",)


def test_command_line_overrides_file(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "Port 2222\nLoginGraceTime 30\n", ["Port=4444"])
    assert s.port == 4444
    assert s.login_grace_time == 30.0


def test_first_command_line_option_wins() -> None:
    assert parse_server_config(None, ["Port 1111", "Port 2222"]).port == 1111


def test_listen_addresses_from_command_line_come_first(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "ListenAddress 10.0.0.1\n", ["ListenAddress=127.0.0.1:2022"])
    assert s.listen_addresses == (("127.0.0.1", 2022), ("10.0.0.1", None))


def test_later_values_are_still_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "Port 2222\nPort nope\n")
    with pytest.raises(ConfigError, match=r"line 2: Badly formatted port number"):
        parse_server_config(path, [])


# --- syntax -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["Port 2222", "port 2222", "PORT\t2222", "Port=2222", "Port = 2222", "Port =2222", "  Port  2222  "],
)
def test_keyword_syntax(tmp_path: Path, line: str) -> None:
    assert parse_text(tmp_path, line + "\n").port == 2222


def test_quoted_values(tmp_path: Path) -> None:
    s = parse_text(
        tmp_path,
        'HostKey "/etc/my keys/host key"\nHostKey \'/a b\'\nHostKey /c\\ d\nPort "2222"\n',
    )
    assert s.host_key_files == ("/etc/my keys/host key", "/a b", "/c d")
    assert s.port == 2222


def test_trailing_comment(tmp_path: Path) -> None:
    s = parse_text(tmp_path, "Port 2222 # the test port\nHostKey '/x#y' #c\n")
    assert s.port == 2222
    assert s.host_key_files == ("/x#y",)


def test_crlf_line_endings(tmp_path: Path) -> None:
    assert parse_text(tmp_path, "Port 2222\r\nLoginGraceTime 5\r\n").login_grace_time == 5.0


def test_unterminated_quote(tmp_path: Path) -> None:
    path = write(tmp_path, 'HostKey "/etc/key\n')
    with pytest.raises(ConfigError, match=where(path, 1) + r"HostKey unterminated quote\.$"):
        parse_server_config(path, [])


# --- errors ---------------------------------------------------------------------------


def test_unknown_keyword_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "Port 22\n# comment\nFoo bar\n")
    with pytest.raises(ConfigError) as info:
        parse_server_config(path, [])
    assert str(info.value) == f"{path} line 3: Bad configuration option: Foo"
    assert isinstance(info.value, ValueError)


def test_unknown_keyword_on_command_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_config(None, ["Foo=bar"])
    assert str(info.value) == "command-line line 0: Bad configuration option: Foo"


def test_bad_value_on_command_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_config(None, ["Port=x"])
    assert str(info.value) == "command-line line 0: Badly formatted port number 'x'."


@pytest.mark.parametrize(
    ("line", "message"),
    [("Port", "Port missing argument."), ("HostKey a b", "HostKey garbage at end of line: 'b'.")],
)
def test_argument_count(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        parse_server_config(path, [])
    assert str(info.value) == f"{path} line 1: {message}"


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: No such file or directory$"):
        parse_server_config(path, [])


@pytest.mark.parametrize(
    "line", ["Port \u00b2", "MaxStartups \u00b2", "ListenAddress h:\u00b2", "RekeyLimit \u0663K"]
)
def test_non_ascii_digits_are_config_errors(line: str) -> None:
    with pytest.raises(ConfigError, match=r"^command-line line 0: "):
        parse_server_config(None, [line])


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "Ciphers nope\n")
    with pytest.raises(ConfigError) as info:
        parse_server_config(path, [])
    assert "\n" not in str(info.value)


# --- to the core ------------------------------------------------------------------------


def test_transport_config(tmp_path: Path) -> None:
    s = parse_text(
        tmp_path,
        "Ciphers aes256-ctr\nKexAlgorithms curve25519-sha256\nHostKeyAlgorithms ssh-ed25519\n"
        "MACs hmac-sha2-256-etm@openssh.com\nRekeyLimit 1M 10m\n",
    )
    tc = transport_config(s)
    assert tc.ciphers == ("aes256-ctr",)
    assert tc.kex_algorithms == ("curve25519-sha256",)
    assert tc.host_key_algorithms == ("ssh-ed25519",)
    assert tc.macs == ("hmac-sha2-256-etm@openssh.com",)
    assert (tc.rekey_bytes, tc.rekey_seconds) == (1 << 20, 600.0)
    assert tc.software_version == TransportConfig().software_version


def test_transport_config_defaults_match_core_defaults() -> None:
    assert transport_config(ServerSettings()) == TransportConfig()


def test_stream_local_keywords_reach_the_policy() -> None:
    s = parse_server_config(
        None, ["AllowStreamLocalForwarding all", "StreamLocalBindMask 0077", "StreamLocalBindUnlink yes"]
    )
    policy = forwarding_policy(s)
    assert (policy.allow_streamlocal_forwarding, policy.streamlocal_bind_mask) == ("yes", 0o077)
    assert policy.streamlocal_bind_unlink is True
    defaults = forwarding_policy(parse_server_config(None, []))
    assert (defaults.streamlocal_bind_mask, defaults.streamlocal_bind_unlink) == (0o177, False)
    remote = forwarding_policy(parse_server_config(None, ["AllowStreamLocalForwarding remote"]))
    assert remote.allows_streamlocal(None, "remote") and not remote.allows_streamlocal(None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("StreamLocalBindMask 0800", "Invalid mask."),
        ("StreamLocalBindMask 9", "Invalid mask."),
        ("StreamLocalBindMask 01000", "Invalid mask."),
        ("AllowStreamLocalForwarding sometimes", "unsupported option"),
    ],
)
def test_bad_stream_local_values(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^command-line line 0: .*{re.escape(message)}"):
        parse_server_config(None, [line])


def test_remote_forward_takeover_reaches_the_policy() -> None:
    assert forwarding_policy(parse_server_config(None, ["RemoteForwardTakeover yes"])).remote_forward_takeover
    assert not forwarding_policy(parse_server_config(None, [])).remote_forward_takeover


def test_endless_file_is_refused_not_read_whole() -> None:
    with pytest.raises(ConfigError, match=r"^/dev/zero: larger than 4 MiB$"):
        parse_server_config("/dev/zero")
