"""The client's ssh_config(5) parser: sources, precedence, Host/Match, tokens, keywords, errors.

Behaviours marked "(ssh)" were checked against OpenSSH 9.2's ``ssh -G``; the
last section compares with it directly when ssh is installed.
"""

from __future__ import annotations

import hashlib
import math
import os
import pwd
import re
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashike.config.forward import Forward, parse_forward
from hashike.config.ssh_config import (
    DEFAULT_GLOBAL_KNOWN_HOSTS_FILES,
    ClientSettings,
    ConfigError,
    parse_client_config,
    transport_config,
)
from hashike.proto.config import (
    DEFAULT_CIPHERS,
    DEFAULT_HOST_KEY_ALGORITHMS,
    DEFAULT_KEX,
    DEFAULT_MACS,
    TransportConfig,
)

LOCAL_USER = pwd.getpwuid(os.getuid()).pw_name
LOCAL_HOME = pwd.getpwuid(os.getuid()).pw_dir


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    return path


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return str(path)


def parse(
    home: Path,
    text: str,
    host: str = "h",
    options: Sequence[str] = (),
    **kw: Any,
) -> ClientSettings:
    """Parse ``text`` as the -F file, with no system file."""
    path = write(home.parent / "config", text)
    return parse_client_config(
        host, config_file=path, options=options, home=str(home), system_config_file=None, **kw
    )


def error_of(home: Path, text: str, host: str = "h", options: Sequence[str] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        parse(home, text, host, options)
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(home.parent / "config"), "CFG")


# --- defaults ---------------------------------------------------------------------------------


def test_defaults(home: Path) -> None:
    s = parse_client_config("Example.ORG", config_file="none", options=[], home=str(home))
    h = str(home)
    assert s.host == "Example.ORG"
    assert s.hostname == "example.org"  # (ssh) lowercased
    assert s.user == LOCAL_USER
    assert s.port == 22
    assert s.identity_files == (f"{h}/.ssh/id_ed25519", f"{h}/.ssh/id_ecdsa", f"{h}/.ssh/id_rsa")
    assert s.identity_files_default
    assert not s.identities_only
    assert s.identity_agent is None
    assert s.forwards == ()
    assert s.strict_host_key_checking == "ask"
    assert s.user_known_hosts_files == (f"{h}/.ssh/known_hosts", f"{h}/.ssh/known_hosts2")
    assert s.global_known_hosts_files == DEFAULT_GLOBAL_KNOWN_HOSTS_FILES
    assert not s.batch_mode and not s.exit_on_forward_failure and not s.gateway_ports
    assert not s.hash_known_hosts and not s.compression and not s.fork_after_authentication
    assert s.password_authentication and s.kbd_interactive_authentication and s.pubkey_authentication
    assert s.preferred_authentications == ("publickey", "keyboard-interactive", "password")
    assert s.number_of_password_prompts == 3
    assert s.connect_timeout is None
    assert s.server_alive_interval == 0
    assert s.server_alive_count_max == 3
    assert s.tcp_keep_alive
    assert s.address_family == "any"
    assert s.bind_address is None
    assert s.escape_char == "~"
    assert s.log_level == "INFO"
    assert s.request_tty == "auto"
    assert s.session_type == "default"
    assert s.proxy_jump is None
    assert s.send_env == () and s.set_env == ()
    assert (s.control_master, s.control_path, s.control_persist) == ("no", None, None)
    assert (s.ciphers, s.kex_algorithms, s.macs) == (DEFAULT_CIPHERS, DEFAULT_KEX, DEFAULT_MACS)
    assert s.host_key_algorithms == DEFAULT_HOST_KEY_ALGORITHMS
    assert (s.rekey_bytes, s.rekey_seconds) == (
        TransportConfig().rekey_bytes,
        TransportConfig().rekey_seconds,
    )
    assert s.ignored_options == ()
    assert s.required_rsa_size == 1024


def test_default_home_and_user_come_from_the_password_database(monkeypatch: pytest.MonkeyPatch) -> None:
    # ssh takes them from getpwuid(), not from $HOME/$USER.
    monkeypatch.setenv("HOME", "/nonexistent-home")
    monkeypatch.setenv("USER", "somebody-else")
    s = parse_client_config("h", config_file="none", options=[])
    assert s.user == LOCAL_USER
    assert s.identity_files[0] == f"{LOCAL_HOME}/.ssh/id_ed25519"


def test_hostname_keeps_case_when_it_holds_a_percent(home: Path) -> None:
    # (ssh) an IPv6 zone such as fe80::1%eth0 is not lowercased.
    assert parse(home, "", host="FE80::1%Eth0").hostname == "FE80::1%Eth0"
    assert parse(home, "HostName Foo.Example\n").hostname == "foo.example"


# --- sources and precedence ---------------------------------------------------------------------


def test_option_beats_file(home: Path) -> None:
    s = parse(home, "Port 2200\nUser file\n", options=["Port 2300", "User=opt"])
    assert (s.port, s.user) == (2300, "opt")


def test_first_option_wins(home: Path) -> None:
    assert parse(home, "", options=["port 23", "Port 24"]).port == 23


def test_first_value_in_a_file_wins(home: Path) -> None:
    assert parse(home, "Port 2200\nPort 2300\n").port == 2200


def test_host_blocks_in_file_order(home: Path) -> None:
    assert parse(home, "Host h\n Port 1\nHost *\n Port 2\n").port == 1
    assert parse(home, "Host *\n Port 2\nHost h\n Port 1\n").port == 2
    assert parse(home, "Host other\n Port 1\nHost *\n Port 2\n").port == 2


def test_lines_before_any_host_apply_to_all(home: Path) -> None:
    assert parse(home, "User u\nHost other\n Port 1\n").user == "u"


def test_command_line_user_and_port_beat_everything(home: Path) -> None:
    s = parse(home, "User file\nPort 2200\n", options=["User opt", "Port 2300"], user="cli", port=2400)
    assert (s.user, s.port) == ("cli", 2400)


