"""RFC 4253 §7.1 KEXINIT: encoding, decoding and algorithm negotiation.

Negotiation is pure list matching: for each category the chosen algorithm is
the first one on the *client's* list that the server also lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashike.proto.ciphers import CIPHERS
from hashike.proto.constants import MsgType
from hashike.proto.errors import KeyExchangeFailed
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_namelist, encode_uint32

__all__ = [
    "EXT_INFO_C",
    "EXT_INFO_S",
    "STRICT_C",
    "STRICT_S",
    "KexInit",
    "Negotiated",
    "negotiate",
]

# Pseudo-algorithms that only signal support (RFC 8308 §2.1; PROTOCOL §1.10).
EXT_INFO_C = "ext-info-c"
EXT_INFO_S = "ext-info-s"
STRICT_C = "kex-strict-c-v00@openssh.com"
STRICT_S = "kex-strict-s-v00@openssh.com"
_MARKERS = frozenset({EXT_INFO_C, EXT_INFO_S, STRICT_C, STRICT_S})


@dataclass(frozen=True, slots=True, kw_only=True)
class KexInit:
    cookie: bytes
    kex: tuple[str, ...]
    host_key: tuple[str, ...]
    cipher_c2s: tuple[str, ...]
    cipher_s2c: tuple[str, ...]
    mac_c2s: tuple[str, ...]
    mac_s2c: tuple[str, ...]
    compression_c2s: tuple[str, ...] = ("none",)
    compression_s2c: tuple[str, ...] = ("none",)
    languages_c2s: tuple[str, ...] = ()
    languages_s2c: tuple[str, ...] = ()
    first_kex_follows: bool = False

    def encode(self) -> bytes:
        return b"".join(
            (
                encode_byte(MsgType.KEXINIT),
                self.cookie,
                *(
                    encode_namelist(names)
                    for names in (
                        self.kex,
                        self.host_key,
                        self.cipher_c2s,
                        self.cipher_s2c,
                        self.mac_c2s,
                        self.mac_s2c,
                        self.compression_c2s,
                        self.compression_s2c,
                        self.languages_c2s,
                        self.languages_s2c,
                    )
                ),
                encode_bool(self.first_kex_follows),
                encode_uint32(0),  # reserved
            )
        )

    @classmethod
    def decode(cls, payload: bytes) -> KexInit:
        r = Reader(payload, 1)
        cookie = r.raw(16)
        lists = [r.namelist() for _ in range(10)]
        follows = r.boolean()
        r.uint32()
        r.check_end()
        return cls(
            cookie=cookie,
            kex=lists[0],
            host_key=lists[1],
            cipher_c2s=lists[2],
            cipher_s2c=lists[3],
            mac_c2s=lists[4],
            mac_s2c=lists[5],
            compression_c2s=lists[6],
            compression_s2c=lists[7],
            languages_c2s=lists[8],
            languages_s2c=lists[9],
            first_kex_follows=follows,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiated:
    kex: str
    host_key: str
    cipher_c2s: str
    cipher_s2c: str
    mac_c2s: str | None  # None for AEAD ciphers, which carry their own tag
    mac_s2c: str | None
    strict: bool
    peer_wants_ext_info: bool
    guess_was_right: bool  # RFC 4253 §7: decides whether a guessed kex packet is used

    def describe(self) -> str:
        """One line for logs, in the spirit of ssh -v's "kex: ..." lines."""
        mac = self.mac_c2s or "<implicit>"
        return f"kex: {self.kex}, host key: {self.host_key}, cipher: {self.cipher_c2s}, MAC: {mac}"


def _choose(what: str, client: tuple[str, ...], server: tuple[str, ...]) -> str:
    for name in client:
        if name in server and name not in _MARKERS:
            return name
    raise KeyExchangeFailed(f"no matching {what} found: client {','.join(client)} server {','.join(server)}")


def negotiate(client: KexInit, server: KexInit, *, we_are_client: bool, first_kex: bool) -> Negotiated:
    """RFC 4253 §7.1 negotiation. Strict kex is agreed only in the first kex."""
    kex = _choose("key exchange method", client.kex, server.kex)
    host_key = _choose("host key type", client.host_key, server.host_key)
    cipher_c2s = _choose("cipher", client.cipher_c2s, server.cipher_c2s)
    cipher_s2c = _choose("cipher", client.cipher_s2c, server.cipher_s2c)
    # AEAD ciphers ignore the MAC lists (OpenSSH PROTOCOL §1.6 / RFC 5647 §5.1
    # as OpenSSH implements it).
    mac_c2s = None if CIPHERS[cipher_c2s].aead else _choose("MAC", client.mac_c2s, server.mac_c2s)
    mac_s2c = None if CIPHERS[cipher_s2c].aead else _choose("MAC", client.mac_s2c, server.mac_s2c)
    _choose("compression method", client.compression_c2s, server.compression_c2s)
    _choose("compression method", client.compression_s2c, server.compression_s2c)
    peer = server if we_are_client else client
    # RFC 4253 §7: the guess is right when both sides' preferred kex and host
    # key algorithms are the same.
    guess_right = bool(client.kex and server.kex and client.kex[0] == server.kex[0]) and bool(
        client.host_key and server.host_key and client.host_key[0] == server.host_key[0]
    )
    return Negotiated(
        kex=kex,
        host_key=host_key,
        cipher_c2s=cipher_c2s,
        cipher_s2c=cipher_s2c,
        mac_c2s=mac_c2s,
        mac_s2c=mac_s2c,
        strict=first_kex and STRICT_C in client.kex and STRICT_S in server.kex,
        peer_wants_ext_info=(EXT_INFO_S if we_are_client else EXT_INFO_C) in peer.kex,
        guess_was_right=guess_right,
    )
