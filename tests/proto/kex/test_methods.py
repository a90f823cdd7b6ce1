"""Every key exchange method refuses a malformed public value from the peer,
on the server's side (the client's init) and on the client's (the reply),
with KeyExchangeFailed rather than a crypto library error."""

from __future__ import annotations

import os

import pytest

from hashike.proto.errors import KeyExchangeFailed
from hashike.proto.kex import KEX_METHODS

MLKEM = "mlkem768x25519-sha256"
_EK, _CT = 1184, 1088  # ML-KEM-768 encapsulation key and ciphertext sizes (FIPS 203)

# (method, value the server's reply() gets, what the message names)
BAD_INITS = [
    ("curve25519-sha256", bytes(31), "bad X25519 public value of 31 bytes"),
    ("curve25519-sha256@libssh.org", bytes(33), "bad X25519 public value of 33 bytes"),
    # RFC 5656 §4: an uncompressed point is 0x04 || x || y, 65 bytes on P-256.
    ("ecdh-sha2-nistp256", bytes(65), "bad ECDH public value"),
    ("ecdh-sha2-nistp256", b"\x04" + bytes(63), "bad ECDH public value"),
    # 65 bytes of the right form, but (1, 1) is not on the curve.
    ("ecdh-sha2-nistp256", b"\x04" + (1).to_bytes(32, "big") * 2, "bad ECDH public value"),
    (MLKEM, bytes(_EK + 31), f"bad ML-KEM init of {_EK + 31} bytes"),
    # FIPS 203 §7.2: every 12-bit coefficient must be below q = 3329; 0xfff is not.
    (MLKEM, b"\xff" * _EK + bytes(32), "bad ML-KEM encapsulation key"),
]


@pytest.mark.parametrize(("method", "value", "message"), BAD_INITS)
def test_the_server_refuses_a_malformed_init(method: str, value: bytes, message: str) -> None:
    with pytest.raises(KeyExchangeFailed, match=message):
        KEX_METHODS[method].reply(value, os.urandom)


@pytest.mark.parametrize(
    ("method", "size", "message"),
    [
        ("curve25519-sha256", 64, "bad X25519 public value of 64 bytes"),
        ("ecdh-sha2-nistp256", 33, "bad ECDH public value"),
        (MLKEM, _CT, f"bad ML-KEM reply of {_CT} bytes"),
    ],
)
def test_the_client_refuses_a_malformed_reply(method: str, size: int, message: str) -> None:
    client = KEX_METHODS[method].start(os.urandom)
    with pytest.raises(KeyExchangeFailed, match=message):
        client.finish(bytes(size))


@pytest.mark.parametrize("method", sorted(KEX_METHODS))
def test_a_well_formed_exchange_agrees(method: str) -> None:
    # The control for the refusals above: the same calls with real values succeed.
    kex = KEX_METHODS[method]
    client = kex.start(os.urandom)
    server_public, secret = kex.reply(client.public, os.urandom)
    assert client.finish(server_public) == secret
