"""Packet protection: every cipher and MAC we speak, over `cryptography`.

Theory of operation. A *sealer* turns one plaintext packet
(``uint32 packet_length || byte padding_length || payload || padding``,
RFC 4253 §6) into its wire form, written straight into the caller's output
buffer with ``encrypt_into``/``update_into``. An *opener* does the reverse
into a preallocated plaintext buffer. Neither allocates per packet beyond
what the primitives themselves do.

All the modes we offer keep ``packet_length`` outside the block alignment
(AEAD and EtM modes authenticate it as associated data, chacha20-poly1305
encrypts it with its own key), so padding aligns ``padding_length || payload
|| padding`` only. The unencrypted mode of the first key exchange aligns the
whole packet to 8 bytes (RFC 4253 §6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, poly1305
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hashike.proto.errors import MACError

__all__ = [
    "CIPHERS",
    "MACS",
    "NONE_OPENER",
    "NONE_SEALER",
    "CipherSpec",
    "MacSpec",
    "Opener",
    "Sealer",
    "make_opener",
    "make_sealer",
]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Sealer(Protocol):
    """Encrypts packets for one direction of one set of keys."""

    block_size: int
    tag_size: int
    aligns_length: bool  # True only for the unencrypted initial mode

    def seal(self, seq: int, plain: memoryview, out: memoryview) -> None:
        """Write ``len(plain) + tag_size`` wire bytes for ``plain`` into ``out``."""


class Opener(Protocol):
    """Decrypts packets for one direction of one set of keys."""

    block_size: int
    tag_size: int
    aligns_length: bool

    def packet_length(self, seq: int, head: memoryview) -> int:
        """The packet_length of the packet whose first 4 wire bytes are ``head``."""

    def open(self, seq: int, packet: memoryview, out: memoryview) -> None:
        """Check and decrypt ``packet`` (length field + body + tag) and write the
        body's plaintext (padding_length, payload, padding) to ``out``.
        Raises :class:`MACError` when the tag does not verify."""


@dataclass(frozen=True, slots=True)
class CipherSpec:
    key_size: int
    iv_size: int
    block_size: int
    aead: bool  # AEAD ciphers ignore the negotiated MAC (OpenSSH PROTOCOL §1.6)


@dataclass(frozen=True, slots=True)
class MacSpec:
    key_size: int
    digest: type[hashes.HashAlgorithm]


CIPHERS: dict[str, CipherSpec] = {
    "aes128-gcm@openssh.com": CipherSpec(16, 12, 16, True),
    "aes256-gcm@openssh.com": CipherSpec(32, 12, 16, True),
    # PROTOCOL.chacha20poly1305: 64 bytes of key, 8-byte blocks, no IV.
    "chacha20-poly1305@openssh.com": CipherSpec(64, 0, 8, True),
    "aes128-ctr": CipherSpec(16, 16, 16, False),
    "aes256-ctr": CipherSpec(32, 16, 16, False),
}

MACS: dict[str, MacSpec] = {
    "hmac-sha2-256-etm@openssh.com": MacSpec(32, hashes.SHA256),
    "hmac-sha2-512-etm@openssh.com": MacSpec(64, hashes.SHA512),
}


class _NoneCipher:
    """RFC 4253 §6: before the first NEWKEYS packets travel in the clear."""

    block_size = 8
    tag_size = 0
    aligns_length = True

    def seal(self, seq: int, plain: memoryview, out: memoryview) -> None:
        out[: len(plain)] = plain

    def packet_length(self, seq: int, head: memoryview) -> int:
        value: int = _U32.unpack(head)[0]
        return value

    def open(self, seq: int, packet: memoryview, out: memoryview) -> None:
        body = packet[4:]
        out[: len(body)] = body


NONE_SEALER: Sealer = _NoneCipher()
NONE_OPENER: Opener = _NoneCipher()


class _AesGcm:
    """RFC 5647 §7 as OpenSSH uses it: 4-byte fixed IV, 8-byte invocation counter
    incremented per packet; packet_length is the associated data."""

    block_size = 16
    tag_size = 16
    aligns_length = False

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _next_nonce(self) -> bytes:
        nonce = self._fixed + _U64.pack(self._counter)
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return nonce

    def seal(self, seq: int, plain: memoryview, out: memoryview) -> None:
        out[:4] = plain[:4]
        self._aead.encrypt_into(self._next_nonce(), plain[4:], plain[:4], out[4 : len(plain) + 16])

    def packet_length(self, seq: int, head: memoryview) -> int:
        value: int = _U32.unpack(head)[0]
        return value

    def open(self, seq: int, packet: memoryview, out: memoryview) -> None:
        body_len = len(packet) - 4 - 16
        try:
            self._aead.decrypt_into(self._next_nonce(), packet[4:], packet[:4], out[:body_len])
        except InvalidTag:
            raise MACError() from None


class _ChaChaPoly:
    """PROTOCOL.chacha20poly1305: K_2 (first 32 bytes) encrypts the payload from
    block counter 1 and, at counter 0, yields the Poly1305 key; K_1 (last 32 bytes)
    encrypts the 4-byte length. The nonce is the 64-bit sequence number.

    `cryptography`'s ChaCha20 takes a 16-byte value: the little-endian block
    counter followed by the nonce, which for the 64-bit-counter original ChaCha20
    is an 8-byte counter and the 8-byte big-endian sequence number."""

    block_size = 8
    tag_size = 16
    aligns_length = False

    # One 64-byte ChaCha20 block: its first 32 bytes are the Poly1305 key, and
    # consuming it leaves the same stream at block counter 1 for the payload,
    # so one cipher context serves both (fewer primitive set-ups per packet).
    _ZERO_BLOCK = bytes(64)
    _CTR0 = bytes(8)

    def __init__(self, key: bytes) -> None:
        self._main_key = key[:32]
        self._header_key = key[32:]

    def _stream(self, key: bytes, seq: int) -> CipherContext:
        return Cipher(algorithms.ChaCha20(key, self._CTR0 + _U64.pack(seq)), mode=None).encryptor()

    def seal(self, seq: int, plain: memoryview, out: memoryview) -> None:
        n = len(plain)
        self._stream(self._header_key, seq).update_into(plain[:4], out[:4])
        main = self._stream(self._main_key, seq)
        poly_key = main.update(self._ZERO_BLOCK)[:32]
        main.update_into(plain[4:], out[4:n])
        out[n : n + 16] = poly1305.Poly1305.generate_tag(poly_key, out[:n])

    def packet_length(self, seq: int, head: memoryview) -> int:
        value: int = _U32.unpack(self._stream(self._header_key, seq).update(head))[0]
        return value

    def open(self, seq: int, packet: memoryview, out: memoryview) -> None:
        n = len(packet) - 16
        main = self._stream(self._main_key, seq)
        poly_key = main.update(self._ZERO_BLOCK)[:32]
        try:
            poly1305.Poly1305.verify_tag(poly_key, packet[:n], bytes(packet[n:]))  # constant time
        except InvalidSignature:
            raise MACError() from None
        main.update_into(packet[4:n], out[: n - 4])


class _CtrEtm:
    """AES-CTR (RFC 4344 §4) with OpenSSH's encrypt-then-MAC (PROTOCOL §1.5): the
    length stays in the clear and the MAC covers seq || length || ciphertext."""

    block_size = 16
    aligns_length = False
    tag_size: int

    def __init__(self, key: bytes, iv: bytes, mac_key: bytes, mac: MacSpec, encrypt: bool) -> None:
        cipher = Cipher(algorithms.AES(key), modes.CTR(iv))
        self._ctx = cipher.encryptor() if encrypt else cipher.decryptor()
        self._mac_base = hmac.HMAC(mac_key, mac.digest())
        self.tag_size = mac.digest().digest_size

    def _mac(self, seq: int, covered: memoryview) -> hmac.HMAC:
        h = self._mac_base.copy()
        h.update(_U32.pack(seq))
        h.update(covered)
        return h

    def seal(self, seq: int, plain: memoryview, out: memoryview) -> None:
        n = len(plain)
        out[:4] = plain[:4]
        # update_into wants block_size - 1 spare bytes; the caller's buffer has them.
        self._ctx.update_into(plain[4:], out[4 : n + 15])
        out[n : n + self.tag_size] = self._mac(seq, out[:n]).finalize()

    def packet_length(self, seq: int, head: memoryview) -> int:
        value: int = _U32.unpack(head)[0]
        return value

    def open(self, seq: int, packet: memoryview, out: memoryview) -> None:
        n = len(packet) - self.tag_size
        try:
            self._mac(seq, packet[:n]).verify(bytes(packet[n:]))  # constant-time comparison
        except InvalidSignature:
            raise MACError() from None
        self._ctx.update_into(packet[4:n], out[: n - 4 + 15])


def _make(
    cipher: str, mac: str | None, key: bytes, iv: bytes, mac_key: bytes, encrypt: bool
) -> _AesGcm | _ChaChaPoly | _CtrEtm:
    if cipher.startswith("aes") and cipher.endswith("-gcm@openssh.com"):
        return _AesGcm(key, iv)
    if cipher == "chacha20-poly1305@openssh.com":
        return _ChaChaPoly(key)
    if cipher in ("aes128-ctr", "aes256-ctr") and mac is not None and mac in MACS:
        return _CtrEtm(key, iv, mac_key, MACS[mac], encrypt)
    raise ValueError(f"unsupported cipher/MAC pair {cipher}/{mac}")


def make_sealer(cipher: str, mac: str | None, key: bytes, iv: bytes, mac_key: bytes) -> Sealer:
    return _make(cipher, mac, key, iv, mac_key, encrypt=True)


def make_opener(cipher: str, mac: str | None, key: bytes, iv: bytes, mac_key: bytes) -> Opener:
    return _make(cipher, mac, key, iv, mac_key, encrypt=False)