def test_user_file_then_system_file(home: Path, tmp_path: Path) -> None:
    write(home / ".ssh" / "config", "Port 1111\n")
    system = write(tmp_path / "etc" / "ssh_config", "Port 2222\nUser sys\n")
    s = parse_client_config("h", config_file=None, options=[], home=str(home), system_config_file=system)
    assert (s.port, s.user) == (1111, "sys")


def test_missing_user_and_system_files_are_fine(home: Path, tmp_path: Path) -> None:
    s = parse_client_config(
        "h", config_file=None, options=[], home=str(home), system_config_file=str(tmp_path / "nope")
    )
    assert s.port == 22


def test_dash_f_replaces_user_and_system_files(home: Path, tmp_path: Path) -> None:
    write(home / ".ssh" / "config", "Port 1111\n")
    system = write(tmp_path / "etc" / "ssh_config", "User sys\n")
    other = write(tmp_path / "other", "Compression yes\n")
    s = parse_client_config("h", config_file=other, options=[], home=str(home), system_config_file=system)
    assert (s.port, s.user, s.compression) == (22, LOCAL_USER, True)


def test_dash_f_none_reads_nothing(home: Path, tmp_path: Path) -> None:
    write(home / ".ssh" / "config", "Port 1111\n")
    s = parse_client_config("h", config_file="none", options=["User x"], home=str(home))
    assert (s.port, s.user) == (22, "x")


def test_dash_f_missing_file_is_an_error(home: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(
        ConfigError, match=rf"^Can't open user config file {re.escape(missing)}: No such file"
    ):
        parse_client_config("h", config_file=missing, options=[], home=str(home))


def test_user_file_with_loose_permissions_is_refused(home: Path) -> None:
    path = write(home / ".ssh" / "config", "Port 1\n")
    os.chmod(path, 0o666)
    with pytest.raises(ConfigError, match=rf"^Bad owner or permissions on {re.escape(path)}$"):
        parse_client_config("h", config_file=None, options=[], home=str(home), system_config_file=None)
    # -F files are not checked (ssh).
    assert parse_client_config("h", config_file=path, options=[], home=str(home)).port == 1


def test_each_file_starts_outside_any_host_block(home: Path, tmp_path: Path) -> None:
    write(home / ".ssh" / "config", "Host other\n")
    system = write(tmp_path / "etc" / "ssh_config", "Port 2222\n")
    s = parse_client_config("h", config_file=None, options=[], home=str(home), system_config_file=system)
    assert s.port == 2222


# --- Host patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "host", "matches"),
    [
        ("h", "h", True),
        ("*", "anything", True),
        ("*.example.org", "a.example.org", True),
        ("*.example.org", "example.org", False),
        ("a?c", "abc", True),
        ("a?c", "abbc", False),
        ("a b c", "b", True),
        ("* !h", "h", False),
        ("* !h", "g", True),
        ("!h *", "h", False),
        ("!h", "g", False),  # a negation alone never matches
        ("* !", "h", True),
        ("web[1]", "web[1]", True),  # no character classes
        ("web[1]", "web1", False),
        # Host is matched case-sensitively against the name as typed (ssh).
        ("MyHost", "MyHost", True),
        ("myhost", "MyHost", False),
        # Host takes blank-separated patterns; a comma is an ordinary character (ssh).
        ("a,b", "a", False),
        ("a,b", "a,b", True),
    ],
)
def test_host_patterns(home: Path, patterns: str, host: str, matches: bool) -> None:
    s = parse(home, f"Host {patterns}\n  Port 2222\n", host=host)
    assert (s.port == 2222) is matches


def test_host_matches_the_typed_name_not_hostname(home: Path) -> None:
    s = parse(home, "Host alias\n HostName real.example\nHost real.example\n Port 2222\n", host="alias")
    assert (s.hostname, s.port) == ("real.example", 22)


# --- Match ------------------------------------------------------------------------------------------


def test_match_all(home: Path) -> None:
    assert parse(home, "Host other\nMatch all\n Port 2222\n").port == 2222
    assert parse(home, "Match !all\n Port 2222\n").port == 22


@pytest.mark.parametrize(
    ("criteria", "host", "matches"),
    [
        ("host h", "h", True),
        ("host a,h", "h", True),
        ("host a,b", "h", False),
        ("host *,!h", "h", False),
        ("host *,!h", "g", True),
        ("!host h", "h", False),
        ("!host h", "g", True),
        ("Host H", "h", True),  # attribute and patterns ignore case
        ("HOST h", "H", True),
        ("host h host g", "h", False),  # criteria are ANDed
        ("host h !host g", "h", True),
    ],
)
def test_match_host(home: Path, criteria: str, host: str, matches: bool) -> None:
    s = parse(home, f"Match {criteria}\n  Port 2222\n", host=host)
    assert (s.port == 2222) is matches


def test_match_host_sees_the_hostname_obtained_so_far(home: Path) -> None:
    text = "Host alias\n HostName %h.example.org\nMatch host alias.example.org\n Port 2222\n"
    assert parse(home, text, host="alias").port == 2222
    # Before any HostName, the typed name.
    assert parse(home, "Match host alias\n Port 2222\n", host="alias").port == 2222


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Match user root", "CFG line 1: Unsupported Match attribute user"),
        ("Match exec true", "CFG line 1: Unsupported Match attribute exec"),
        ("Match host h originalhost h", "CFG line 1: Unsupported Match attribute originalhost"),
        ("Match foo", "CFG line 1: Unsupported Match attribute foo"),
        ("Match host", "CFG line 1: Missing Match criteria for host"),
        ("Match all host h", "CFG line 1: 'all' cannot be combined with other Match attributes"),
        ("Match", 'CFG line 1: no argument after keyword "match"'),
    ],
)
def test_match_errors(home: Path, line: str, message: str) -> None:
    assert error_of(home, line + "\n") == message


# --- accumulation ------------------------------------------------------------------------------


