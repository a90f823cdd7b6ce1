"""Tests for hashike.keys.known_hosts: the sshd(8) SSH_KNOWN_HOSTS FILE FORMAT and ssh's
StrictHostKeyChecking policy. The expected messages are OpenSSH 9.2's, captured from ssh."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashike.keys import known_hosts as kh
from hashike.keys.keypair import generate_private_key
from hashike.keys.known_hosts import (
    HostKeyStatus,
    KnownHosts,
    KnownHostsError,
    Marker,
    append_known_host,
    evaluate_host_key,
    hash_host_name,
    host_port_name,
    key_type_label,
)
from hashike.proto.hostkey import PublicKey
from hashike.proto.wire import encode_string

HOST, PORT = "127.0.0.1", 2222
NAME = "[127.0.0.1]:2222"
BANNER = "@" * 59


@pytest.fixture(scope="module")
def key() -> PublicKey:
    return generate_private_key("ssh-ed25519").public_key


@pytest.fixture(scope="module")
def other() -> PublicKey:
    return generate_private_key("ssh-ed25519").public_key


@pytest.fixture(scope="module")
def ecdsa() -> PublicKey:
    return generate_private_key("ecdsa", 256).public_key


def line(names: str, key: PublicKey, marker: str = "", comment: str = "") -> str:
    text = f"{names} {key.openssh_line(comment)}"
    return f"{marker} {text}" if marker else text


def parse(*lines: str) -> KnownHosts:
    return KnownHosts.parse("\n".join(lines) + "\n", "/kh")


def test_host_port_name() -> None:
    assert host_port_name("Example.COM", 22) == "example.com"
    assert host_port_name("127.0.0.1", 2222) == NAME
    assert host_port_name("::1", 2222) == "[::1]:2222"
    for port in (0, -1, 65536):
        with pytest.raises(ValueError):
            host_port_name("h", port)


def test_hash_host_name_is_hmac_sha1_of_the_name() -> None:
    salt = bytes(range(20))
    digest = hmac.new(salt, NAME.encode(), hashlib.sha1).digest()
    expected = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    assert hash_host_name(NAME, salt) == expected
    assert hash_host_name(NAME.upper(), salt) == expected  # ssh lowercases names


@pytest.mark.parametrize(
    ("key_type", "label"),
    [
        ("ssh-ed25519", "ED25519"),
        ("ssh-rsa", "RSA"),
        ("ecdsa-sha2-nistp256", "ECDSA"),
        ("ecdsa-sha2-nistp521", "ECDSA"),
        ("ssh-dss", "DSA"),
        ("sk-ssh-ed25519@openssh.com", "ED25519-SK"),
        ("sk-ecdsa-sha2-nistp256@openssh.com", "ECDSA-SK"),
        ("ssh-ed25519-cert-v01@openssh.com", "ED25519-CERT"),
        ("sk-ssh-ed25519-cert-v01@openssh.com", "ED25519-SK-CERT"),
        ("x-unheard-of", "unknown"),
    ],
)
def test_key_type_label(key_type: str, label: str) -> None:
    assert key_type_label(key_type) == label


# --- parsing -------------------------------------------------------------------------


def test_parse_plain_entry(key: PublicKey) -> None:
    known = parse("# a comment", "", "   ", line("a.example,b.example", key, comment="my  comment "))
    assert known.warnings == ()
    (entry,) = known.entries
    assert (entry.path, entry.line, entry.marker) == ("/kh", 4, Marker.NONE)
    assert entry.hostnames == "a.example,b.example"
    assert (entry.key, entry.key_type, entry.blob) == (key, key.key_type, key.blob)
    assert entry.comment == "my  comment"
    assert not entry.hashed
    assert entry.matches("A.EXAMPLE") and entry.matches("b.example") and not entry.matches("c.example")


def test_parse_tabs_crlf_and_no_final_newline(key: PublicKey) -> None:
    text = f"\t host\t{key.key_type} \t{key.openssh_line().split()[1]}\r\nhost2 {key.openssh_line()}"
    known = KnownHosts.parse(text)
    assert [e.hostnames for e in known.entries] == ["host", "host2"]
    assert known.warnings == ()


def test_parse_markers(key: PublicKey) -> None:
    known = parse(
        line("*", key, "@revoked"),
        line("*.example", key, "@cert-authority"),
        line("h", key, "@REVOKED"),
        line("h", key, "@unknown-marker"),
        "@revoked",
    )
    assert [e.marker for e in known.entries] == [Marker.REVOKED, Marker.CERT_AUTHORITY, Marker.REVOKED]
    assert [w[1] for w in known.warnings] == [4, 5]


def test_parse_hashed(key: PublicKey) -> None:
    hashed = hash_host_name(NAME, os.urandom(20))
    (entry,) = parse(line(hashed, key)).entries
    assert entry.hashed
    assert entry.matches(NAME) and entry.matches(NAME.upper())
    assert not entry.matches("127.0.0.1") and not entry.matches("[127.0.0.1]:2223")


def test_malformed_lines_are_skipped_with_warnings(key: PublicKey) -> None:
    blob64 = base64.b64encode(key.blob).decode()
    other_type = base64.b64encode(encode_string("ssh-rsa") + key.blob[15:]).decode()
    bad_ed25519 = base64.b64encode(encode_string("ssh-ed25519") + encode_string(b"x" * 31)).decode()
    salt = base64.b64encode(b"s" * 20).decode()
    lines = [
        "host",  # 1: no key
        "host ssh-ed25519",  # 2: no key data
        f"host ssh-ed25519 {blob64[:-3]}",  # 3: bad base64
        f"host ssh-rsa {blob64}",  # 4: type field does not match the blob
        f"host ssh-rsa {other_type}",  # 5: not a valid RSA key
        f"host ssh-ed25519 {bad_ed25519}",  # 6: supported type, bad key
        f"host 1024 35 {'1' * 300}",  # 7: SSH protocol 1
        f"|1|{salt}|short ssh-ed25519 {blob64}",  # 8: bad hash
        f"|2|{salt}|{salt} ssh-ed25519 {blob64}",  # 9: unknown hash magic
        f"|1||{salt} ssh-ed25519 {blob64}",  # 10: empty salt
        f"|1|{salt}|{salt}|x ssh-ed25519 {blob64}",  # 11: too many fields
        f"host ssh-ed25519 {base64.b64encode(b'xx').decode()}",  # 12: truncated blob
        f"host ssh-ed25519 {blob64}",  # 13: good
    ]
    known = parse(*lines)
    assert [e.line for e in known.entries] == [13]
    assert [w[1] for w in known.warnings] == list(range(1, 13))
    assert all(w[0] == "/kh" and w[2] for w in known.warnings)


def test_overlong_and_non_utf8_lines_are_skipped(key: PublicKey) -> None:
    data = (
        b"h1 " + key.openssh_line().encode() + b" " + b"c" * kh.MAX_LINE_LENGTH + b"\n"
        b"h\xff " + key.openssh_line().encode() + b"\n"
        b"h3 " + key.openssh_line().encode() + b"\n"
    )
    known = KnownHosts.parse(data, "/kh")
    assert [e.hostnames for e in known.entries] == ["h3"]
    assert [(w[1], w[2]) for w in known.warnings] == [(1, "line too long"), (2, "line is not valid UTF-8")]


def test_unsupported_key_types_are_kept_as_opaque_entries() -> None:
    dss = encode_string("ssh-dss") + encode_string(b"\x01" * 8)
    text = f"{NAME} ssh-dss {base64.b64encode(dss).decode()}\n"
    (entry,) = KnownHosts.parse(text).entries
    assert entry.key is None and entry.key_type == "ssh-dss" and entry.blob == dss


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_parse_never_raises(data: bytes) -> None:
    known = KnownHosts.parse(data)
    for entry in known.entries:
        entry.matches("host")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["h", "H", "*", "?", "!", ",", "[", "]", ":", "|1|", "@revoked ", " "]), max_size=20
    )
)
def test_parse_never_raises_on_structured_noise(parts: list[str]) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB35jhwxQXbBjqRCmoXU+UVQxSMKxuE7pNYQxWUGiX6a"
    known = KnownHosts.parse("".join(parts) + " " + key)
    for entry in known.entries:
        entry.matches("h")


# --- loading -------------------------------------------------------------------------


def test_load_files_in_order_and_missing_files(tmp_path: Path, key: PublicKey, other: PublicKey) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_text(line("a", key) + "\n")
    second.write_text("garbage\n" + line("b", other) + "\n")
    known = KnownHosts.load([first, tmp_path / "missing", str(second)])
    assert [(e.path, e.line, e.hostnames) for e in known.entries] == [
        (str(first), 1, "a"),
        (str(second), 2, "b"),
    ]
    assert known.warnings == ((str(second), 1, "expected host names, key type and key"),)
    assert KnownHosts.load([]).entries == ()


def test_load_unreadable_file_raises(tmp_path: Path) -> None:
    with pytest.raises(KnownHostsError, match="cannot read known hosts file"):
        KnownHosts.load([tmp_path])  # a directory


def test_load_caps_the_file_size(tmp_path: Path, key: PublicKey, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kh"
    text = "".join(line(f"h{i}", key) + "\n" for i in range(10))
    path.write_text(text)
    monkeypatch.setattr(kh, "MAX_FILE_SIZE", len(text) // 2)
    known = KnownHosts.load([path])
    assert 0 < len(known.entries) < 10
    assert known.warnings[-1][1:] == (0, f"file larger than {len(text) // 2} bytes: the rest is ignored")


# --- checking ------------------------------------------------------------------------


def test_check_statuses(key: PublicKey, other: PublicKey, ecdsa: PublicKey) -> None:
    known = parse(line(NAME, key), line("[127.0.0.1]:2223", other))
    status, entries = known.check(HOST, PORT, key)
    assert status is HostKeyStatus.MATCH and [e.line for e in entries] == [1]
    status, entries = known.check(HOST, PORT, other)
    assert status is HostKeyStatus.MISMATCH and [e.line for e in entries] == [1]
    # A key of another type, when only an ED25519 key is known: ssh says "changed" too.
    assert known.check(HOST, PORT, ecdsa)[0] is HostKeyStatus.MISMATCH
    assert known.check(HOST, 22, key) == (HostKeyStatus.UNKNOWN, [])
    assert known.check("127.0.0.2", PORT, key) == (HostKeyStatus.UNKNOWN, [])


def test_port_22_uses_the_bare_name(key: PublicKey) -> None:
    known = parse(line("example.com", key), line("[other.com]:22", key))
    assert known.check("EXAMPLE.com", 22, key)[0] is HostKeyStatus.MATCH
    assert known.check("example.com", 2222, key)[0] is HostKeyStatus.UNKNOWN
    assert known.check("other.com", 22, key)[0] is HostKeyStatus.UNKNOWN


def test_wildcards_and_negation(key: PublicKey) -> None:
    known = parse(line("*.example.com,!evil.example.com", key), line("[10.0.0.?]:*", key))
    assert known.check("www.example.com", 22, key)[0] is HostKeyStatus.MATCH
    assert known.check("evil.example.com", 22, key)[0] is HostKeyStatus.UNKNOWN
    assert known.check("10.0.0.7", 2200, key)[0] is HostKeyStatus.MATCH
    assert known.check("10.0.0.17", 2200, key)[0] is HostKeyStatus.UNKNOWN
    assert known.check("10.0.0.7", 22, key)[0] is HostKeyStatus.UNKNOWN


def test_hashed_entries_match(key: PublicKey, other: PublicKey) -> None:
    known = parse(line(hash_host_name(NAME, b"\x01" * 20), key))
    assert known.check(HOST, PORT, key)[0] is HostKeyStatus.MATCH
    assert known.check(HOST, PORT, other)[0] is HostKeyStatus.MISMATCH
    assert known.check(HOST, 22, key)[0] is HostKeyStatus.UNKNOWN


def test_revoked_wins_over_everything(key: PublicKey, other: PublicKey) -> None:
    known = parse(line(NAME, key), line("*", key, "@revoked"), line("*", other, "@revoked"))
    status, entries = known.check(HOST, PORT, key)
    assert status is HostKeyStatus.REVOKED and [e.line for e in entries] == [2]
    # Revoked under a pattern that does not cover the host: it does not apply.
    known = parse(line(NAME, key), line("elsewhere", key, "@revoked"))
    assert known.check(HOST, PORT, key)[0] is HostKeyStatus.MATCH
    # A revoked entry is not a known key: an unlisted key stays UNKNOWN.
    assert parse(line("*", other, "@revoked")).check(HOST, PORT, key)[0] is HostKeyStatus.UNKNOWN


def test_cert_authority_lines_never_match_plain_keys(key: PublicKey) -> None:
    known = parse(line("*", key, "@cert-authority"))
    assert known.check(HOST, PORT, key) == (HostKeyStatus.UNKNOWN, [])
    assert len(known.lookup(HOST, PORT)) == 1


def test_opaque_entry_counts_as_a_known_key(key: PublicKey) -> None:
    dss = encode_string("ssh-dss") + encode_string(b"\x01" * 8)
    known = KnownHosts.parse(f"{NAME} ssh-dss {base64.b64encode(dss).decode()}\n")
    status, entries = known.check(HOST, PORT, key)
    assert status is HostKeyStatus.MISMATCH and entries[0].key_type == "ssh-dss"


def test_known_key_types_and_entries_for_key(key: PublicKey, ecdsa: PublicKey) -> None:
    known = parse(
        line(NAME, ecdsa), line(NAME, key), line("*", key, "@revoked"), line(NAME, ecdsa), line("x", key)
    )
    assert known.known_key_types(HOST, PORT) == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    assert [e.line for e in known.entries_for_key(key)] == [2, 5]


# --- appending -----------------------------------------------------------------------


def test_append_creates_file_and_directory(tmp_path: Path, key: PublicKey) -> None:
    path = tmp_path / "dot-ssh" / "known_hosts"
    written = append_known_host(path, "127.0.0.1", 2222, key)
    assert written == f"{NAME} {key.openssh_line()}"
    assert path.read_text() == written + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    append_known_host(path, "Example.COM", 22, key)
    assert path.read_text().splitlines()[1] == f"example.com {key.openssh_line()}"
    assert KnownHosts.load([path]).check("example.com", 22, key)[0] is HostKeyStatus.MATCH


def test_append_hashed(tmp_path: Path, key: PublicKey) -> None:
    path = tmp_path / "known_hosts"
    written = append_known_host(path, HOST, PORT, key, hashed=True, rng=lambda n: b"\x07" * n)
    assert written == hash_host_name(NAME, bytes([7] * 20)) + " " + key.openssh_line()
    (entry,) = KnownHosts.load([path]).entries
    assert entry.hashed and entry.matches(NAME)
    with pytest.raises(ValueError):
        append_known_host(path, HOST, PORT, key, hashed=True, rng=lambda n: b"short")


def test_append_after_a_last_line_without_newline(tmp_path: Path, key: PublicKey, other: PublicKey) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(line("a", other))
    append_known_host(path, HOST, PORT, key)
    assert path.read_text() == f"{line('a', other)}\n{NAME} {key.openssh_line()}\n"


@pytest.mark.parametrize("host", ["", "a b", "a,b", "*.x", "h?", "|1|x", "@revoked", "#c", "!h", "a\nb"])
def test_append_refuses_names_that_are_not_host_names(tmp_path: Path, key: PublicKey, host: str) -> None:
    with pytest.raises(ValueError):
        append_known_host(tmp_path / "kh", host, 22, key)
    assert not (tmp_path / "kh").exists()


def test_append_failure_raises_known_hosts_error(tmp_path: Path, key: PublicKey) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(KnownHostsError, match="failed to add the host to the list of known hosts"):
        append_known_host(tmp_path / "file" / "known_hosts", HOST, PORT, key)


# --- the StrictHostKeyChecking policy -------------------------------------------------


def changed_message(path: Path, key: PublicKey, offending: str, strict: bool = True) -> str:
    text = (
        f"{BANNER}\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        f"{BANNER}\n"
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
        "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
        "It is also possible that a host key has just been changed.\n"
        "The fingerprint for the ED25519 key sent by the remote host is\n"
        f"{key.fingerprint()}.\n"
        "Please contact your system administrator.\n"
        f"Add correct host key in {path} to get rid of this message.\n"
        f"Offending {offending}\n"
        "  remove with:\n"
        f'  ssh-keygen -f "{path}" -R "{NAME}"\n'
    )
    if strict:
        text += (
            f"Host key for {NAME} has changed and you have requested strict checking.\n"
            "Host key verification failed.\n"
        )
    return text


def question(key: PublicKey, others: str = "This key is not known by any other names.\n") -> str:
    return (
        f"The authenticity of host '{NAME} ({NAME})' can't be established.\n"
        f"ED25519 key fingerprint is {key.fingerprint()}.\n"
        f"{others}"
        "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    )


ADDED = f"Warning: Permanently added '{NAME}' (ED25519) to the list of known hosts.\n"
FAILED = "Host key verification failed.\n"


class Prompter:
    """Answers prompts from a script and records what was asked."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, text: str) -> str | None:
        self.asked.append(text)
        return self.answers.pop(0)


