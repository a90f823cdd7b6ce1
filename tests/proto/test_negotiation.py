"""RFC 4253 §7.1 algorithm negotiation, unit and end to end, and the
first_kex_packet_follows guess."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hashike.proto.config import SUPPORTED_KEX, TransportConfig
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import KeyExchangeFailed, LocalProtocolError
from hashike.proto.events import Disconnected, KexCompleted, ServiceAccepted
from hashike.proto.kex.negotiate import EXT_INFO_C, EXT_INFO_S, STRICT_C, STRICT_S, KexInit, negotiate
from hashike.proto.wire import encode_byte, encode_uint32
from tests.proto.pair import ConnectionPair, all_host_keys, events_of, host_key
from tests.proto.rawpeer import new_server, pump, raw_for

BASE = KexInit(
    cookie=bytes(16),
    kex=("curve25519-sha256", "mlkem768x25519-sha256"),
    host_key=("ssh-ed25519", "rsa-sha2-256"),
    cipher_c2s=("aes128-gcm@openssh.com", "aes128-ctr"),
    cipher_s2c=("aes128-gcm@openssh.com", "aes128-ctr"),
    mac_c2s=("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"),
    mac_s2c=("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"),
)

LIST_FIELDS = ["kex", "host_key", "cipher_c2s", "cipher_s2c", "mac_c2s", "mac_s2c"]


def _with(init: KexInit, **fields: Any) -> KexInit:
    return replace(init, **fields)


def _reverse(init: KexInit) -> KexInit:
    return _with(init, **{f: tuple(reversed(getattr(init, f))) for f in LIST_FIELDS})


@pytest.mark.parametrize("we_are_client", [True, False])
def test_client_preference_wins(we_are_client: bool) -> None:
    client = replace(BASE, cipher_c2s=("aes128-ctr", "aes128-gcm@openssh.com"))
    client = replace(client, cipher_s2c=client.cipher_c2s)
    server = _reverse(client)
    n = negotiate(client, server, we_are_client=we_are_client, first_kex=True)
    assert n.kex == "curve25519-sha256"
    assert n.host_key == "ssh-ed25519"
    assert (n.cipher_c2s, n.cipher_s2c) == ("aes128-ctr", "aes128-ctr")
    assert (n.mac_c2s, n.mac_s2c) == ("hmac-sha2-256-etm@openssh.com",) * 2
    # Swap roles: now the other list's order wins.
    m = negotiate(server, client, we_are_client=we_are_client, first_kex=True)
    assert (m.kex, m.host_key, m.cipher_c2s, m.mac_c2s) == (
        "mlkem768x25519-sha256",
        "rsa-sha2-256",
        "aes128-gcm@openssh.com",
        None,
    )


def test_first_client_name_the_server_knows_is_chosen_skipping_unknown_ones() -> None:
    client = replace(BASE, kex=("sntrup761x25519-sha512", "ecdh-sha2-nistp256", "curve25519-sha256"))
    server = replace(BASE, kex=("curve25519-sha256", "ecdh-sha2-nistp256"))
    assert negotiate(client, server, we_are_client=True, first_kex=True).kex == "ecdh-sha2-nistp256"


def test_directions_negotiate_independently() -> None:
    client = replace(BASE, cipher_c2s=("aes128-gcm@openssh.com",), cipher_s2c=("aes128-ctr",))
    n = negotiate(client, BASE, we_are_client=True, first_kex=True)
    assert (n.cipher_c2s, n.mac_c2s) == ("aes128-gcm@openssh.com", None)
    assert (n.cipher_s2c, n.mac_s2c) == ("aes128-ctr", "hmac-sha2-256-etm@openssh.com")


def test_markers_are_never_chosen() -> None:
    client = replace(BASE, kex=(EXT_INFO_C, STRICT_C, EXT_INFO_S, "curve25519-sha256"))
    server = replace(BASE, kex=(EXT_INFO_C, STRICT_C, EXT_INFO_S, STRICT_S, "curve25519-sha256"))
    assert negotiate(client, server, we_are_client=True, first_kex=True).kex == "curve25519-sha256"
    only_markers = replace(server, kex=(EXT_INFO_C, STRICT_C, EXT_INFO_S, STRICT_S))
    with pytest.raises(KeyExchangeFailed):
        negotiate(client, only_markers, we_are_client=True, first_kex=True)


@pytest.mark.parametrize(
    ("field", "server_value"),
    [
        ("kex", ("diffie-hellman-group14-sha256",)),
        ("host_key", ("ecdsa-sha2-nistp521",)),
        ("cipher_c2s", ("aes256-ctr",)),
        ("cipher_s2c", ("aes256-ctr",)),
        ("compression_c2s", ("zlib@openssh.com",)),
        ("compression_s2c", ("zlib@openssh.com",)),
        ("kex", ()),
    ],
)
def test_no_common_algorithm(field: str, server_value: tuple[str, ...]) -> None:
    server = _with(BASE, **{field: server_value})
    with pytest.raises(KeyExchangeFailed) as info:
        negotiate(BASE, server, we_are_client=True, first_kex=True)
    assert info.value.reason == DisconnectReason.KEY_EXCHANGE_FAILED


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_aead_ignores_mac_lists_but_ctr_needs_one(direction: str) -> None:
    no_mac = _with(BASE, **{f"mac_{direction}": ("hmac-md5",)})
    # AES-GCM: the MAC lists do not matter, even when they have nothing in common.
    n = negotiate(BASE, no_mac, we_are_client=True, first_kex=True)
    assert (n.mac_c2s, n.mac_s2c) == (None, None)
    empty = replace(BASE, mac_c2s=(), mac_s2c=())
    assert negotiate(empty, empty, we_are_client=True, first_kex=True).mac_s2c is None
    # AES-CTR: a MAC must be agreed.
    ctr_client = _with(BASE, **{f"cipher_{direction}": ("aes128-ctr",)})
    with pytest.raises(KeyExchangeFailed):
        negotiate(ctr_client, no_mac, we_are_client=True, first_kex=True)


def test_strict_and_ext_info_flags() -> None:
    client = replace(BASE, kex=(*BASE.kex, EXT_INFO_C, STRICT_C))
    server = replace(BASE, kex=(*BASE.kex, EXT_INFO_S, STRICT_S))
    n = negotiate(client, server, we_are_client=True, first_kex=True)
    assert n.strict and n.peer_wants_ext_info
    assert negotiate(client, server, we_are_client=False, first_kex=True).peer_wants_ext_info
    # Strict kex is only agreed in the first exchange, and only with both markers.
    assert not negotiate(client, server, we_are_client=True, first_kex=False).strict
    assert not negotiate(client, BASE, we_are_client=True, first_kex=True).strict
    assert not negotiate(BASE, server, we_are_client=True, first_kex=True).strict
    # The marker of the wrong role does not count (a client's ext-info-c is not ext-info-s).
    wrong = replace(BASE, kex=(*BASE.kex, EXT_INFO_C, STRICT_C))
    n = negotiate(client, wrong, we_are_client=True, first_kex=True)
    assert not n.strict and not n.peer_wants_ext_info


def test_guess_is_right_only_when_first_kex_and_host_key_agree() -> None:
    assert negotiate(BASE, BASE, we_are_client=True, first_kex=True).guess_was_right
    other_kex = replace(BASE, kex=tuple(reversed(BASE.kex)))
    assert not negotiate(BASE, other_kex, we_are_client=True, first_kex=True).guess_was_right
    other_host_key = replace(BASE, host_key=tuple(reversed(BASE.host_key)))
    assert not negotiate(BASE, other_host_key, we_are_client=True, first_kex=True).guess_was_right


# ------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    ("client", "server"),
    [
        pytest.param(
            TransportConfig(kex_algorithms=("curve25519-sha256",)),
            TransportConfig(kex_algorithms=("mlkem768x25519-sha256",)),
            id="kex",
        ),
        pytest.param(
            TransportConfig(ciphers=("aes256-gcm@openssh.com",)),
            TransportConfig(ciphers=("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")),
            id="cipher",
        ),
        pytest.param(
            TransportConfig(ciphers=("aes128-ctr",), macs=("hmac-sha2-256-etm@openssh.com",)),
            TransportConfig(macs=("hmac-sha2-512-etm@openssh.com",)),
            id="mac",
        ),
        pytest.param(
            TransportConfig(host_key_algorithms=("ecdsa-sha2-nistp384",)),
            TransportConfig(host_key_algorithms=("ssh-ed25519", "ecdsa-sha2-nistp256")),
            id="host-key",
        ),
    ],
)
def test_no_common_algorithm_disconnects_both_sides(client: TransportConfig, server: TransportConfig) -> None:
    pair = ConnectionPair(client, server, host_keys=all_host_keys())
    pair.pump()
    for events in (pair.client_events, pair.server_events):
        (disconnected,) = events_of(events, Disconnected)
        assert disconnected.reason == DisconnectReason.KEY_EXCHANGE_FAILED
        assert "no matching" in disconnected.description
        assert not events_of(events, KexCompleted)
    assert pair.client.closed and pair.server.closed
    assert pair.client.transport.session_id is None


def test_server_offers_only_host_key_algorithms_it_has_keys_for() -> None:
    # The server holds only an ed25519 key; a client that wants RSA gets nothing.
    pair = ConnectionPair(TransportConfig(host_key_algorithms=("rsa-sha2-512", "rsa-sha2-256")))
    pair.pump()
    (disconnected,) = events_of(pair.client_events, Disconnected)
    assert disconnected.reason == DisconnectReason.KEY_EXCHANGE_FAILED
    with pytest.raises(LocalProtocolError):
        new_server(TransportConfig(host_key_algorithms=("ssh-ed25519",)), host_keys=(host_key("ssh-rsa"),))


def test_aead_end_to_end_ignores_disjoint_mac_lists() -> None:
    pair = ConnectionPair(
        TransportConfig(ciphers=("chacha20-poly1305@openssh.com",), macs=("hmac-sha2-256-etm@openssh.com",)),
        TransportConfig(macs=("hmac-sha2-512-etm@openssh.com",)),
    )
    pair.pump()
    assert events_of(pair.client_events, ServiceAccepted)
    (completed,) = events_of(pair.client_events, KexCompleted)
    assert completed.negotiated.mac_c2s is None and completed.negotiated.mac_s2c is None


# -------------------------------------------------- first_kex_packet_follows


@pytest.mark.parametrize(
    ("server_kex", "kex", "host_keys", "chosen"),
    [
        # The guessed method is not the server's choice; its packet is even a different size.
        (
            ("curve25519-sha256",),
            ("mlkem768x25519-sha256", "curve25519-sha256"),
            ("ssh-ed25519",),
            "curve25519-sha256",
        ),
        # Same packet format, so using it would go unnoticed until H differs.
        (SUPPORTED_KEX, ("curve25519-sha256@libssh.org",), ("ssh-ed25519",), "curve25519-sha256@libssh.org"),
        # The kex methods' first choices agree but the host key algorithms' do not: still wrong (§7).
        (
            SUPPORTED_KEX,
            ("mlkem768x25519-sha256",),
            ("ecdsa-sha2-nistp256", "ssh-ed25519"),
            "mlkem768x25519-sha256",
        ),
    ],
    ids=["other-method", "same-format-other-name", "host-key-differs"],
)
def test_wrong_guess_is_ignored(
    server_kex: tuple[str, ...], kex: tuple[str, ...], host_keys: tuple[str, ...], chosen: str
) -> None:
    server = new_server(TransportConfig(kex_algorithms=server_kex), host_keys=all_host_keys())
    raw = raw_for(server, kex=kex, host_key_algorithms=host_keys)
    raw.auto_kexinit = False
    raw.send_kexinit(first_kex_follows=True, guess=kex[0])
    events = pump(raw, server)
    assert not events_of(events, Disconnected)
    (completed,) = events_of(events, KexCompleted)
    assert completed.negotiated.kex == chosen
    assert completed.negotiated.host_key == host_keys[0]
    assert not completed.negotiated.guess_was_right
    # The raw client sent the guess and then the real KEX_ECDH_INIT; the server
    # answered only the second (the raw client checked the signature over H,
    # which covers the real client value).
    assert raw.sent_types[:3] == [MsgType.KEXINIT, MsgType.KEX_ECDH_INIT, MsgType.KEX_ECDH_INIT]
    assert server.transport.session_id == raw.session_id


def test_wrong_guess_for_a_method_with_other_message_numbers_is_ignored() -> None:
    # RFC 4253 §7: "the next packet MUST be silently ignored" — whatever method
    # it belongs to. A client guessing diffie-hellman-group-exchange sends
    # SSH_MSG_KEX_DH_GEX_REQUEST (34, RFC 4419 §5) as its guess.
    server = new_server()
    raw = raw_for(server, kex=("diffie-hellman-group-exchange-sha256", "curve25519-sha256"))
    raw.auto_kexinit = False
    raw.send_kexinit(first_kex_follows=True)
    raw.send(encode_byte(34) + encode_uint32(2048) + encode_uint32(4096) + encode_uint32(8192))
    events = pump(raw, server)
    assert not events_of(events, Disconnected)
    (completed,) = events_of(events, KexCompleted)
    assert completed.negotiated.kex == "curve25519-sha256"


@pytest.mark.parametrize("kex", ["curve25519-sha256", "mlkem768x25519-sha256", "ecdh-sha2-nistp256"])
def test_right_guess_is_used(kex: str) -> None:
    server = new_server(TransportConfig(kex_algorithms=(kex,)))
    raw = raw_for(server, kex=(kex,))
    raw.auto_kexinit = False
    raw.send_kexinit(first_kex_follows=True, guess=kex)
    events = pump(raw, server)
    assert not events_of(events, Disconnected)
    (completed,) = events_of(events, KexCompleted)
    assert completed.negotiated.guess_was_right and completed.negotiated.kex == kex
    # Only the guessed KEX_ECDH_INIT was sent, and the server answered it.
    assert raw.sent_types.count(MsgType.KEX_ECDH_INIT) == 1
    assert server.transport.session_id == raw.session_id