def test_identity_files_accumulate_in_order_without_duplicates(home: Path, tmp_path: Path) -> None:
    write(home / ".ssh" / "config", "IdentityFile ~/.ssh/user\nIdentityFile ~/.ssh/opt\n")
    system = write(tmp_path / "etc" / "ssh_config", "IdentityFile /etc/sys_key\n")
    s = parse_client_config(
        "h",
        config_file=None,
        options=["IdentityFile ~/.ssh/opt"],
        home=str(home),
        identity_files=["/cli/key"],
        system_config_file=system,
    )
    h = str(home)
    assert s.identity_files == ("/cli/key", f"{h}/.ssh/opt", f"{h}/.ssh/user", "/etc/sys_key")
    assert not s.identity_files_default


def test_identity_files_are_capped_like_ssh(home: Path) -> None:
    text = "".join(f"IdentityFile /k{i}\n" for i in range(101))
    assert error_of(home, text) == "CFG line 101: Too many identity files specified (max 100)"


def test_forwards_accumulate_without_duplicates(home: Path) -> None:
    cli = [parse_forward("local", "8080:h:80"), parse_forward("dynamic", "1080")]
    text = (
        "LocalForward 8080 h:80\n"
        "LocalForward 8081 h:81\n"
        "RemoteForward 9090 localhost:90\n"
        "RemoteForward 9091\n"
        "DynamicForward 1081\n"
        "Host other\n LocalForward 7070 h:70\n"
    )
    s = parse(home, text, forwards=cli)
    assert [f.describe() for f in s.forwards] == [
        "-L 8080:h:80",
        "-L 8081:h:81",
        "-R 9090:localhost:90",
        "-R 9091",
        "-D 1080",
        "-D 1081",
    ]
    assert s.remote_forwards[1].is_dynamic


def test_forward_forms(home: Path) -> None:
    text = (
        "LocalForward [::1]:8080 [fe80::1]:80\n"
        "LocalForward /tmp/l.sock /run/r.sock\n"
        "LocalForward localhost:8081 /run/app.sock\n"
        "RemoteForward *:0 h:80\n"
        "DynamicForward [::1]:1080\n"
    )
    s = parse(home, text)
    assert s.local_forwards == (
        Forward(kind="local", listen_host="::1", listen_port=8080, connect_host="fe80::1", connect_port=80),
        Forward(kind="local", listen_socket="/tmp/l.sock", connect_socket="/run/r.sock"),
        Forward(kind="local", listen_host="localhost", listen_port=8081, connect_socket="/run/app.sock"),
    )
    assert s.remote_forwards == (
        Forward(kind="remote", listen_host="*", listen_port=0, connect_host="h", connect_port=80),
    )
    assert s.dynamic_forwards == (Forward(kind="dynamic", listen_host="::1", listen_port=1080),)


def test_clear_all_forwardings(home: Path) -> None:
    s = parse(
        home,
        "ClearAllForwardings yes\nLocalForward 8080 h:80\n",
        forwards=[parse_forward("remote", "9090:h:90")],
    )
    assert s.forwards == ()


def test_send_env_accumulates_and_minus_removes(home: Path) -> None:
    s = parse(home, "SendEnv LANG LC_*\nSendEnv FOO\nSendEnv -LC_* BAR\n", options=["SendEnv OPT"])
    assert s.send_env == ("OPT", "LANG", "FOO", "BAR")


def test_set_env_first_line_wins(home: Path) -> None:
    # (ssh) the first SetEnv line obtained is used whole; in it, the first value of a name.
    s = parse(home, "SetEnv A=1 B=2 A=3 C=\nSetEnv D=4\n")
    assert s.set_env == (("A", "1"), ("B", "2"), ("C", ""))
    assert parse(home, 'SetEnv "X=a b"\n').set_env == (("X", "a b"),)


def test_inactive_blocks_do_not_accumulate(home: Path) -> None:
    s = parse(home, "Host other\n IdentityFile /k\n SendEnv X\n SetEnv Y=1\n RemoteForward 1\n")
    assert (s.identity_files_default, s.send_env, s.set_env, s.remote_forwards) == (True, (), (), ())


# --- tokens ---------------------------------------------------------------------------------------


def test_tokens_in_identity_file(home: Path) -> None:
    s = parse(home, "IdentityFile ~/%h-%p-%r-%u-%d-%n-%%\n", host="MyHost", user="bob", port=2222)
    h = str(home)
    assert s.identity_files == (f"{h}/myhost-2222-bob-{LOCAL_USER}-{h}-MyHost-%",)


def test_h_is_the_hostname_after_hostname_substitution(home: Path) -> None:
    s = parse(home, "HostName real.example\nUserKnownHostsFile /k/%h/%n\n", host="alias")
    assert s.user_known_hosts_files == ("/k/real.example/alias",)


def test_r_is_the_final_user(home: Path) -> None:
    assert parse(home, "User cfg\nIdentityFile /k/%r\n").identity_files == ("/k/cfg",)
    assert parse(home, "User cfg\nIdentityFile /k/%r\n", user="cli").identity_files == ("/k/cli",)


def test_other_tokens(home: Path) -> None:
    local = socket.gethostname()
    s = parse(
        home,
        "HostKeyAlias alias\nControlPath ~/%C/%l/%L/%i/%k\n",
        host="H",
        user="u",
        port=1,
    )
    digest = hashlib.sha1(f"{local}h1u".encode()).hexdigest()
    assert s.control_path == f"{home}/{digest}/{local}/{local.split('.')[0]}/{os.getuid()}/alias"
    assert s.host_key_alias == "alias"
    # Without HostKeyAlias, %k is the name as typed (ssh), not the HostName.
    assert parse(home, "HostName real\nControlPath /%k\n", host="H").control_path == "/H"


def test_hostname_tokens(home: Path) -> None:
    assert parse(home, "HostName %h.example.org\n", host="web").hostname == "web.example.org"
    assert parse(home, "HostName a%%b\n").hostname == "a%b"
    # Only %h and %% (ssh).
    with pytest.raises(ConfigError, match=r"^Bad HostName '%p': unknown key %p$"):
        parse(home, "HostName %p\n")


def test_unknown_token_is_an_error_when_used(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"^Bad IdentityFile '/k/%x': unknown key %x$"):
        parse(home, "IdentityFile /k/%x\n")
    # An unused value is not expanded (ssh).
    assert parse(home, "Host other\n IdentityFile /k/%x\n").identity_files_default