def run(
    path: Path, key: PublicKey, strict: str, prompt: Callable[[str], str | None] | None = None
) -> tuple[kh.HostKeyVerdict, str]:
    err = io.StringIO()
    verdict = evaluate_host_key(
        HOST, PORT, key, strict=strict, known_hosts_files=[path], err=err, prompt=prompt
    )
    return verdict, err.getvalue()


def test_match_is_silent_in_every_mode(tmp_path: Path, key: PublicKey) -> None:
    path = tmp_path / "kh"
    path.write_text(line(NAME, key) + "\n")
    for strict in ("yes", "ask", "accept-new", "no", "off"):
        verdict, err = run(path, key, strict)
        assert verdict.accepted and verdict.status is HostKeyStatus.MATCH and not verdict.added
        assert err == ""


def test_unknown_strict_yes_refuses(tmp_path: Path, key: PublicKey) -> None:
    verdict, err = run(tmp_path / "kh", key, "yes")
    assert not verdict.accepted and verdict.status is HostKeyStatus.UNKNOWN
    assert err == (
        f"No ED25519 host key is known for {NAME} and you have requested strict checking.\n"
        "Host key verification failed.\n"
    )
    assert not (tmp_path / "kh").exists()


@pytest.mark.parametrize("strict", ["accept-new", "no", "off", "OFF"])
def test_unknown_accept_new_and_no_add_the_key(tmp_path: Path, key: PublicKey, strict: str) -> None:
    path = tmp_path / "sub" / "kh"
    err_text = io.StringIO()
    verdict = evaluate_host_key(HOST, PORT, key, strict=strict, known_hosts_files=[path], err=err_text)
    assert verdict.accepted and verdict.added and verdict.status is HostKeyStatus.UNKNOWN
    assert err_text.getvalue() == ADDED
    assert path.read_text() == f"{NAME} {key.openssh_line()}\n"


