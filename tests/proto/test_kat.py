"""Known-answer tests: every expected value here is built in the test itself,
from the specification text, with hashlib/hmac and `cryptography` primitives
directly, never with hashike's code under test.

- RFC 4253 §7.2 key derivation, and a raw peer whose keys come only from the
  formula talking to hashike.
- Packet formats: PROTOCOL.chacha20poly1305, RFC 5647 AES-GCM as OpenSSH uses
  it, AES-CTR with encrypt-then-MAC (PROTOCOL §1.5), and the unencrypted
  initial mode (RFC 4253 §6).
- Shared secret encodings: mpint for X25519 (RFC 8731 §3.1) and P-256
  (RFC 5656 §4), string for mlkem768x25519-sha256.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import struct
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import hashes, poly1305
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hashike.proto.ciphers import CIPHERS, MACS, make_opener, make_sealer
from hashike.proto.errors import KeyExchangeFailed, MACError, RemoteProtocolError
from hashike.proto.events import Disconnected, KexCompleted
from hashike.proto.kex import KEX_METHODS
from hashike.proto.kex.base import derive_key, exchange_hash_input
from hashike.proto.packet import PacketReader, PacketWriter
from hashike.proto.wire import encode_mpint
from tests.proto.pair import events_of
from tests.proto.rawpeer import RawPeer, new_server, pump

PAD_BYTE = 0xA5


def _const_rng(n: int) -> bytes:
    """Every random byte is 0xA5, so padding is known whatever way it is drawn."""
    return bytes([PAD_BYTE]) * n


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _string(b: bytes) -> bytes:
    return _u32(len(b)) + b


def _mpint_unsigned(value: bytes) -> bytes:
    """RFC 4251 §5 mpint of a non-negative big-endian number: no leading zero
    bytes, except one when the top bit would otherwise read as a sign."""
    body = value.lstrip(b"\x00")
    if body and body[0] & 0x80:
        body = b"\x00" + body
    return _string(body)


# ---------------------------------------------------------------- RFC 4253 §7.2


def _derive(hash_name: str, k: bytes, h: bytes, letter: bytes, sid: bytes, size: int) -> bytes:
    out = hashlib.new(hash_name, k + h + letter + sid).digest()  # K1 = HASH(K || H || X || session_id)
    while len(out) < size:
        out += hashlib.new(hash_name, k + h + out).digest()  # Kn = HASH(K || H || K1 || ... || Kn-1)
    return out[:size]


K_MPINT = _mpint_unsigned(bytes.fromhex("f3" + "17" * 31))  # a shared secret with its top bit set
H = hashlib.sha256(b"exchange hash").digest()
SID = hashlib.sha256(b"first exchange hash").digest()


def test_derive_key_first_block() -> None:
    k1 = hashlib.sha256(K_MPINT + H + b"C" + SID).digest()
    assert derive_key(hashes.SHA256, K_MPINT, H, b"C", SID, 32) == k1
    assert derive_key(hashes.SHA256, K_MPINT, H, b"C", SID, 16) == k1[:16]
    # Each letter and the session id matter.
    assert derive_key(hashes.SHA256, K_MPINT, H, b"D", SID, 32) != k1
    assert derive_key(hashes.SHA256, K_MPINT, H, b"C", H, 32) != k1


@pytest.mark.parametrize(("algorithm", "name"), [(hashes.SHA256, "sha256"), (hashes.SHA512, "sha512")])
@pytest.mark.parametrize("size", [12, 32, 33, 64, 65, 100, 200])
def test_derive_key_extension(algorithm: type[hashes.HashAlgorithm], name: str, size: int) -> None:
    k1 = hashlib.new(name, K_MPINT + H + b"E" + SID).digest()
    k2 = hashlib.new(name, K_MPINT + H + k1).digest()
    k3 = hashlib.new(name, K_MPINT + H + k1 + k2).digest()
    k4 = hashlib.new(name, K_MPINT + H + k1 + k2 + k3).digest()
    expected = _derive(name, K_MPINT, H, b"E", SID, size)
    assert len(expected) == size
    assert expected[: len(k1 + k2 + k3 + k4)] == (k1 + k2 + k3 + k4)[:size]
    assert derive_key(algorithm, K_MPINT, H, b"E", SID, size) == expected


def test_exchange_hash_input_layout() -> None:
    # RFC 5656 §4 / RFC 8731 §3: string V_C, V_S, I_C, I_S, K_S, Q_C, Q_S, then K as encoded.
    v_c, v_s, i_c, i_s, k_s, q_c, q_s = (
        b"SSH-2.0-c",
        b"SSH-2.0-s",
        b"\x14ic",
        b"\x14is",
        b"ks",
        b"qc" * 16,
        b"qs",
    )
    expected = b"".join(_string(p) for p in (v_c, v_s, i_c, i_s, k_s, q_c, q_s)) + K_MPINT
    assert exchange_hash_input(v_c, v_s, i_c, i_s, k_s, q_c, q_s, K_MPINT) == expected


class FormulaRawPeer(RawPeer):
    """A raw client whose every key comes from the RFC 4253 §7.2 formula above."""

    def _keys(self, k: bytes, h: bytes, outgoing: bool) -> tuple[str, str | None, bytes, bytes, bytes]:
        n = self.negotiated
        assert n is not None and self.session_id is not None
        c2s = outgoing  # a client's outgoing direction is client-to-server
        cipher, mac = (n.cipher_c2s, n.mac_c2s) if c2s else (n.cipher_s2c, n.mac_s2c)
        iv_size, key_size = {"aes128-gcm@openssh.com": (12, 16), "aes128-ctr": (16, 16)}[cipher]
        mac_size = 32 if mac == "hmac-sha2-256-etm@openssh.com" else 0
        letters = "ACE" if c2s else "BDF"
        iv, key, mac_key = (
            _derive("sha256", k, h, letter.encode(), self.session_id, size) if size else b""
            for letter, size in zip(letters, (iv_size, key_size, mac_size), strict=True)
        )
        return cipher, mac, iv, key, mac_key


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "aes128-ctr"])
def test_transport_uses_the_rfc_4253_derivation(cipher: str) -> None:
    server = new_server()
    raw = FormulaRawPeer(is_client=True, ciphers=(cipher,))
    events = pump(raw, server)
    assert not events_of(events, Disconnected)
    assert events_of(events, KexCompleted)
    # Packets sealed with the formula's keys open on hashike's side and vice versa.
    raw.send(b"\xc0" + _string(b"kat"))  # PING
    pump(raw, server, events)
    assert raw.inbox[-1] == b"\xc1" + _string(b"kat")
    assert server.transport.session_id == raw.session_id


# ------------------------------------------------------------- packet formats

PAYLOADS = [b"\x02", b"\x02" + _string(b"hello, world"), bytes([94]) + bytes(range(256)) * 3]
FIRST_SEQ = 0xFFFFFFFE  # the second and third packets cross the 2^32 wrap (RFC 4253 §6.4)
KEY = bytes(range(64))
IV = bytes(range(100, 116))
MAC_KEY = bytes(range(200, 256)) + bytes(8)


def _padded(payload: bytes, block: int, length_counts: bool) -> bytes:
    """padding_length || payload || padding, padded per RFC 4253 §6 (4 to 255
    bytes) to a multiple of ``block``; AEAD and EtM modes leave the 4-byte
    length out of the alignment (PROTOCOL §1.5, PROTOCOL.chacha20poly1305)."""
    unpadded = (4 if length_counts else 0) + 1 + len(payload)
    pad = block - unpadded % block
    if pad < 4:
        pad += block
    return bytes([pad]) + payload + bytes([PAD_BYTE]) * pad


def _seqs() -> Iterator[int]:
    return ((FIRST_SEQ + i) & 0xFFFFFFFF for i in itertools.count())


def _expected_none(payloads: list[bytes]) -> bytes:
    out = b""
    for p in payloads:
        body = _padded(p, 8, length_counts=True)
        out += _u32(len(body)) + body
    return out


def _chacha(key: bytes, counter: int, seq: int, data: bytes) -> bytes:
    # PROTOCOL.chacha20poly1305: original ChaCha20 with a 64-bit block counter
    # and the 64-bit big-endian sequence number as nonce. `cryptography` takes
    # the 16-byte block-input words 12..15: counter (little-endian) then nonce.
    nonce = counter.to_bytes(8, "little") + seq.to_bytes(8, "big")
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(data)


def _expected_chacha(payloads: list[bytes]) -> bytes:
    k_main, k_header = KEY[:32], KEY[32:]  # K_2 then K_1
    out = b""
    for p, seq in zip(payloads, _seqs(), strict=False):
        body = _padded(p, 8, length_counts=False)
        enc_len = _chacha(k_header, 0, seq, _u32(len(body)))
        enc_body = _chacha(k_main, 1, seq, body)
        poly_key = _chacha(k_main, 0, seq, bytes(32))
        tag = poly1305.Poly1305.generate_tag(poly_key, enc_len + enc_body)
        out += enc_len + enc_body + tag
    return out


def _expected_gcm(key_size: int) -> Callable[[list[bytes]], bytes]:
    def build(payloads: list[bytes]) -> bytes:
        aead = AESGCM(KEY[:key_size])
        fixed, counter = IV[:4], int.from_bytes(IV[4:12], "big")  # RFC 5647 §7.1
        out = b""
        for i, p in enumerate(payloads):
            body = _padded(p, 16, length_counts=False)
            nonce = fixed + (counter + i).to_bytes(8, "big")  # invocation counter, +1 per packet
            length = _u32(len(body))
            out += length + aead.encrypt(nonce, body, length)  # packet_length is the AAD
        return out

    return build


def _expected_ctr_etm(key_size: int, digest: str) -> Callable[[list[bytes]], bytes]:
    def build(payloads: list[bytes]) -> bytes:
        # RFC 4344 §4: one counter stream for the whole direction, IV as initial counter.
        ctr = Cipher(algorithms.AES(KEY[:key_size]), modes.CTR(IV)).encryptor()
        mac_key = MAC_KEY[: hashlib.new(digest).digest_size]
        out = b""
        for p, seq in zip(payloads, _seqs(), strict=False):
            body = _padded(p, 16, length_counts=False)
            length = _u32(len(body))
            enc = ctr.update(body)
            # PROTOCOL §1.5: mac = MAC(key, sequence_number || packet_length || encrypted packet)
            tag = hmac.new(mac_key, _u32(seq) + length + enc, digest).digest()
            out += length + enc + tag
        return out

    return build


FORMATS = [
    pytest.param("chacha20-poly1305@openssh.com", None, _expected_chacha, id="chacha20-poly1305"),
    pytest.param("aes128-gcm@openssh.com", None, _expected_gcm(16), id="aes128-gcm"),
    pytest.param("aes256-gcm@openssh.com", None, _expected_gcm(32), id="aes256-gcm"),
    pytest.param(
        "aes128-ctr", "hmac-sha2-256-etm@openssh.com", _expected_ctr_etm(16, "sha256"), id="ctr128-256"
    ),
    pytest.param(
        "aes128-ctr", "hmac-sha2-512-etm@openssh.com", _expected_ctr_etm(16, "sha512"), id="ctr128-512"
    ),
    pytest.param(
        "aes256-ctr", "hmac-sha2-256-etm@openssh.com", _expected_ctr_etm(32, "sha256"), id="ctr256-256"
    ),
    pytest.param(
        "aes256-ctr", "hmac-sha2-512-etm@openssh.com", _expected_ctr_etm(32, "sha512"), id="ctr256-512"
    ),
]


def _keys_for(cipher: str, mac: str | None) -> tuple[bytes, bytes, bytes]:
    spec = CIPHERS[cipher]
    return KEY[: spec.key_size], IV[: spec.iv_size], MAC_KEY[: MACS[mac].key_size] if mac else b""


def test_every_cipher_and_mac_has_a_format_test() -> None:
    covered = {(p.values[0], p.values[1]) for p in FORMATS}
    expected = {(c, None) for c, s in CIPHERS.items() if s.aead} | {
        (c, m) for c, s in CIPHERS.items() if not s.aead for m in MACS
    }
    assert covered == expected


@pytest.mark.parametrize(("cipher", "mac", "expected"), FORMATS)
def test_packet_format(cipher: str, mac: str | None, expected: Callable[[list[bytes]], bytes]) -> None:
    key, iv, mac_key = _keys_for(cipher, mac)
    writer = PacketWriter(_const_rng)
    writer.set_sealer(make_sealer(cipher, mac, key, iv, mac_key), reset_seq=False)
    writer.seq = FIRST_SEQ
    for p in PAYLOADS:
        writer.write(p)
    wire = writer.take()
    assert wire == expected(PAYLOADS)
    assert writer.seq == (FIRST_SEQ + len(PAYLOADS)) & 0xFFFFFFFF == 1

    # ... and hashike's reader opens the independently built bytes, fed a byte at a time.
    reader = PacketReader()
    reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=False)
    reader.seq = FIRST_SEQ
    opened = []
    for i in range(len(wire)):
        reader.feed(wire[i : i + 1])
        if (payload := reader.next_payload()) is not None:
            opened.append(bytes(payload))
    assert opened == PAYLOADS
    assert reader.buffered == 0


@pytest.mark.parametrize(("cipher", "mac", "expected"), FORMATS)
def test_tampered_packet_fails_authentication(
    cipher: str, mac: str | None, expected: Callable[[list[bytes]], bytes]
) -> None:
    key, iv, mac_key = _keys_for(cipher, mac)
    wire = bytearray(expected(PAYLOADS[1:2]))
    wire[10] ^= 0x01  # a ciphertext byte
    reader = PacketReader()
    reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=False)
    reader.seq = FIRST_SEQ
    reader.feed(bytes(wire))
    with pytest.raises(MACError):
        reader.next_payload()


def test_wrong_sequence_number_fails_authentication() -> None:
    # chacha20 and EtM bind the sequence number; a reader that is one off refuses the packet.
    # (chacha20 encrypts the length with it too, so the length itself may already be refused.)
    for cipher, mac, build, error in [
        ("chacha20-poly1305@openssh.com", None, _expected_chacha, RemoteProtocolError),
        ("aes128-ctr", "hmac-sha2-256-etm@openssh.com", _expected_ctr_etm(16, "sha256"), MACError),
    ]:
        key, iv, mac_key = _keys_for(cipher, mac)
        reader = PacketReader()
        reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=False)
        reader.seq = FIRST_SEQ + 1
        reader.feed(build(PAYLOADS[:1]))
        with pytest.raises(error):
            reader.next_payload()


def test_unencrypted_packet_format() -> None:
    writer = PacketWriter(_const_rng)
    for p in PAYLOADS:
        writer.write(p)
    wire = writer.take()
    assert wire == _expected_none(PAYLOADS)
    reader = PacketReader()
    reader.feed(wire)
    assert [bytes(reader.next_payload() or b"") for _ in PAYLOADS] == PAYLOADS


# ----------------------------------------------------- shared secret encodings


def _x25519_pub(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def _find_x25519(predicate: Callable[[bytes], bool]) -> tuple[X25519PrivateKey, bytes, bytes]:
    """A client key and a server seed whose X25519 secret satisfies ``predicate``."""
    client = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    for i in range(5000):
        seed = hashlib.sha256(b"seed %d" % i).digest()
        secret = client.exchange(
            X25519PublicKey.from_public_bytes(_x25519_pub(X25519PrivateKey.from_private_bytes(seed)))
        )
        if predicate(secret):
            return client, seed, secret
    raise AssertionError("no such secret found")


@pytest.mark.parametrize("method", ["curve25519-sha256", "curve25519-sha256@libssh.org"])
@pytest.mark.parametrize(
    ("case", "predicate", "length"),
    [
        ("high-bit", lambda s: s[0] >= 0x80, 33),  # needs a leading 0x00
        ("no-high-bit", lambda s: 0 < s[0] < 0x80, 32),
        ("leading-zero", lambda s: s[0] == 0 and s[1] < 0x80 and s[1] != 0, 31),  # zero byte dropped
    ],
)
def test_curve25519_secret_is_an_mpint(
    method: str, case: str, predicate: Callable[[bytes], bool], length: int
) -> None:
    client, seed, secret = _find_x25519(predicate)
    kex = KEX_METHODS[method]
    server_public, k_server = kex.reply(_x25519_pub(client), lambda n: seed[:n])
    assert server_public == _x25519_pub(X25519PrivateKey.from_private_bytes(seed))
    # RFC 8731 §3.1: the 32 secret bytes, read as an unsigned integer, as an mpint.
    assert k_server == _mpint_unsigned(secret)
    assert struct.unpack(">I", k_server[:4])[0] == length
    if case == "high-bit":
        assert k_server[4] == 0 and k_server[5:] == secret
    # The client's half arrives at the same encoding.
    client_half = kex.start(lambda n: bytes(range(1, 33))[:n])
    assert client_half.public == _x25519_pub(client)
    assert client_half.finish(server_public) == k_server


@pytest.mark.parametrize("method", ["curve25519-sha256", "mlkem768x25519-sha256"])
def test_all_zero_x25519_secret_is_refused(method: str) -> None:
    # RFC 8731 §3: a low-order point (here 0) yields an all-zero secret, which must be refused.
    kex = KEX_METHODS[method]
    low_order = bytes(32)
    client_value = (bytes(1184) if method.startswith("mlkem") else b"") + low_order
    with pytest.raises(KeyExchangeFailed):
        kex.reply(client_value, os.urandom)


def test_nistp256_secret_is_an_mpint_of_x() -> None:
    # RFC 5656 §4: K is the x coordinate of the shared point, as an mpint.
    kex = KEX_METHODS["ecdh-sha2-nistp256"]
    seen_high_bit = False
    for i in range(64):
        ours = ec.derive_private_key(1000 + i, ec.SECP256R1())
        q_c = ours.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        q_s, k = kex.reply(q_c, os.urandom)
        secret = ours.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), q_s))
        assert k == _mpint_unsigned(secret)
        seen_high_bit |= secret[0] >= 0x80
    assert seen_high_bit


def test_mlkem768x25519_secret_is_a_string_of_sha256() -> None:
    # K = SHA-256(K_mlkem || K_x25519), encoded as a string (not an mpint).
    draws = [hashlib.sha512(b"mlkem seed").digest(), bytes(range(7, 39))]
    it = iter(draws)
    kex = KEX_METHODS["mlkem768x25519-sha256"]
    client_half = kex.start(lambda n: next(it)[:n])
    kem = MLKEM768PrivateKey.from_seed_bytes(draws[0])
    x_private = X25519PrivateKey.from_private_bytes(draws[1])
    assert client_half.public == kem.public_key().public_bytes_raw() + _x25519_pub(x_private)
    q_s, k_server = kex.reply(client_half.public, os.urandom)
    ciphertext, server_x = q_s[:1088], q_s[1088:]
    k_pq = kem.decapsulate(ciphertext)
    k_cl = x_private.exchange(X25519PublicKey.from_public_bytes(server_x))
    expected = _string(hashlib.sha256(k_pq + k_cl).digest())
    assert k_server == expected
    assert client_half.finish(q_s) == expected
    assert len(expected) == 36


def test_encode_mpint_rfc4251_examples() -> None:
    # RFC 4251 §5's own examples.
    assert encode_mpint(0) == bytes.fromhex("00000000")
    assert encode_mpint(0x9A378F9B2E332A7) == bytes.fromhex("0000000809a378f9b2e332a7")
    assert encode_mpint(0x80) == bytes.fromhex("000000020080")
    assert encode_mpint(-0x1234) == bytes.fromhex("00000002edcc")
    assert encode_mpint(-0xDEADBEEF) == bytes.fromhex("00000005ff21524111")