def test_environment_variables(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHIKE_KEYS", "/keys")
    monkeypatch.delenv("HASHIKE_UNSET", raising=False)
    s = parse(home, "IdentityFile ${HASHIKE_KEYS}/id\nUserKnownHostsFile ${HASHIKE_KEYS}/kh\n")
    assert s.identity_files == ("/keys/id",)
    assert s.user_known_hosts_files == ("/keys/kh",)
    with pytest.raises(ConfigError, match=r"^Bad IdentityFile '\$\{HASHIKE_UNSET\}': env var"):
        parse(home, "IdentityFile ${HASHIKE_UNSET}\n")


def test_tilde_forms(home: Path) -> None:
    root_home = pwd.getpwuid(0).pw_dir
    s = parse(home, "UserKnownHostsFile ~ ~/a ~root/b /abs ~/%d\n")
    assert s.user_known_hosts_files == (str(home), f"{home}/a", f"{root_home}/b", "/abs", f"{home}/{home}")
    with pytest.raises(ConfigError, match="No such user"):
        parse(home, "IdentityFile ~no-such-user-hashike/k\n")


def test_identity_agent_forms(home: Path) -> None:
    assert parse(home, "IdentityAgent none\n").identity_agent is None
    assert parse(home, "IdentityAgent SSH_AUTH_SOCK\n").identity_agent == "SSH_AUTH_SOCK"
    assert parse(home, "IdentityAgent $MY_AGENT\n").identity_agent == "$MY_AGENT"
    assert parse(home, "IdentityAgent ~/agent-%h\n").identity_agent == f"{home}/agent-h"


def test_forward_socket_paths_take_tokens(home: Path) -> None:
    s = parse(
        home,
        "LocalForward /tmp/%h-%p.sock /run/%r.sock\n",
        host="web",
        user="u",
        forwards=[parse_forward("remote", "/tmp/r-%n.sock:h:80")],
    )
    assert s.local_forwards[0].listen_socket == "/tmp/web-22.sock"
    assert s.local_forwards[0].connect_socket == "/run/u.sock"
    assert s.remote_forwards[0].listen_socket == "/tmp/r-web.sock"


# --- every keyword ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("HostName Example.COM", "hostname", "example.com"),
        ("User alice", "user", "alice"),
        ('User "a b"', "user", "a b"),
        ("Port 2222", "port", 2222),
        ("Port pop3", "port", 110),
        ("IdentitiesOnly yes", "identities_only", True),
        ("ExitOnForwardFailure yes", "exit_on_forward_failure", True),
        ("GatewayPorts yes", "gateway_ports", True),
        ("GatewayPorts no", "gateway_ports", False),
        ("BatchMode YES", "batch_mode", True),
        ("BatchMode true", "batch_mode", True),
        ("StrictHostKeyChecking yes", "strict_host_key_checking", "yes"),
        ("StrictHostKeyChecking true", "strict_host_key_checking", "yes"),
        ("StrictHostKeyChecking no", "strict_host_key_checking", "no"),
        ("StrictHostKeyChecking off", "strict_host_key_checking", "no"),
        ("StrictHostKeyChecking false", "strict_host_key_checking", "no"),
        ("StrictHostKeyChecking ask", "strict_host_key_checking", "ask"),
        ("StrictHostKeyChecking accept-new", "strict_host_key_checking", "accept-new"),
        ("UserKnownHostsFile /a /b", "user_known_hosts_files", ("/a", "/b")),
        ("UserKnownHostsFile none", "user_known_hosts_files", ("none",)),
        ("GlobalKnownHostsFile /g1 ~/g2", "global_known_hosts_files", ("/g1", "HOME/g2")),
        ("HashKnownHosts yes", "hash_known_hosts", True),
        ("PasswordAuthentication no", "password_authentication", False),
        ("KbdInteractiveAuthentication no", "kbd_interactive_authentication", False),
        ("ChallengeResponseAuthentication no", "kbd_interactive_authentication", False),
        ("PubkeyAuthentication no", "pubkey_authentication", False),
        ("PubkeyAuthentication host-bound", "pubkey_authentication", True),
        ("PubkeyAuthentication unbound", "pubkey_authentication", True),
        (
            "PreferredAuthentications password,publickey",
            "preferred_authentications",
            ("password", "publickey"),
        ),
        ("NumberOfPasswordPrompts 0", "number_of_password_prompts", 0),
        ("NumberOfPasswordPrompts 5", "number_of_password_prompts", 5),
        ("ConnectTimeout 10", "connect_timeout", 10.0),
        ("ConnectTimeout 1m", "connect_timeout", 60.0),
        ("ConnectTimeout 0", "connect_timeout", None),
        ("ConnectTimeout none", "connect_timeout", None),
        ("ServerAliveInterval 1h", "server_alive_interval", 3600),
        ("ServerAliveCountMax 0", "server_alive_count_max", 0),
        ("TCPKeepAlive no", "tcp_keep_alive", False),
        ("KeepAlive no", "tcp_keep_alive", False),
        ("Reconnect yes", "reconnect", None),
        ("Reconnect no", "reconnect", 0),
        ("Reconnect 5", "reconnect", 5),
        ("ReconnectMaxDelay 5m", "reconnect_max_delay", 300),
        ("AddressFamily inet6", "address_family", "inet6"),
        ("AddressFamily INET", "address_family", "inet"),
        ("BindAddress 192.0.2.1", "bind_address", "192.0.2.1"),
        ("Ciphers aes256-ctr,aes128-ctr", "ciphers", ("aes256-ctr", "aes128-ctr")),
        ("Ciphers -aes128-ctr", "ciphers", tuple(c for c in DEFAULT_CIPHERS if c != "aes128-ctr")),
        ("KexAlgorithms +ecdh-sha2-nistp256", "kex_algorithms", (*DEFAULT_KEX, "ecdh-sha2-nistp256")),
        (
            "KexAlgorithms ^curve25519-sha256",
            "kex_algorithms",
            ("curve25519-sha256", "mlkem768x25519-sha256", "curve25519-sha256@libssh.org"),
        ),
        ("HostKeyAlgorithms ssh-ed25519", "host_key_algorithms", ("ssh-ed25519",)),
        ("MACs hmac-sha2-512-etm@openssh.com", "macs", ("hmac-sha2-512-etm@openssh.com",)),
        ("Compression yes", "compression", True),
        ("Compression no", "compression", False),
        ("LogLevel debug3", "log_level", "DEBUG3"),
        ("LogLevel QUIET", "log_level", "QUIET"),
        ("EscapeChar none", "escape_char", None),
        ("EscapeChar %", "escape_char", "%"),
        ("EscapeChar ^A", "escape_char", "\x01"),
        ("EscapeChar ^a", "escape_char", "\x01"),
        ("RequestTTY force", "request_tty", "force"),
        ("RequestTTY true", "request_tty", "yes"),
        ("RequestTTY no", "request_tty", "no"),
        ("SessionType none", "session_type", "none"),
        ("SessionType subsystem", "session_type", "subsystem"),
        ("ForkAfterAuthentication yes", "fork_after_authentication", True),
        ("ProxyJump user@jump:2200,other", "proxy_jump", "user@jump:2200,other"),
        ("ProxyJump none", "proxy_jump", None),
        ("ControlMaster auto", "control_master", "auto"),
        ("ControlMaster yes", "control_master", "yes"),
        ("ControlMaster autoask", "control_master", "autoask"),
        ("ControlPath none", "control_path", None),
        ("ControlPath /tmp/cm-%r@%h:%p", "control_path", "/tmp/cm-root@h:22"),
        ("ControlPersist yes", "control_persist", 0),
        ("ControlPersist no", "control_persist", None),
        ("ControlPersist 10m", "control_persist", 600),
        ("HostKeyAlias k", "host_key_alias", "k"),
        ("IdentityAgent /tmp/agent", "identity_agent", "/tmp/agent"),
        ("IdentityAgent agent-%h", "identity_agent", "agent-h"),
        ("RequiredRSASize 3072", "required_rsa_size", 3072),
        ("RequiredRSASize 512", "required_rsa_size", 1024),  # may only be raised
    ],
)
def test_keyword(home: Path, line: str, name: str, value: object) -> None:
    s = parse(home, line + "\n", user="root" if "%r" in line else None)
    if isinstance(value, tuple):
        value = tuple(v.replace("HOME", str(home)) if isinstance(v, str) else v for v in value)
    assert getattr(s, name) == value