def test_unknown_hashed_add(tmp_path: Path, key: PublicKey) -> None:
    path = tmp_path / "kh"
    err = io.StringIO()
    assert evaluate_host_key(
        HOST, PORT, key, strict="accept-new", known_hosts_files=[path], err=err, hash_known_hosts=True
    ).accepted
    assert path.read_text().startswith("|1|")
    assert KnownHosts.load([path]).check(HOST, PORT, key)[0] is HostKeyStatus.MATCH


@pytest.mark.parametrize("answer", ["yes", " YES ", "Yes"])
def test_ask_yes(tmp_path: Path, key: PublicKey, answer: str) -> None:
    prompt = Prompter(answer)
    verdict, err = run(tmp_path / "kh", key, "ask", prompt)
    assert verdict.accepted and verdict.added
    assert prompt.asked == [question(key)]
    assert err == ADDED
    assert (tmp_path / "kh").read_text() == f"{NAME} {key.openssh_line()}\n"


def test_ask_fingerprint_and_reprompt(tmp_path: Path, key: PublicKey) -> None:
    prompt = Prompter("maybe", "SHA256:wrong", key.fingerprint())
    verdict, err = run(tmp_path / "kh", key, "ask", prompt)
    assert verdict.accepted
    again = "Please type 'yes', 'no' or the fingerprint: "
    assert prompt.asked[:3] == [question(key), again, again]
    assert err == ADDED


