"""RawPeer: an SSH transport peer driven by hand, for tests that need to misbehave.

Theory of operation. A :class:`RawPeer` speaks the transport layer (RFC 4253)
with hashike's building blocks (PacketWriter/PacketReader, the cipher registry,
the kex methods and key derivation) but none of its state machine: it reacts
to the peer's KEXINIT, KEX_ECDH_INIT/REPLY and NEWKEYS the way a plain
implementation would, and records every other payload in :attr:`inbox`. Tests
bend it with a few knobs: what goes into its KEXINIT, a guessed kex packet,
payloads slipped in just before NEWKEYS, a rewrite of its ECDH message, or by
writing arbitrary payloads with :meth:`send` at any moment.

:func:`pump` moves bytes between a RawPeer and a real Client/ServerConnection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hashike.proto.ciphers import CIPHERS, MACS, make_opener, make_sealer
from hashike.proto.config import TransportConfig
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import MsgType
from hashike.proto.events import Event, HostKeyReceived
from hashike.proto.hostkey import PrivateKey, PublicKey
from hashike.proto.kex import KEX_METHODS
from hashike.proto.kex.base import ClientKex, derive_key, exchange_hash, exchange_hash_input
from hashike.proto.kex.negotiate import (
    EXT_INFO_C,
    EXT_INFO_S,
    STRICT_C,
    STRICT_S,
    KexInit,
    Negotiated,
    negotiate,
)
from hashike.proto.packet import PacketReader, PacketWriter
from hashike.proto.version import VersionParser, identification_line
from hashike.proto.wire import Reader, encode_byte, encode_string, encode_uint32
from tests.proto.pair import host_key

__all__ = ["RawPeer", "ext_info_payload", "new_client", "new_server", "pump", "raw_for"]

Connection = ClientConnection | ServerConnection
_KEX_MESSAGES = range(20, 50)


def ext_info_payload(extensions: dict[str, bytes]) -> bytes:
    """RFC 8308 §2.3 SSH_MSG_EXT_INFO."""
    return (
        encode_byte(MsgType.EXT_INFO)
        + encode_uint32(len(extensions))
        + b"".join(encode_string(k) + encode_string(v) for k, v in extensions.items())
    )


class RawPeer:
    """A hand-driven transport peer. ``is_client`` picks the role it plays."""

    def __init__(
        self,
        *,
        is_client: bool,
        host_key: PrivateKey | None = None,
        kex: tuple[str, ...] = ("curve25519-sha256",),
        host_key_algorithms: tuple[str, ...] = ("ssh-ed25519",),
        ciphers: tuple[str, ...] = ("aes128-gcm@openssh.com",),
        macs: tuple[str, ...] = ("hmac-sha2-256-etm@openssh.com",),
        strict: bool = True,
        ext_info: bool = True,
        rng: Callable[[int], bytes] = os.urandom,
        software: str = "RawPeer_1.0",
    ) -> None:
        if not is_client and host_key is None:
            raise ValueError("a raw server needs a host key")
        self.is_client = is_client
        self.host_key = host_key
        self.rng = rng
        self.strict = strict
        markers: tuple[str, ...] = ()
        if ext_info:
            markers += (EXT_INFO_C if is_client else EXT_INFO_S,)
        if strict:
            markers += (STRICT_C if is_client else STRICT_S,)
        self.kexinit_template = KexInit(
            cookie=bytes(16),
            kex=kex,
            host_key=host_key_algorithms,
            cipher_c2s=ciphers,
            cipher_s2c=ciphers,
            mac_c2s=macs,
            mac_s2c=macs,
        )
        self._first_markers = markers
        self.our_version = identification_line(software)
        self._prefix = self.our_version
        self._queued = b""  # sealed by send_packet, ahead of the writer's output
        self._version = VersionParser(peer_is_server=is_client)
        self.peer_version: bytes | None = None
        self.writer = PacketWriter(rng)
        self.reader = PacketReader()
        # Every payload received, in order, and the non-kex ones on their own.
        self.received: list[bytes] = []
        self.inbox: list[bytes] = []
        self.session_id: bytes | None = None
        self.negotiated: Negotiated | None = None
        self.server_host_key: PublicKey | None = None
        self.kex_count = 0  # NEWKEYS received
        # Packets this peer sent since its last NEWKEYS (strict kex resets seq there).
        self.sent_since_newkeys = 0
        self.received_since_newkeys = 0
        self.sent_total = 0
        self.sent_types: list[int] = []  # message number of every packet sent
        # Knobs for misbehaving.
        self.pre_newkeys: list[bytes] = []  # sent right before our next NEWKEYS, then cleared
        self.before_newkeys: Callable[[], None] | None = None  # called just before NEWKEYS is written
        self.rewrite_ecdh: Callable[[bytes], bytes] | None = None  # applied to our ECDH_INIT/REPLY
        self.hold_ecdh = False  # client: do not answer the peer's KEXINIT with ECDH_INIT
        self.auto_kexinit = True  # send our KEXINIT as soon as the peer's version arrives
        self._ours: bytes | None = None
        self._peer_kexinit: bytes | None = None
        self._client_kex: ClientKex | None = None
        self._guess: tuple[str, ClientKex] | None = None
        self._pending_keys: tuple[bytes, bytes] | None = None
        self._in_kex = False

    # ---------------------------------------------------------------- output

    def send(self, payload: bytes) -> None:
        """Write any payload as one packet under the current outgoing keys."""
        self.writer.write(payload)
        self.sent_types.append(payload[0] if payload else -1)
        self.sent_since_newkeys += 1
        self.sent_total += 1

    def send_packet(self, payload: bytes, pad: int | None = None) -> None:
        """Seal one packet by hand under the current keys, bypassing the writer's
        payload cap and padding rule: for packets up to the peer's limit, or
        beyond it. ``pad`` is the padding length (default: the smallest legal)."""
        sealer = self.writer._sealer
        block = sealer.block_size
        if pad is None:
            unpadded = 1 + len(payload) + (4 if sealer.aligns_length else 0)
            pad = block - unpadded % block
            pad += block if pad < 4 else 0
        plain = bytearray(encode_uint32(1 + len(payload) + pad) + bytes([pad]) + payload + self.rng(pad))
        out = bytearray(len(plain) + sealer.tag_size + 16)
        sealer.seal(self.writer.seq, memoryview(plain), memoryview(out))
        self._queued += bytes(self.writer.take()) + bytes(out[: len(plain) + sealer.tag_size])
        self.writer.seq = (self.writer.seq + 1) & 0xFFFFFFFF
        self.sent_types.append(payload[0] if payload else -1)
        self.sent_since_newkeys += 1
        self.sent_total += 1

    def data_to_send(self) -> bytes:
        prefix, self._prefix = self._prefix, b""
        queued, self._queued = self._queued, b""
        return prefix + queued + self.writer.take()

    def send_kexinit(
        self, *, first_kex_follows: bool = False, guess: str | None = None, **fields: Any
    ) -> bytes:
        """Send our KEXINIT (with the first-kex markers on the first one).

        ``guess`` names a kex method whose KEX_ECDH_INIT follows at once
        (RFC 4253 §7, first_kex_packet_follows); ``fields`` override the template."""
        template = replace(self.kexinit_template, **fields)
        kex = template.kex
        if self.kex_count == 0 and "kex" not in fields:
            kex = (*kex, *self._first_markers)
        init = replace(template, kex=kex, cookie=self.rng(16), first_kex_follows=first_kex_follows)
        payload = init.encode()
        self._ours = payload
        self._in_kex = True
        self.send(payload)
        if guess is not None:
            guessed = KEX_METHODS[guess].start(self.rng)
            self._guess = (guess, guessed)
            self.send(encode_byte(MsgType.KEX_ECDH_INIT) + encode_string(guessed.public))
        return payload

    # ----------------------------------------------------------------- input

    def receive_data(self, data: bytes | memoryview) -> None:
        data = bytes(data)  # the core's output is a view of a buffer it reuses
        if self.peer_version is None:
            done = self._version.feed(data)
            if done is None:
                return
            version, data = done
            self.peer_version = version.line
            if self._ours is None and self.auto_kexinit:
                self.send_kexinit()
        self.reader.feed(data)
        while (payload := self.reader.next_payload()) is not None:
            self._on_payload(bytes(payload))

    def _on_payload(self, payload: bytes) -> None:
        self.received.append(payload)
        self.received_since_newkeys += 1
        msg = payload[0]
        if msg == MsgType.KEXINIT:
            self._on_kexinit(payload)
        elif msg == MsgType.KEX_ECDH_INIT and not self.is_client:
            self._on_ecdh_init(payload)
        elif msg == MsgType.KEX_ECDH_REPLY and self.is_client:
            self._on_ecdh_reply(payload)
        elif msg == MsgType.NEWKEYS:
            self._on_newkeys()
        elif msg not in _KEX_MESSAGES:
            self.inbox.append(payload)
        else:
            raise AssertionError(f"RawPeer got an unexpected kex message {msg}")

    def _on_kexinit(self, payload: bytes) -> None:
        if not self._in_kex:
            self.send_kexinit()
        assert self._ours is not None
        self._peer_kexinit = payload
        ours, peer = KexInit.decode(self._ours), KexInit.decode(payload)
        client, server = (ours, peer) if self.is_client else (peer, ours)
        self.negotiated = negotiate(
            client, server, we_are_client=self.is_client, first_kex=self.kex_count == 0
        )
        if self.kex_count == 0:
            self.strict = self.negotiated.strict
        if self.is_client:
            guess, self._guess = self._guess, None
            if guess is not None and guess[0] == self.negotiated.kex and self.negotiated.guess_was_right:
                self._client_kex = guess[1]  # the guessed packet counts
            elif not self.hold_ecdh:
                self.send_ecdh_init()

    def send_ecdh_init(self) -> None:
        assert self.negotiated is not None
        self._client_kex = KEX_METHODS[self.negotiated.kex].start(self.rng)
        payload = encode_byte(MsgType.KEX_ECDH_INIT) + encode_string(self._client_kex.public)
        self.send(self.rewrite_ecdh(payload) if self.rewrite_ecdh else payload)

    def _hash_input(self) -> tuple[bytes, bytes, bytes, bytes]:
        assert self.peer_version is not None and self._ours is not None and self._peer_kexinit is not None
        ours = self.our_version.rstrip(b"\r\n")
        if self.is_client:
            return ours, self.peer_version, self._ours, self._peer_kexinit
        return self.peer_version, ours, self._peer_kexinit, self._ours

    def _on_ecdh_init(self, payload: bytes) -> None:
        assert self.negotiated is not None and self.host_key is not None
        r = Reader(payload, 1)
        q_c = r.string()
        r.check_end()
        method = KEX_METHODS[self.negotiated.kex]
        q_s, k = method.reply(q_c, self.rng)
        k_s = self.host_key.public_key.blob
        h = exchange_hash(method, exchange_hash_input(*self._hash_input(), k_s, q_c, q_s, k))
        signature = self.host_key.sign(h, self.negotiated.host_key)
        reply = (
            encode_byte(MsgType.KEX_ECDH_REPLY)
            + encode_string(k_s)
            + encode_string(q_s)
            + encode_string(signature)
        )
        self.send(self.rewrite_ecdh(reply) if self.rewrite_ecdh else reply)
        self._send_newkeys(k, h)

    def _on_ecdh_reply(self, payload: bytes) -> None:
        assert self.negotiated is not None and self._client_kex is not None
        r = Reader(payload, 1)
        k_s, q_s, signature = r.string(), r.string(), r.string()
        r.check_end()
        method = KEX_METHODS[self.negotiated.kex]
        k = self._client_kex.finish(q_s)
        h = exchange_hash(
            method, exchange_hash_input(*self._hash_input(), k_s, self._client_kex.public, q_s, k)
        )
        key = PublicKey.from_blob(k_s)
        if not key.verify(signature, h, (self.negotiated.host_key,)):
            raise AssertionError("RawPeer: bad signature on the exchange hash")
        self.server_host_key = key
        self._send_newkeys(k, h)

    def _keys(self, k: bytes, h: bytes, outgoing: bool) -> tuple[str, str | None, bytes, bytes, bytes]:
        n = self.negotiated
        assert n is not None and self.session_id is not None
        c2s = outgoing == self.is_client
        cipher, mac = (n.cipher_c2s, n.mac_c2s) if c2s else (n.cipher_s2c, n.mac_s2c)
        iv_l, key_l, mac_l = (b"A", b"C", b"E") if c2s else (b"B", b"D", b"F")
        algorithm = KEX_METHODS[n.kex].hash
        spec = CIPHERS[cipher]
        sid = self.session_id

        def derive(letter: bytes, size: int) -> bytes:
            return derive_key(algorithm, k, h, letter, sid, size) if size else b""

        mac_size = MACS[mac].key_size if mac else 0
        return cipher, mac, derive(iv_l, spec.iv_size), derive(key_l, spec.key_size), derive(mac_l, mac_size)

    def _send_newkeys(self, k: bytes, h: bytes) -> None:
        if self.session_id is None:
            self.session_id = h
        self._pending_keys = (k, h)
        for extra in self.pre_newkeys:
            self.send(extra)
        self.pre_newkeys = []
        if self.before_newkeys is not None:
            self.before_newkeys()
        self.send(encode_byte(MsgType.NEWKEYS))
        cipher, mac, iv, key, mac_key = self._keys(k, h, outgoing=True)
        self.writer.set_sealer(make_sealer(cipher, mac, key, iv, mac_key), reset_seq=self.strict)
        self.sent_since_newkeys = 0

    def _on_newkeys(self) -> None:
        assert self._pending_keys is not None, "NEWKEYS before our own"
        cipher, mac, iv, key, mac_key = self._keys(*self._pending_keys, outgoing=False)
        self.reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=self.strict)
        self.received_since_newkeys = 0
        self.kex_count += 1
        self._in_kex = False
        self._ours = None
        self._pending_keys = None


def new_client(config: TransportConfig | None = None) -> ClientConnection:
    return ClientConnection(config or TransportConfig(), rng=os.urandom)


def new_server(
    config: TransportConfig | None = None, host_keys: tuple[PrivateKey, ...] = ()
) -> ServerConnection:
    return ServerConnection(config or TransportConfig(), host_keys=host_keys or (host_key(),), rng=os.urandom)


def raw_for(conn: Connection, **options: Any) -> RawPeer:
    """A RawPeer playing the other role of ``conn`` (a raw server gets the cached ed25519 key)."""
    if isinstance(conn, ClientConnection):
        options.setdefault("host_key", host_key())
        return RawPeer(is_client=False, **options)
    return RawPeer(is_client=True, **options)


def pump(
    raw: RawPeer,
    conn: Connection,
    events: list[Event] | None = None,
    *,
    rounds: int = 50,
    feed_raw: bool = True,
    feed_disconnect: bool = False,
) -> list[Event]:
    """Move bytes both ways until both are quiet; return (and extend) ``events``.

    A ClientConnection's host key is accepted as soon as it is offered. Once
    ``conn`` is closed, what it sends (its DISCONNECT) is no longer fed to
    ``raw`` unless ``feed_disconnect`` (for tests that read it); with
    ``feed_raw=False`` nothing is, for tests that only watch ``conn``."""
    events = [] if events is None else events
    for _ in range(rounds):
        closed = conn.closed
        to_conn = raw.data_to_send()
        to_raw = conn.data_to_send()
        if not to_conn and not to_raw:
            return events
        if to_raw and feed_raw and (feed_disconnect or not closed):
            raw.receive_data(to_raw)
        if to_conn:
            conn.receive_data(to_conn)
        for event in conn.events_received():
            events.append(event)
            if isinstance(event, HostKeyReceived) and isinstance(conn, ClientConnection):
                conn.accept_host_key()
    raise AssertionError("raw peer and connection did not settle")