def test_rekey_limit(home: Path) -> None:
    default = TransportConfig()
    assert (
        parse(home, "RekeyLimit 1G 1h\n").rekey_bytes,
        parse(home, "RekeyLimit 1G 1h\n").rekey_seconds,
    ) == (
        1 << 30,
        3600.0,
    )
    s = parse(home, "RekeyLimit 512M none\n")
    assert (s.rekey_bytes, s.rekey_seconds) == (512 << 20, math.inf)
    s = parse(home, "RekeyLimit default 30m\n")
    assert (s.rekey_bytes, s.rekey_seconds) == (default.rekey_bytes, 1800.0)
    s = parse(home, "RekeyLimit 0 0\n")  # 0 is ssh's "default" size and "no time limit"
    assert (s.rekey_bytes, s.rekey_seconds) == (default.rekey_bytes, math.inf)
    assert parse(home, "RekeyLimit 16\n").rekey_seconds == default.rekey_seconds


def test_keyword_syntax(home: Path) -> None:
    # Case-insensitive keywords, '=' with or without blanks, quotes, comments, tabs.
    s = parse(home, 'pOrT=2222\nUSER = "x y"\n\tHostName\t=\tz # comment\n# Port 1\n\n   \n')
    assert (s.port, s.user, s.hostname) == (2222, "x y", "z")
    assert parse(home, 'IdentityFile "/a b/c"\n').identity_files == ("/a b/c",)
    assert parse(home, "IdentityFile /a\\ b\n").identity_files == ("/a b",)
    assert parse(home, "IdentityFile '/a \"b'\n").identity_files == ('/a "b',)


def test_batch_mode_sets_a_server_alive_interval(home: Path) -> None:
    # (ssh) BatchMode without ServerAliveInterval probes every 300 s.
    assert parse(home, "BatchMode yes\n").server_alive_interval == 300
    assert parse(home, "BatchMode yes\nServerAliveInterval 5\n").server_alive_interval == 5