@pytest.mark.parametrize("answers", [("no",), ("NO",), ("",), (None,), ("maybe", "no"), ("maybe", None)])
def test_ask_refused(tmp_path: Path, key: PublicKey, answers: tuple[str | None, ...]) -> None:
    verdict, err = run(tmp_path / "kh", key, "ask", Prompter(*answers))
    assert not verdict.accepted and not verdict.added
    assert err == FAILED
    assert not (tmp_path / "kh").exists()


def test_ask_without_a_terminal_refuses(tmp_path: Path, key: PublicKey) -> None:
    verdict, err = run(tmp_path / "kh", key, "ask", None)
    assert not verdict.accepted and err == FAILED


def test_ask_re_prompting_is_bounded(tmp_path: Path, key: PublicKey) -> None:
    verdict, err = run(tmp_path / "kh", key, "ask", lambda text: "maybe")
    assert not verdict.accepted and err == FAILED


def test_ask_shows_the_address_and_other_names(tmp_path: Path, key: PublicKey) -> None:
    path = tmp_path / "kh"
    path.write_text(
        "".join(line(f"h{i},10.0.0.{i}", key) + "\n" for i in range(1, 11))
        + line(hash_host_name("x", b"s" * 20), key)
        + "\n"
        + line("rev", key, "@revoked")
        + "\n"
    )
    prompt = Prompter("no")
    err = io.StringIO()
    verdict = evaluate_host_key(
        "server", 22, key, strict="ask", known_hosts_files=[path], err=err, prompt=prompt, address="10.1.1.1"
    )
    assert not verdict.accepted
    others = "".join(f"    {path}:{i}: h{i},10.0.0.{i}\n" for i in range(1, 9))
    assert prompt.asked == [
        "The authenticity of host 'server (10.1.1.1)' can't be established.\n"
        f"ED25519 key fingerprint is {key.fingerprint()}.\n"
        "This host key is known by the following other names/addresses:\n"
        f"{others}"
        "    (3 additional names omitted)\n"
        "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    ]
    path.write_text(line(hash_host_name("x", b"s" * 20), key) + "\n")
    prompt = Prompter("no")
    evaluate_host_key(HOST, PORT, key, strict="ask", known_hosts_files=[path], err=err, prompt=prompt)
    assert prompt.asked == [question(key, f"This host key is known by the following other names/addresses:\n"
                                          f"    {path}:1: [hashed name]\n")]  # fmt: skip


@pytest.mark.parametrize("strict", ["yes", "ask", "accept-new"])
def test_mismatch_refused(
    tmp_path: Path, key: PublicKey, other: PublicKey, ecdsa: PublicKey, strict: str
) -> None:
    path = tmp_path / "kh"
    path.write_text(f"# comment\n{line(NAME, other)}\n{line(NAME, ecdsa)}\n")
    prompt = Prompter()
    verdict, err = run(path, key, strict, prompt)
    assert not verdict.accepted and verdict.status is HostKeyStatus.MISMATCH and not verdict.restricted
    assert [e.line for e in verdict.entries] == [2, 3]
    # ssh names the last offending entry, whatever its type.
    assert err == changed_message(path, key, f"ECDSA key in {path}:3")
    assert prompt.asked == []
    assert path.read_text().count("\n") == 3


def test_mismatch_no_continues_restricted(tmp_path: Path, key: PublicKey, other: PublicKey) -> None:
    path = tmp_path / "kh"
    path.write_text(line(NAME, other) + "\n")
    verdict, err = run(path, key, "no")
    assert verdict.accepted and verdict.restricted and not verdict.added
    assert err == changed_message(path, key, f"ED25519 key in {path}:1", strict=False)
    assert path.read_text().count("\n") == 1


def test_mismatch_in_a_global_file_names_the_user_file(
    tmp_path: Path, key: PublicKey, other: PublicKey
) -> None:
    user, system = tmp_path / "user", tmp_path / "system"
    system.write_text(line(NAME, other) + "\n")
    err = io.StringIO()
    verdict = evaluate_host_key(
        HOST, PORT, key, strict="yes", known_hosts_files=[user], global_known_hosts_files=[system], err=err
    )
    assert not verdict.accepted
    assert f"Add correct host key in {user} to get rid of this message.\n" in err.getvalue()
    assert f"Offending ED25519 key in {system}:1\n" in err.getvalue()
    assert not user.exists()


def test_global_match_is_accepted_and_nothing_is_written(tmp_path: Path, key: PublicKey) -> None:
    user, system = tmp_path / "user", tmp_path / "system"
    system.write_text(line(NAME, key) + "\n")
    err = io.StringIO()
    assert evaluate_host_key(
        HOST, PORT, key, strict="yes", known_hosts_files=[user], global_known_hosts_files=[system], err=err
    ).accepted
    assert not user.exists() and err.getvalue() == ""


@pytest.mark.parametrize("strict", ["yes", "ask", "accept-new", "no"])
def test_revoked_always_refused(tmp_path: Path, key: PublicKey, strict: str) -> None:
    path = tmp_path / "kh"
    path.write_text(f"{line(NAME, key)}\n{line('*', key, '@revoked')}\n")
    verdict, err = run(path, key, strict, Prompter("yes"))
    assert not verdict.accepted and verdict.status is HostKeyStatus.REVOKED
    expected = (
        f"{BANNER}\n"
        "@       WARNING: REVOKED HOST KEY DETECTED!               @\n"
        f"{BANNER}\n"
        f"The ED25519 host key for {NAME} is marked as revoked.\n"
        "This could mean that a stolen key is being used to\n"
        "impersonate this host.\n"
    )
    if strict != "no":
        expected += f"ED25519 host key for {NAME} was revoked and you have requested strict checking.\n"
    assert err == expected + FAILED


def test_unreadable_file_fails_closed(tmp_path: Path, key: PublicKey) -> None:
    for strict in ("no", "accept-new"):
        verdict, err = run(tmp_path, key, strict)  # a directory cannot be read
        assert not verdict.accepted and verdict.error is not None
        assert (
            err == f"Host key verification failed: cannot read known hosts file {tmp_path}: Is a directory.\n"
        )


def test_write_failure_fails_closed(tmp_path: Path, key: PublicKey) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "kh"
    for strict, prompt in (("accept-new", None), ("no", None), ("ask", Prompter("yes"))):
        verdict, err = run(path, key, strict, prompt)
        assert not verdict.accepted and not verdict.added
        assert err.startswith(
            "Host key verification failed: failed to add the host to the list of known hosts ("
        )
        assert err.count("\n") == 1


def test_no_user_file_fails_closed(key: PublicKey) -> None:
    err = io.StringIO()
    assert not evaluate_host_key(HOST, PORT, key, strict="accept-new", known_hosts_files=[], err=err).accepted
    assert err.getvalue() == "Host key verification failed: no known hosts file to add the host to.\n"


def test_prompt_that_raises_fails_closed(tmp_path: Path, key: PublicKey) -> None:
    def prompt(text: str) -> str | None:
        raise EOFError

    verdict, err = run(tmp_path / "kh", key, "ask", prompt)
    assert not verdict.accepted and err == "Host key verification failed: EOFError.\n"


def test_invalid_mode_is_a_programming_error(tmp_path: Path, key: PublicKey) -> None:
    with pytest.raises(ValueError):
        evaluate_host_key(
            HOST, PORT, key, strict="maybe", known_hosts_files=[tmp_path / "kh"], err=io.StringIO()
        )


def test_tilde_is_expanded_as_ssh_does(
    tmp_path: Path, key: PublicKey, other: PublicKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    append_known_host("~/.ssh/known_hosts", HOST, PORT, other)
    path = tmp_path / ".ssh" / "known_hosts"
    assert path.is_file()
    assert KnownHosts.load(["~/.ssh/known_hosts"]).entries[0].path == str(path)
    err = io.StringIO()
    verdict = evaluate_host_key(
        HOST, PORT, key, strict="yes", known_hosts_files=["~/.ssh/known_hosts"], err=err
    )
    assert not verdict.accepted
    assert err.getvalue() == changed_message(path, key, f"ED25519 key in {path}:1")
