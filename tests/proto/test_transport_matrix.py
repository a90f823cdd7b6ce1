"""Every kex x cipher(/MAC) x host key algorithm combination, forced from either side.

Each handshake must reach the userauth service, agree on exactly what was
forced, derive one session id on both sides, and then carry traffic both ways:
a ping@openssh.com round trip and IGNORE packets from empty to beyond the
RFC 4253 §6.1 35000-byte floor.
"""

from __future__ import annotations

import itertools

import pytest

from hashike.proto.ciphers import CIPHERS
from hashike.proto.config import (
    SUPPORTED_CIPHERS,
    SUPPORTED_HOST_KEY_ALGORITHMS,
    SUPPORTED_KEX,
    SUPPORTED_MACS,
    TransportConfig,
)
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.events import (
    Disconnected,
    HostKeyReceived,
    KexCompleted,
    PongReceived,
    ServiceAccepted,
)
from tests.proto.pair import ConnectionPair, all_host_keys, events_of

CIPHER_MACS: list[tuple[str, str | None]] = [
    (cipher, mac)
    for cipher in SUPPORTED_CIPHERS
    for mac in ((None,) if CIPHERS[cipher].aead else SUPPORTED_MACS)
]

# The key type each host key algorithm is served by (RFC 8332: one RSA key, two algorithms).
KEY_TYPE = {
    "ssh-ed25519": "ssh-ed25519",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
    "rsa-sha2-512": "ssh-rsa",
    "rsa-sha2-256": "ssh-rsa",
}

# IGNORE data sizes: empty, one byte, 32 KiB, and packets around and above 35000 bytes.
IGNORE_SIZES = (0, 1, 32768, 34_950, 35_000)

COMBOS = [
    pytest.param(kex, cipher, mac, hk, side, id=f"{side}-{kex}-{cipher}-{mac or 'aead'}-{hk}")
    for (kex, (cipher, mac), hk), side in itertools.product(
        itertools.product(SUPPORTED_KEX, CIPHER_MACS, SUPPORTED_HOST_KEY_ALGORITHMS), ("client", "server")
    )
]


def test_matrix_covers_every_supported_algorithm() -> None:
    assert {c[0] for c in CIPHER_MACS} == set(SUPPORTED_CIPHERS)
    assert {c[1] for c in CIPHER_MACS if c[1]} == set(SUPPORTED_MACS)
    assert set(KEY_TYPE) == set(SUPPORTED_HOST_KEY_ALGORITHMS)
    assert len(COMBOS) == len(SUPPORTED_KEX) * len(CIPHER_MACS) * len(SUPPORTED_HOST_KEY_ALGORITHMS) * 2


def _forced_pair(kex: str, cipher: str, mac: str | None, host_alg: str, side: str) -> ConnectionPair:
    forced = TransportConfig(
        kex_algorithms=(kex,),
        ciphers=(cipher,),
        macs=(mac,) if mac else SUPPORTED_MACS,
        host_key_algorithms=(host_alg,),
    )
    # The other side offers everything, in its default order.
    everything = TransportConfig(
        kex_algorithms=SUPPORTED_KEX,
        ciphers=SUPPORTED_CIPHERS,
        macs=SUPPORTED_MACS,
        host_key_algorithms=SUPPORTED_HOST_KEY_ALGORITHMS,
    )
    client, server = (forced, everything) if side == "client" else (everything, forced)
    return ConnectionPair(client_config=client, server_config=server, host_keys=all_host_keys())


def _exchange_ignores(sender: ClientConnection | ServerConnection, pair: ConnectionPair) -> None:
    receiver = pair.server if sender is pair.client else pair.client
    before = receiver.transport._reader.packets
    for size in IGNORE_SIZES:
        sender.transport.send_ignore(bytes([size & 0xFF]) * size)
    assert sender.transport._writer.pending > 35_000 + sum(IGNORE_SIZES[:-1])
    pair.pump()
    # Every IGNORE was opened and checked by the receiver (no rekey ran in between).
    assert receiver.transport._reader.packets - before == len(IGNORE_SIZES)


@pytest.mark.parametrize(("kex", "cipher", "mac", "host_alg", "side"), COMBOS)
def test_handshake_and_traffic(kex: str, cipher: str, mac: str | None, host_alg: str, side: str) -> None:
    pair = _forced_pair(kex, cipher, mac, host_alg, side)
    pair.pump()

    assert not events_of(pair.client_events + pair.server_events, Disconnected)
    assert events_of(pair.client_events, ServiceAccepted) == [ServiceAccepted(service="ssh-userauth")]

    expected = (kex, host_alg, cipher, cipher, mac, mac)
    for events in (pair.client_events, pair.server_events):
        (completed,) = events_of(events, KexCompleted)
        n = completed.negotiated
        assert completed.initial
        assert (n.kex, n.host_key, n.cipher_c2s, n.cipher_s2c, n.mac_c2s, n.mac_s2c) == expected
        assert n.strict

    (offered,) = events_of(pair.client_events, HostKeyReceived)
    assert offered.algorithm == host_alg
    assert offered.key.key_type == KEY_TYPE[host_alg]
    assert pair.client.transport.server_host_key == offered.key

    sid = pair.client.transport.session_id
    assert sid is not None and len(sid) == 32  # every method we speak hashes with SHA-256
    assert pair.server.transport.session_id == sid

    pair.client.transport.send_ping(b"x")
    pair.pump()
    assert events_of(pair.client_events, PongReceived) == [PongReceived(data=b"x")]

    _exchange_ignores(pair.client, pair)
    _exchange_ignores(pair.server, pair)

    # The connection still works after the large packets, in order.
    pair.client.transport.send_ping(b"after")
    pair.pump()
    assert events_of(pair.client_events, PongReceived) == [
        PongReceived(data=b"x"),
        PongReceived(data=b"after"),
    ]
    assert not events_of(pair.client_events + pair.server_events, Disconnected)
    assert not pair.client.closed and not pair.server.closed