def test_values_are_checked_in_inactive_blocks(home: Path) -> None:
    assert error_of(home, "Host other\n Port x\n") == "CFG line 2: Bad port 'x'."


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Foo bar\n", "CFG: line 1: Bad configuration option: foo"),
        ("\n\n  FooBar = 1\n", "CFG: line 3: Bad configuration option: foobar"),
        ("Port\n", 'CFG line 1: no argument after keyword "port"'),
        ("Foo\n", 'CFG line 1: no argument after keyword "foo"'),
        ("Port # comment\n", "CFG line 1: Missing argument."),
        ("Port 23 24\n", "CFG line 1: keyword port extra arguments at end of line"),
        ("Port 0\n", "CFG line 1: Bad port '0'."),
        ("Port abc\n", "CFG line 1: Bad port 'abc'."),
        ("Port 65536\n", "CFG line 1: Bad port '65536'."),
        ('Port "22\n', "CFG line 1: invalid quotes"),
        ('HostName ""\n', "CFG line 1: Missing argument."),
        ('Host ""\n', "CFG line 1: keyword host empty argument"),
        ("BatchMode maybe\n", 'CFG line 1: unsupported option "maybe".'),
        ("StrictHostKeyChecking maybe\n", 'CFG line 1: unsupported option "maybe".'),
        ("AddressFamily inet5\n", 'CFG line 1: unsupported option "inet5".'),
        ("NumberOfPasswordPrompts abc\n", "CFG line 1: integer value invalid."),
        ("NumberOfPasswordPrompts -1\n", "CFG line 1: integer value too small."),
        ("ConnectTimeout abc\n", "CFG line 1: invalid time value."),
        ("ServerAliveInterval 1.5\n", "CFG line 1: invalid time value."),
        ("EscapeChar ab\n", "CFG line 1: Bad escape character."),
        ("EscapeChar ^?\n", "CFG line 1: Bad escape character."),
        ("LogLevel noisy\n", "CFG line 1: unsupported log level 'noisy'"),
        ("RekeyLimit 15\n", "CFG line 1: RekeyLimit too small"),
        ("RekeyLimit none\n", "CFG line 1: Bad number 'none': Invalid argument"),
        ("RekeyLimit 1G 1x\n", "CFG line 1: invalid time value."),
        ("ControlPersist maybe\n", "CFG line 1: Bad ControlPersist argument."),
        ("SetEnv FOO\n", "CFG line 1: Invalid SetEnv."),
        ("SendEnv FOO=bar\n", "CFG line 1: Invalid environment name."),
        ("IdentityAgent $HOME/x\n", "CFG line 1: Invalid environment name $HOME/x."),
        ("LocalForward 8080\n", "CFG line 1: Missing target argument."),
        ("LocalForward 8080:h:80\n", "CFG line 1: Missing target argument."),
        ("LocalForward 8080 h:80 extra\n", "CFG line 1: keyword localforward extra arguments at end of line"),
        ("LocalForward bad h:80\n", "CFG line 1: Bad forwarding specification."),
        ("LocalForward 0 h:80\n", "CFG line 1: Bad forwarding specification."),
        ("DynamicForward 1080 x\n", "CFG line 1: keyword dynamicforward extra arguments at end of line"),
        ("RemoteForward x\n", "CFG line 1: Bad forwarding specification."),
        (
            "Ciphers aes128-cbc\n",
            "CFG line 1: Bad SSH2 cipher spec 'aes128-cbc': unsupported algorithm 'aes128-cbc'.",
        ),
        ("MACs hmac-md5\n", "CFG line 1: Bad SSH2 MAC spec 'hmac-md5': unsupported algorithm 'hmac-md5'."),
        ("KexAlgorithms x\n", "CFG line 1: Bad SSH2 KexAlgorithms 'x': unsupported algorithm 'x'."),
        (
            "HostKeyAlgorithms ssh-dss\n",
            "CFG line 1: Bad key types 'ssh-dss': unsupported algorithm 'ssh-dss'.",
        ),
    ],
)
def test_errors(home: Path, text: str, message: str) -> None:
    assert error_of(home, text) == message


def test_command_line_errors(home: Path) -> None:
    assert error_of(home, "", options=["Foo=bar"]) == "command-line: line 0: Bad configuration option: foo"
    assert error_of(home, "", options=["Port x"]) == "command-line line 0: Bad port 'x'."
    for directive in ("Host", "Match", "Include"):
        assert (
            error_of(home, "", options=[f"{directive} x"])
            == f"{directive} directive not supported as a command-line option"
        )


def test_bad_explicit_arguments(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"^Bad port '0'$"):
        parse(home, "", port=0)
    with pytest.raises(ConfigError, match=r"^Empty host name$"):
        parse(home, "", host="")


def test_huge_numbers_are_errors_not_crashes(home: Path) -> None:
    huge = "9" * 5000  # beyond int()'s default digit limit
    assert error_of(home, f"NumberOfPasswordPrompts {huge}\n") == "CFG line 1: integer value too large."
    assert error_of(home, "NumberOfPasswordPrompts 2147483648\n") == "CFG line 1: integer value too large."
    assert parse(home, "NumberOfPasswordPrompts 0002147483647\n").number_of_password_prompts == 2**31 - 1
    assert error_of(home, f"ConnectTimeout {huge}\n") == "CFG line 1: invalid time value."
    assert error_of(home, "ServerAliveInterval 2147483648\n") == "CFG line 1: invalid time value."
    assert error_of(home, f"RekeyLimit 1G {'9' * 400}\n") == "CFG line 1: invalid time value."
    assert error_of(home, f"RekeyLimit {'9' * 400}\n").startswith("CFG line 1: Bad number")
    assert error_of(home, f"ControlPersist {huge}\n") == "CFG line 1: Bad ControlPersist argument."
    assert error_of(home, f"LocalForward 8080 h:{huge}\n") == "CFG line 1: Bad forwarding specification."


