"""A server core whose host keys are replaced by stand-ins (HostKeySigner),
as hashiked's PrivilegeSeparation does once a connection has authenticated:
later exchanges are signed by the stand-in, the client sees the same host
key, and a stand-in that cannot sign ends the connection with a DISCONNECT."""

from __future__ import annotations

import pytest

from hashike.proto.constants import DisconnectReason
from hashike.proto.errors import ProtocolError
from hashike.proto.events import Disconnected, KexCompleted
from hashike.proto.hostkey import PrivateKey, PublicKey
from tests.proto.pair import ConnectionPair, events_of, host_key


class _StandIn:
    """Signs through the key it stands for, counting; or refuses."""

    def __init__(self, key: PrivateKey, refuse: bool = False) -> None:
        self._key = key
        self._refuse = refuse
        self.signed: list[tuple[bytes, str]] = []

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key

    def signature_algorithms(self) -> tuple[str, ...]:
        return self._key.signature_algorithms()

    def sign(self, data: bytes, algorithm: str) -> bytes:
        self.signed.append((data, algorithm))
        if self._refuse:
            raise ProtocolError("host key signer unavailable", DisconnectReason.KEY_EXCHANGE_FAILED)
        return self._key.sign(data, algorithm)


def _open_pair(keys: tuple[PrivateKey, ...]) -> ConnectionPair:
    pair = ConnectionPair(host_keys=keys)
    pair.pump()
    assert len(events_of(pair.server_events, KexCompleted)) == 1
    return pair


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_rekeys_are_signed_by_the_stand_in(initiator: str) -> None:
    key = host_key()
    pair = _open_pair((key,))
    stand_in = _StandIn(key)
    pair.server.replace_host_keys([stand_in])
    for _ in range(2):
        (pair.client if initiator == "client" else pair.server).start_rekey()
        pair.pump()
    assert len(events_of(pair.client_events, KexCompleted)) == 3
    assert [algorithm for _, algorithm in stand_in.signed] == ["ssh-ed25519"] * 2
    assert all(len(h) == 32 for h, _ in stand_in.signed)  # sha256 exchange hashes
    assert pair.client.transport.server_host_key == key.public_key
    assert not events_of(pair.client_events + pair.server_events, Disconnected)


def test_each_key_gets_its_own_stand_in() -> None:
    ed25519, rsa = host_key(), host_key("ssh-rsa")
    pair = _open_pair((rsa, ed25519))  # the client prefers ed25519 whatever the order
    stand_ins = [_StandIn(rsa), _StandIn(ed25519)]
    pair.server.replace_host_keys(stand_ins)
    pair.client.start_rekey()
    pair.pump()
    assert (len(stand_ins[0].signed), len(stand_ins[1].signed)) == (0, 1)


def test_a_stand_in_that_cannot_sign_disconnects() -> None:
    key = host_key()
    pair = _open_pair((key,))
    pair.server.replace_host_keys([_StandIn(key, refuse=True)])
    pair.client.start_rekey()
    pair.pump()
    (server_end,) = events_of(pair.server_events, Disconnected)
    assert (server_end.reason, server_end.by_peer) == (DisconnectReason.KEY_EXCHANGE_FAILED, False)
    assert server_end.description == "host key signer unavailable"
    (client_end,) = events_of(pair.client_events, Disconnected)
    assert client_end.by_peer and client_end.reason == DisconnectReason.KEY_EXCHANGE_FAILED


def test_a_stand_in_is_needed_for_every_key() -> None:
    ed25519, rsa = host_key(), host_key("ssh-rsa")
    pair = _open_pair((ed25519, rsa))
    with pytest.raises(KeyError):
        pair.server.replace_host_keys([_StandIn(ed25519)])
