"""PrivilegeSeparation's signer (hashike.aio.privsep) without a fork: a
RemoteSigner on one end of a socketpair, the parent's answers on the other,
on this test's loop (the stand-in blocks, so it signs from a thread)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from hashike.aio.privsep import MAX_HASH, RemoteSigner, serve_signatures
from hashike.proto.constants import DisconnectReason
from hashike.proto.errors import ProtocolError
from hashike.proto.wire import encode_string
from tests.helpers import eventually
from tests.proto.pair import host_key

H = bytes(range(32))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child.settimeout(5)
    with parent, child:
        yield parent, child


@pytest.mark.parametrize(
    ("key_type", "algorithm"),
    [
        ("ssh-ed25519", "ssh-ed25519"),
        ("ssh-rsa", "rsa-sha2-512"),
        ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"),
    ],
)
async def test_signatures_come_from_the_key_the_parent_holds(
    pair: tuple[socket.socket, socket.socket], key_type: str, algorithm: str
) -> None:
    parent, child = pair
    keys = (host_key(), host_key(key_type))
    serve_signatures(parent, keys)
    signer = RemoteSigner(child, keys[1])
    assert signer.public_key == keys[1].public_key
    assert signer.signature_algorithms() == keys[1].signature_algorithms()
    for data in (H, b"\xff" * MAX_HASH):
        signature = await asyncio.to_thread(signer.sign, data, algorithm)
        assert keys[1].public_key.verify(signature, data, (algorithm,))


async def test_a_request_the_parent_cannot_answer_fails_the_rekey(
    pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    parent, child = pair
    held, other = host_key(), host_key("ecdsa-sha2-nistp256")
    serve_signatures(parent, (held,))
    with pytest.raises(ProtocolError) as caught:
        await asyncio.to_thread(RemoteSigner(child, other).sign, H, "ecdsa-sha2-nistp256")
    assert caught.value.reason == DisconnectReason.KEY_EXCHANGE_FAILED
    assert str(caught.value) == "host key signer unavailable"
    assert "host key signer: no host key for the request" in caplog.text
    # More than an exchange hash is not signed at all.
    with pytest.raises(ProtocolError):
        await asyncio.to_thread(RemoteSigner(child, held).sign, bytes(MAX_HASH + 1), "ssh-ed25519")
    assert "host key signer: bad request" in caplog.text


async def test_garbage_gets_a_refusal(pair: tuple[socket.socket, socket.socket]) -> None:
    parent, child = pair
    serve_signatures(parent, (host_key(),))
    for junk in (b"\x00", encode_string(b"x") + b"trailing", b"\xff" * 100):
        await asyncio.to_thread(child.send, junk)
        assert await asyncio.to_thread(child.recv, 100) == b"\x00"


async def test_no_parent_fails_the_rekey() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent.close()
    with child, pytest.raises(ProtocolError, match=r"^host key signer unavailable$"):
        RemoteSigner(child, host_key()).sign(H, "ssh-ed25519")


async def test_the_parent_closes_its_end_when_the_child_goes() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    serve_signatures(parent, (host_key(),))
    child.close()
    await eventually(lambda: parent.fileno() == -1, 5.0, what="the parent's end closed")