def test_messages_stay_on_one_line(home: Path) -> None:
    assert error_of(home, "", options=["Port 1\n2"]) == "command-line line 0: Bad port '1\\n2'."
    with pytest.raises(ConfigError, match=r"x\\x00y"):
        parse_client_config("h", config_file="x\x00y", options=[], home=str(home))


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_non_utf8_file(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"User \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        parse_client_config("h", config_file=str(path), options=[], home=str(home))


def test_endless_file_is_refused_not_read_whole(home: Path) -> None:
    # /dev/zero never ends: reading it whole would take all memory.
    with pytest.raises(ConfigError, match=r"^/dev/zero: larger than 4 MiB$"):
        parse_client_config("h", config_file="/dev/zero", options=[], home=str(home))


# --- unimplemented OpenSSH keywords ----------------------------------------------------------------


def test_ignored_openssh_keywords_are_listed(home: Path) -> None:
    s = parse(home, "GSSAPIAuthentication yes\nForwardX11 yes\nHost other\n ForwardAgent yes\n")
    assert s.ignored_options == ("gssapiauthentication", "forwardx11")


def test_refused_keyword_is_an_error_only_when_it_takes_effect(home: Path) -> None:
    # (ProxyCommand was the example here until hashike implemented it.)
    message = error_of(home, "Host *\n  Tunnel yes\n")
    assert message.startswith("CFG line 2: Unsupported option: tunnel")
    assert parse(home, "Tunnel no\n").port == 22
    assert parse(home, "Tunnel no\nTunnel yes\n").port == 22  # the first value wins
    assert parse(home, "Host other\n BindInterface eth0\n").port == 22
    assert parse(home, "RemoteCommand none\nTunnel no\n").port == 22


def test_ignore_unknown(home: Path) -> None:
    s = parse(home, "IgnoreUnknown UseKeychain,Foo*\nUseKeychain yes\nfoobar 1\n")
    assert s.port == 22
    # It also silences the OpenSSH keywords hashike refuses.
    assert parse(home, "IgnoreUnknown bind*\nBindInterface x\n").port == 22
    assert error_of(home, "IgnoreUnknown Foo\nBindInterface x\n").startswith("CFG line 2: Unsupported option")
    # It must come before the keyword it silences (ssh).
    assert error_of(home, "UseKeychain yes\nIgnoreUnknown UseKeychain\n").startswith(
        "CFG: line 1: Bad configuration"
    )


# --- Include ----------------------------------------------------------------------------------------


def test_include_relative_to_dot_ssh_with_glob(home: Path) -> None:
    write(home / ".ssh" / "conf.d" / "b.conf", "User b\nPort 2\n")
    write(home / ".ssh" / "conf.d" / "a.conf", "Port 1\n")
    s = parse(home, "Include conf.d/*.conf\nPort 3\n")
    assert (s.port, s.user) == (1, "b")


def test_include_with_tilde_and_absolute_paths(home: Path, tmp_path: Path) -> None:
    write(home / "inc", "Port 1\n")
    write(tmp_path / "abs", "User abs\n")
    s = parse(home, f"Include ~/inc {tmp_path}/abs {tmp_path}/none*\n")
    assert (s.port, s.user) == (1, "abs")


def test_include_in_a_block(home: Path) -> None:
    write(home / ".ssh" / "inc", "Port 1\nHost other\nUser x\n")
    # In a matching block: read switched on; its Host lines switch within it only.
    s = parse(home, "Host h\nInclude inc\nCompression yes\nHost *\nPort 2\n")
    assert (s.port, s.user, s.compression) == (1, LOCAL_USER, True)
    # In a switched-off block: nothing in it applies, even after its own Host *.
    write(home / ".ssh" / "inc2", "Host *\nPort 1\n")
    assert parse(home, "Host other\nInclude inc2\nHost *\nPort 2\n").port == 2


def test_include_errors(home: Path, tmp_path: Path) -> None:
    write(home / ".ssh" / "loop", "Include loop\n")
    assert "Too many recursive configuration includes" in error_of(home, "Include loop\n")
    write(home / ".ssh" / "bad", "\nPort x\n")
    assert error_of(home, "Include bad\n") == f"{home}/.ssh/bad line 2: Bad port 'x'."
    loose = write(home / ".ssh" / "loose", "Port 1\n")
    os.chmod(loose, 0o666)
    assert error_of(home, "Include loose\n") == f"Bad owner or permissions on {loose}"


def test_system_file_includes_relative_to_its_directory(home: Path, tmp_path: Path) -> None:
    write(tmp_path / "etc" / "ssh_config.d" / "x.conf", "Port 2222\n")
    system = write(tmp_path / "etc" / "ssh_config", "Include ssh_config.d/*.conf\n")
    s = parse_client_config("h", config_file=None, options=[], home=str(home), system_config_file=system)
    assert s.port == 2222
    bad = write(tmp_path / "etc2" / "ssh_config", "Include ~/x\n")
    with pytest.raises(ConfigError, match=r"line 1: bad include path ~/x\.$"):
        parse_client_config("h", config_file=None, options=[], home=str(home), system_config_file=bad)


# --- transport --------------------------------------------------------------------------------------


def test_transport_config(home: Path) -> None:
    s = parse(
        home,
        "Ciphers aes256-ctr\nKexAlgorithms curve25519-sha256\nMACs hmac-sha2-512-etm@openssh.com\n"
        "HostKeyAlgorithms ssh-ed25519\nRekeyLimit 64M 10m\n",
    )
    base = TransportConfig(software_version="x_1")
    t = transport_config(s, base)
    assert t.ciphers == ("aes256-ctr",)
    assert t.kex_algorithms == ("curve25519-sha256",)
    assert t.macs == ("hmac-sha2-512-etm@openssh.com",)
    assert t.host_key_algorithms == ("ssh-ed25519",)
    assert (t.rekey_bytes, t.rekey_seconds) == (64 << 20, 600.0)
    assert t.software_version == "x_1"
    assert transport_config(parse(home, "")) == TransportConfig()


# --- against OpenSSH's own resolution (ssh -G) -------------------------------------------------------


def _ssh_dump(f: Forward) -> str:
    """A Forward in the shape ``ssh -G`` prints it."""
    if f.listen_socket is not None:
        listen = f.listen_socket
    elif f.listen_host is None:
        listen = str(f.listen_port)
    else:
        listen = f"[{f.listen_host}]:{f.listen_port}"
    if f.kind == "dynamic":
        return f"dynamicforward {listen}"
    if f.connect_socket is not None:
        target = f.connect_socket
    elif f.is_dynamic:
        target = "[socks]:0"
    else:
        target = f"[{f.connect_host}]:{f.connect_port}"
    return f"{f.kind}forward {listen} {target}"


_SHKC = {"yes": "true", "no": "false", "ask": "ask", "accept-new": "accept-new"}

DIFFERENTIAL_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "Host web\n"
        "  HostName web.internal.example\n"
        "  User deploy\n"
        "  Port 2200\n"
        "  IdentityFile ~/.ssh/deploy_key\n"
        "  LocalForward 8080 localhost:80\n"
        "  LocalForward [::1]:8443 [fe80::1]:443\n"
        "  LocalForward 40000 wisdom:pop3\n"
        "  RemoteForward 9090 /run/app.sock\n"
        "  RemoteForward 0 h:22\n"
        "  DynamicForward localhost:1080\n"
        "Host *\n"
        "  User nobody\n"
        "  StrictHostKeyChecking accept-new\n"
        "  IdentityFile /etc/ssh/fallback\n",
        "web",
        (),
    ),
    (
        "Host * !web\n  Port 2222\n  StrictHostKeyChecking off\nHost web\n  Port 3333\n",
        "web",
        (),
    ),
    (
        "Host * !web\n  Port 2222\n  StrictHostKeyChecking off\nHost web\n  Port 3333\n",
        "db",
        ("-l", "admin", "-p", "4444"),
    ),
    (
        "Host MyHost\n  HostName %h.Example.%%\n  UserKnownHostsFile ~/kh/%h-%n-%p-%r-%u-%d\n",
        "MyHost",
        ("-l", "u"),
    ),
    (
        "Host a\n  HostName b.example\nMatch host b.example,!c.example\n  User matched\n  Port 2022\n"
        "Match host *.example\n  StrictHostKeyChecking yes\nMatch all\n  StrictHostKeyChecking no\n",
        "a",
        (),
    ),
    (
        "Host a,b\n  Port 1\nHost a?\n  Port 2\nHost x*\n  HostName HOST.%h\n"
        "  ControlPath /tmp/%C/%l/%L/%i/%k\n  RemoteForward 2022\n",
        "xy",
        ("-p", "7"),
    ),
    (
        "Match !host skip\n  LocalForward /tmp/l.sock somewhere:8080\n  LocalForward 8081 /run/%h.sock\n"
        "  User first\nUser second\n",
        "target",
        (),
    ),
    ("StrictHostKeyChecking ask\n", "plain", ()),
    (
        "Host cli\n  User file\n  Port 2200\n  IdentityFile /file/key\n  LocalForward 8080 h:80\n"
        "  StrictHostKeyChecking no\n",
        "cli",
        (
            "-i",
            "{tmp}/cli_key",
            "-o",
            "User=opt",
            "-o",
            "StrictHostKeyChecking accept-new",
            "-o",
            "IdentityFile /opt/key",
            "-L",
            "8080:h:80",
            "-L",
            "[::1]:9000:/run/s.sock",
            "-R",
            "localhost:0",
            "-D",
            "1080",
            "-o",
            "LocalForward 7000 [2001:db8::1]:70",
        ),
    ),
]


def _run_ssh_g(ssh: str, config: str, host: str, args: Sequence[str]) -> dict[str, list[str]]:
    out = subprocess.run(
        [ssh, "-G", "-F", config, *args, host], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    result: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        result.setdefault(key, []).append(value)
    return result


@pytest.mark.interop
@pytest.mark.usefixtures("services_db")
@pytest.mark.parametrize(("text", "host", "args"), DIFFERENTIAL_CASES)
def test_resolution_matches_openssh(tmp_path: Path, text: str, host: str, args: tuple[str, ...]) -> None:
    from tests.interop.conftest import require_openssh

    ssh = require_openssh("ssh")["ssh"]
    config = write(tmp_path / "config", text)
    # ssh drops (with a warning) an -i file that does not exist.
    write(tmp_path / "cli_key", "")
    args = tuple(arg.replace("{tmp}", str(tmp_path)) for arg in args)
    theirs = _run_ssh_g(ssh, config, host, args)
    pairs = list(zip(args[::2], args[1::2], strict=True))
    opts = dict(pairs)
    kinds = {"-L": "local", "-R": "remote", "-D": "dynamic"}
    ours = parse_client_config(
        host,
        config_file=config,
        options=[value for flag, value in pairs if flag == "-o"],
        user=opts.get("-l"),
        port=int(opts["-p"]) if "-p" in opts else None,
        identity_files=[value for flag, value in pairs if flag == "-i"],
        forwards=[parse_forward(kinds[flag], value) for flag, value in pairs if flag in kinds],  # type: ignore[arg-type]
    )
    assert theirs["hostname"] == [ours.hostname]
    assert theirs["user"] == [ours.user]
    assert theirs["port"] == [str(ours.port)]
    assert theirs["stricthostkeychecking"] == [_SHKC[ours.strict_host_key_checking]]
    assert theirs["userknownhostsfile"] == [" ".join(ours.user_known_hosts_files)]
    if not ours.identity_files_default:
        # ssh -G prints identity files unexpanded.
        expanded = [LOCAL_HOME + p[1:] if p.startswith("~") else p for p in theirs["identityfile"]]
        assert expanded == list(ours.identity_files)
    if ours.control_path is not None:
        assert theirs["controlpath"] == [ours.control_path]
    dumped = [_ssh_dump(f) for f in ours.forwards]
    # ssh -G also lists a local forwarding to a socket under dynamicforward
    # (its dump skips only targets other than "socks"); a quirk of the dump.
    dumped += [
        f"dynamicforward {d.split()[1]}"
        for d in dumped
        if d.startswith("localforward") and d.split()[2].startswith("/")
    ]
    for kind in ("localforward", "remoteforward", "dynamicforward"):
        expected = [d.partition(" ")[2] for d in dumped if d.startswith(kind + " ")]
        assert sorted(theirs.get(kind, [])) == sorted(expected), kind


@pytest.fixture
def services_db() -> None:
    try:
        socket.getservbyname("pop3", "tcp")
    except OSError:
        pytest.fail("the services database (/etc/services, Debian package netbase) is missing", pytrace=False)


# --- hostile input ----------------------------------------------------------------------------------

_WORDS = [
    "Host",
    "Match",
    "HostName",
    "User",
    "Port",
    "IdentityFile",
    "LocalForward",
    "RemoteForward",
    "DynamicForward",
    "SendEnv",
    "SetEnv",
    "RekeyLimit",
    "ConnectTimeout",
    "EscapeChar",
    "ControlPath",
    "UserKnownHostsFile",
    "IdentityAgent",
    "Ciphers",
    "IgnoreUnknown",
    "ProxyCommand",
    "ForwardX11",
    "all",
    "host",
    "!host",
    "*",
    "!",
    "%h",
    "%",
    "%x",
    "${X}",
    "${",
    "~",
    "~nobody-x/",
    '"',
    "'",
    "\\",
    "=",
    "#",
    ":",
    "[",
    "]",
    "/",
    "0",
    "22",
    "99999999999999999999999",
    "1h",
    "none",
    "yes",
    ",",
    "-",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(st.sampled_from(_WORDS) | st.text(max_size=8), max_size=6).map(" ".join),
        max_size=8,
    )
)
def test_any_text_gives_settings_or_config_error(home: Path, lines: list[str]) -> None:
    try:
        parse(home, "\n".join(lines) + "\n", options=lines[:2])
    except ConfigError as exc:
        assert "\n" not in str(exc)
