"""The SSH transport layer (RFC 4253) as a sans-IO state machine.

Theory of operation. Bytes from the socket go to :meth:`Transport.receive_data`.
Until the peer's identification line is complete they go to the version
parser; after that to the packet reader, which yields one payload at a time.
Each payload is dispatched through a table, :data:`_TABLES`, from the pair
(state, message number) to a handler; a pair that is not in the table is a
protocol error, which ends in DISCONNECT. There is one table per side and
phase, because what may arrive beside an exchange's own messages depends on
which exchange it is (RFC 4253 §7.1):

- before the first NEWKEYS, only DISCONNECT, IGNORE, DEBUG and UNIMPLEMENTED;
  under strict kex only DISCONNECT;
- once OPEN, every non-kex message: the transport's own (RFC 4253 §11,
  EXT_INFO, PING/PONG), and the rest (service, authentication, connection)
  handed to the owner's ``deliver`` function. This is the data path: one
  lookup and one call per packet;
- during a rekey, anything until the peer's KEXINIT arrives (it may not
  have seen ours yet); after it, everything but what §7.1 forbids even
  then (SERVICE_REQUEST/ACCEPT) and EXT_INFO (RFC 8308 §2.4). §7.1 forbids
  the peer to send upper-layer messages there, but PuTTY sends CHANNEL_CLOSE
  between its KEX_ECDH_INIT and NEWKEYS, and OpenSSH, whose kex takes over
  only messages 1-49, accepts them; so do we. Answers still wait for our
  NEWKEYS. All of these are bounded in number per exchange.

States::

    VERSION -> KEXINIT_SENT -> AWAIT_ECDH -> AWAIT_NEWKEYS -> OPEN
                   ^                                           |
                   +---------- rekey (either side) ------------+

Our KEXINIT is sent at once, and again whenever a rekey starts. While a kex
is in progress, outgoing upper-layer messages wait in a bounded queue
(RFC 4253 §7.1 forbids sending them) and leave, in order, when it completes.

Strict kex (OpenSSH PROTOCOL §1.10, the Terrapin countermeasure,
CVE-2023-48795): when both sides signal it in the first KEXINIT, that KEXINIT
must be the peer's first packet, nothing but kex messages may arrive during
the first exchange, and each NEWKEYS resets the sequence number of its
direction for the rest of the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hashike.proto.certs import Certificate, host_key_table, plain_algorithm, public_key_from_blob
from hashike.proto.ciphers import make_opener, make_sealer
from hashike.proto.config import TransportConfig
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import KeyExchangeFailed, LocalProtocolError, RemoteProtocolError, SSHError
from hashike.proto.events import (
    DebugReceived,
    Disconnected,
    Event,
    ExtInfoReceived,
    HostKeyReceived,
    KexCompleted,
    PeerVersionReceived,
    PongReceived,
    UnimplementedReceived,
)
from hashike.proto.ext_info import (
    DEFAULT_PEER_MAX_PACKET,
    EXT_MAX_PACKET,
    decode_ext_info,
    encode_ext_info,
    peer_max_packet,
)
from hashike.proto.hostkey import HostKeySigner, PublicKey
from hashike.proto.kex import KEX_METHODS
from hashike.proto.kex.base import exchange_hash, exchange_hash_input
from hashike.proto.kex.exchange import Exchange, Keys
from hashike.proto.kex.negotiate import (
    EXT_INFO_C,
    EXT_INFO_S,
    STRICT_C,
    STRICT_S,
    KexInit,
    Negotiated,
    negotiate,
)
from hashike.proto.packet import BULK_PACKET_LENGTH, MAX_PAYLOAD, PacketReader, PacketWriter
from hashike.proto.transport_states import ENDED, Phase, State
from hashike.proto.version import PeerVersion, VersionParser, identification_line
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_string, encode_uint32

__all__ = [
    "DEFAULT_PEER_MAX_PACKET",
    "ENDED",
    "EXT_MAX_PACKET",
    "MAX_DEFERRED_BYTES",
    "MAX_HELD_INPUT",
    "MAX_UNSENT_BYTES",
    "Deliver",
    "State",
    "Transport",
]

# Upper-layer messages queued while a kex runs (RFC 4253 §7.1). The runtime
# stops reading its sockets while ``send_blocked`` is true, so this bound is
# only reached by a runtime that ignores it.
MAX_DEFERRED_BYTES = 16 * 1024 * 1024
_CHANNEL_DATA = int(MsgType.CHANNEL_DATA)
# Our output the runtime has not taken (data_to_send) beyond which input is
# held rather than processed, and the unprocessed input beyond which a peer
# that keeps sending is disconnected (see Transport.input_held).
MAX_UNSENT_BYTES = 1024 * 1024
MAX_HELD_INPUT = 1024 * 1024
# Non-kex packets a peer may send during one rekey: data in flight before it
# saw our KEXINIT, and what PuTTY sends inside its own exchange.
MAX_PACKETS_DURING_REKEY = 16384
# IGNORE/DEBUG/UNIMPLEMENTED packets tolerated inside the first exchange.
MAX_CHATTER_DURING_KEX = 256

Deliver = Callable[[int, memoryview], None]


class Transport:
    """One side of the transport layer. Owned by a Client/ServerConnection."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        is_client: bool,
        rng: Callable[[int], bytes],
        deliver: Deliver,
        events: list[Event],
        host_keys: Sequence[HostKeySigner] = (),
        host_certificates: Sequence[Certificate] = (),
    ) -> None:
        self.config = config
        self.is_client = is_client
        self._rng = rng
        self._deliver = deliver
        # The owner's CHANNEL_DATA handler, once authenticated: the data path.
        self.data_handler: Callable[[memoryview], None] | None = None
        self._events = events
        self._host_keys = host_key_table(host_keys, host_certificates)
        if not is_client and not self._host_key_algorithms():
            raise LocalProtocolError("server has no host key for any configured host key algorithm")
        self.state = State.VERSION
        self._version = VersionParser(peer_is_server=is_client)
        self._our_version = identification_line(config.software_version)
        self._peer_version: PeerVersion | None = None
        self._prefix = self._our_version
        self._writer = PacketWriter(rng)
        self._reader = PacketReader()
        self.session_id: bytes | None = None
        self.server_host_key: PublicKey | None = None
        self.negotiated: Negotiated | None = None
        self.strict = False
        self.peer_max_packet = DEFAULT_PEER_MAX_PACKET
        self.peer_extensions: dict[str, bytes] = {}
        self._kex: Exchange | None = None
        self._kex_count = 0
        self._deferred: list[tuple[bytes, bytes]] = []
        self._deferred_bytes = 0
        self._last_kex_at: float | None = None
        # Input waits while our output is over MAX_UNSENT_BYTES (see _hold_input).
        self.input_held = False
        # receive_buffer()'s while the version lines are read (RFC 4253 §4.2).
        self._scratch = bytearray()
        self._into_scratch = False
        self._enter(Phase.INITIAL)
        self._start_kex()

    # ----------------------------------------------------------------- input

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self.state in ENDED:
            return
        try:
            if self.state is State.VERSION:
                done = self._version.feed(data)
                if done is None:
                    return
                self._peer_version, data = done
                self._events.append(
                    PeerVersionReceived(
                        software=self._peer_version.software,
                        comments=self._peer_version.comments,
                        banner_lines=self._peer_version.banner_lines,
                    )
                )
                self.state, self._scratch = State.KEXINIT_SENT, bytearray()  # an idle connection keeps none
            self._reader.feed(data)
            self._process_input()
        except SSHError as exc:
            self.fail(exc)

    def receive_buffer(self) -> memoryview:
        """Where the runtime may receive the next bytes (``recv_into``), for
        :meth:`receive_into`: packets are opened where they land. Before the
        version exchange ends (and after the end), a scratch buffer."""
        self._into_scratch = self.state is State.VERSION or self.state in ENDED
        if not self._into_scratch:
            return self._reader.buffer()
        self._scratch = self._scratch or bytearray(4096)
        return memoryview(self._scratch)

    def receive_into(self, n: int) -> None:
        """``n`` bytes were written at the start of the last :meth:`receive_buffer`."""
        if self._into_scratch:
            with memoryview(self._scratch) as scratch:
                self.receive_data(scratch[:n])
            return
        try:
            self._reader.commit(n)
            self._process_input()
        except SSHError as exc:
            self.fail(exc)

    def _process_input(self) -> None:
        """Dispatch every complete packet, unless our unsent output is over
        MAX_UNSENT_BYTES: then hold the rest until the runtime takes it (a peer
        that asks for replies and never reads them must not make us queue
        without bound, the CVE-2025-26466 class). The data path pays one
        comparison per packet."""
        reader, writer = self._reader, self._writer
        data_handler, data = self.data_handler, False
        self.input_held = False
        while self.state not in ENDED:
            if writer.pending > MAX_UNSENT_BYTES:
                self._hold_input()
                break
            payload = reader.next_payload()
            if payload is None:
                break
            if payload[0] == _CHANNEL_DATA and data_handler is not None and self.state is State.OPEN:
                # The data path: CHANNEL_DATA once OPEN goes to the owner without
                # the table; the rekey limit (§9) is checked once per batch.
                data_handler(payload)
                data = True
            else:
                self._dispatch(payload)
        if data:
            self._maybe_rekey()

    def _hold_input(self) -> None:
        self.input_held = True
        held = self._reader.buffered
        if held > MAX_HELD_INPUT:
            # The runtime kept feeding us although we held input: both bounds overrun.
            raise RemoteProtocolError(
                f"peer sent {held} bytes without reading the {self._writer.pending} bytes we queued for it"
            )

    @property
    def input_buffered(self) -> int:
        """Input bytes fed but not processed yet: a partial packet, or input held."""
        return self._reader.buffered

    def accept_bulk_packets(self) -> None:
        """Accept packets up to BULK_PACKET_LENGTH, as our EXT_INFO announced.
        The owner calls this once user authentication has succeeded; until then
        the peer gets OpenSSH's bound (MAX_PACKET_LENGTH)."""
        self._reader.max_length = BULK_PACKET_LENGTH

    def receive_eof(self) -> None:
        if self.state not in ENDED:
            self.state = State.CLOSED
            self._events.append(
                Disconnected(
                    reason=DisconnectReason.CONNECTION_LOST,
                    description="Connection closed",
                    by_peer=True,
                    eof=True,
                )
            )

    def fail(self, exc: SSHError) -> None:
        """End the connection because of ``exc``: queue DISCONNECT with its
        reason and enter the ERROR state."""
        if self.state in ENDED:
            return
        reason = getattr(exc, "reason", DisconnectReason.PROTOCOL_ERROR)
        self.disconnect(int(reason), str(exc))
        self.state = State.ERROR

    def disconnect(self, reason: int, description: str) -> None:
        """RFC 4253 §11.1: send DISCONNECT and stop processing anything."""
        if self.state in ENDED:
            return
        self._writer.write(
            encode_byte(MsgType.DISCONNECT)
            + encode_uint32(reason)
            + encode_string(description)
            + encode_string(b"")
        )
        self.state = State.CLOSED
        self._events.append(Disconnected(reason=reason, description=description, by_peer=False))

    def data_to_send(self) -> bytes | memoryview:
        prefix, self._prefix = self._prefix, b""
        return prefix + self._writer.take() if prefix else self._writer.take()

    # ------------------------------------------------------------- dispatch

    def _dispatch(self, payload: memoryview) -> None:
        msg = payload[0]
        handler = self._table.get((self.state, msg))
        if handler is None:
            raise RemoteProtocolError(self._unexpected(msg))
        handler(self, payload)

    def _unexpected(self, msg: int) -> str:
        """Why the pair (state, ``msg``) is not in the table."""
        if msg in _KEX_MESSAGES:
            if self.state is State.OPEN:
                return f"unexpected key exchange message {msg}"
            return f"unexpected key exchange message {msg} in state {self.state.value}"
        if self._phase is Phase.STRICT:
            return f"strict kex: unexpected message {msg} during initial key exchange"
        if self._phase is Phase.INITIAL:
            return f"unexpected message {msg} before the first key exchange completed"
        return f"unexpected message {msg} during key exchange"

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self._table = _TABLES[self.is_client, phase]

    def _count_chatter(self, limit: int) -> None:
        """RFC 4253 §7.1: one more non-kex message inside this exchange; at most ``limit``."""
        kex = self._kex
        assert kex is not None
        kex.chatter += 1
        if kex.chatter > limit:
            raise RemoteProtocolError("too many non-kex messages during key exchange")

    def send_unimplemented(self) -> None:
        """RFC 4253 §11.4: answer the packet just received with UNIMPLEMENTED."""
        seq = (self._reader.seq - 1) & 0xFFFFFFFF
        self._writer.write(encode_byte(MsgType.UNIMPLEMENTED) + encode_uint32(seq))

    # Each handler below takes the payload, message number included. Those of
    # non-kex messages end by checking the rekey limits (RFC 4253 §9).

    def _on_upper(self, payload: memoryview) -> None:
        """Service, authentication and connection messages: the owner's. The data path."""
        self._deliver(payload[0], payload)
        self._maybe_rekey()

    def _on_reserved(self, payload: memoryview) -> None:
        """RFC 4253 §11.4: a transport number we do not know."""
        self.send_unimplemented()
        self._maybe_rekey()

    def _on_disconnect(self, payload: memoryview) -> None:
        # RFC 4253 §11.1; allowed in every state, kex or not.
        r = Reader(payload, 1)
        reason = r.uint32()
        description = r.string().decode("utf-8", "replace")
        r.string()  # language tag
        self.state = State.CLOSED
        self._events.append(Disconnected(reason=reason, description=description, by_peer=True))

    def _on_ignore(self, payload: memoryview) -> None:
        self._maybe_rekey()  # RFC 4253 §11.2: nothing else

    def _on_debug(self, payload: memoryview) -> None:
        # RFC 4253 §11.3
        r = Reader(payload, 1)
        always = r.boolean()
        message = r.string().decode("utf-8", "replace")
        r.string()
        r.check_end()
        self._events.append(DebugReceived(message=message, always_display=always))
        self._maybe_rekey()

    def _on_unimplemented(self, payload: memoryview) -> None:
        # RFC 4253 §11.4
        r = Reader(payload, 1)
        seq = r.uint32()
        r.check_end()
        kex = self._kex
        if kex is not None and seq == kex.kexinit_seq:
            # OpenSSH's sshd answers a KEXINIT sent before authentication
            # this way; waiting would hang the connection for ever.
            raise KeyExchangeFailed(
                "peer refused key re-exchange (it may allow it only after authentication)"
            )
        self._events.append(UnimplementedReceived(seq=seq))
        self._maybe_rekey()

    def _on_ext_info(self, payload: memoryview) -> None:
        # RFC 8308 §2.4: only as the first packet after the first NEWKEYS
        # (the reader counts packets from each NEWKEYS on).
        if self._kex_count != 1 or self._reader.packets != 1:
            raise RemoteProtocolError("EXT_INFO outside the places RFC 8308 §2.4 allows")
        extensions = decode_ext_info(payload)
        self.peer_extensions.update(extensions)
        self.peer_max_packet = peer_max_packet(extensions)
        self._events.append(ExtInfoReceived(extensions=extensions))
        self._maybe_rekey()

    def _on_ping(self, payload: memoryview) -> None:
        # OpenSSH PROTOCOL §1.9. The PONG echoes the data: it must fit in a
        # packet we can send.
        r = Reader(payload, 1)
        data = r.string(MAX_PAYLOAD - 5)
        r.check_end()
        self.send(encode_byte(MsgType.PONG) + encode_string(data))
        self._maybe_rekey()

    def _on_pong(self, payload: memoryview) -> None:
        r = Reader(payload, 1)
        data = r.string()
        r.check_end()
        self._events.append(PongReceived(data=data))
        self._maybe_rekey()

    # --------------------------------------------------------------- output

    @property
    def send_blocked(self) -> bool:
        """True while a kex runs: upper-layer sends are queued, not sent."""
        return self._kex is not None or self.state in ENDED

    @property
    def pending_bytes(self) -> int:
        return self._writer.pending + self._deferred_bytes

    def send(self, payload: bytes | bytearray | memoryview, data: bytes | memoryview = b"") -> None:
        """Send one upper-layer message (payload followed by data)."""
        if self.state in ENDED:
            raise LocalProtocolError("connection is closed")
        size = len(payload) + len(data)
        if size > MAX_PAYLOAD:
            raise LocalProtocolError(f"message of {size} bytes exceeds the largest packet ({MAX_PAYLOAD})")
        if self._kex is not None:
            if self._deferred_bytes + size > MAX_DEFERRED_BYTES:
                raise LocalProtocolError("send queue full during key exchange")
            self._deferred.append((bytes(payload), bytes(data)))
            self._deferred_bytes += size
            return
        self._writer.write(payload, data)
        self._maybe_rekey()

    def reserve(self, offset: int, n: int) -> memoryview | None:
        """Room in the next packet's payload (:meth:`PacketWriter.reserve`),
        or None while sends are blocked (a kex queues them, RFC 4253 §7.1)."""
        if self.send_blocked:
            return None
        return self._writer.reserve(offset, n)

    def send_reserved(self, head: bytes, n: int) -> None:
        """Send ``head`` then the ``n`` bytes written into the last :meth:`reserve`."""
        if self.send_blocked:
            raise LocalProtocolError("cannot send a reserved packet while sends are blocked")
        self._writer.write(head, reserved=n)
        self._maybe_rekey()

    def send_ignore(self, data: bytes = b"") -> None:
        if len(data) > MAX_PAYLOAD - 5:
            raise LocalProtocolError(f"IGNORE of {len(data)} bytes exceeds the largest packet")
        self._writer.write(encode_byte(MsgType.IGNORE) + encode_string(data))
        self._maybe_rekey()

    def send_debug(self, message: str, always_display: bool = False) -> None:
        self._writer.write(
            encode_byte(MsgType.DEBUG)
            + encode_bool(always_display)
            + encode_string(message)
            + encode_string(b"")
        )

    def send_ping(self, data: bytes = b"") -> None:
        if "ping@openssh.com" not in self.peer_extensions:
            raise LocalProtocolError("peer does not support ping@openssh.com")
        self.send(encode_byte(MsgType.PING) + encode_string(data))

    # ------------------------------------------------------------- rekeying

    def replace_host_keys(self, signers: Sequence[HostKeySigner]) -> None:
        """Server: sign later exchanges with stand-ins for the same host keys."""
        by_key = {signer.public_key: signer for signer in signers}  # KeyError for one missing
        self._host_keys = {alg: (by_key[key.public_key], k_s) for alg, (key, k_s) in self._host_keys.items()}

    def start_rekey(self) -> None:
        """Begin a key re-exchange (RFC 4253 §9). No-op if one is running."""
        if self.state is State.OPEN:
            self._start_kex()

    def handle_timer(self, now: float) -> None:
        """Called by the runtime now and then with the current time, so that
        RekeyLimit's time part can trigger a rekey."""
        if self._last_kex_at is None:
            self._last_kex_at = now
        elif self.state is State.OPEN and now - self._last_kex_at >= self.config.rekey_seconds:
            self._last_kex_at = now
            self._start_kex()

    def _maybe_rekey(self) -> None:
        limit = self.config.rekey_bytes
        if self.state is State.OPEN and (self._writer.bytes >= limit or self._reader.bytes >= limit):
            self._start_kex()

    # ------------------------------------------------------------ key exchange

    def _host_key_algorithms(self) -> tuple[str, ...]:
        if self.is_client:
            return self.config.host_key_algorithms
        return tuple(alg for alg in self.config.host_key_algorithms if alg in self._host_keys)

    def _start_kex(self) -> None:
        first = self._kex_count == 0
        kex_names = self.config.kex_algorithms
        if first:
            # RFC 8308 §2.1 and PROTOCOL §1.10 markers go in the first KEXINIT only.
            kex_names = (
                (*kex_names, EXT_INFO_C, STRICT_C) if self.is_client else (*kex_names, EXT_INFO_S, STRICT_S)
            )
        macs = self.config.macs
        init = KexInit(
            cookie=self._rng(16),
            kex=kex_names,
            host_key=self._host_key_algorithms(),
            cipher_c2s=self.config.ciphers,
            cipher_s2c=self.config.ciphers,
            mac_c2s=macs,
            mac_s2c=macs,
        )
        payload = init.encode()
        self._kex = Exchange(payload, self._writer.seq)
        self._writer.write(payload)
        if self.state is State.OPEN:
            self.state = State.KEXINIT_SENT

    def _on_peer_kexinit(self, payload: memoryview) -> None:
        self._start_kex()
        self._on_kexinit(payload)

    def _on_kexinit(self, payload: memoryview) -> None:
        kex = self._kex
        assert kex is not None
        if kex.peer is not None:
            raise RemoteProtocolError("second KEXINIT during one key exchange")
        peer_payload = bytes(payload)
        peer = KexInit.decode(peer_payload)
        ours = KexInit.decode(kex.ours)
        client, server = (ours, peer) if self.is_client else (peer, ours)
        first = self._kex_count == 0
        negotiated = negotiate(client, server, we_are_client=self.is_client, first_kex=first)
        if first:
            self.strict = negotiated.strict
            if self.strict and self._reader.packets != 1:
                # PROTOCOL §1.10: KEXINIT must be the very first packet.
                raise RemoteProtocolError("strict kex: KEXINIT was not the first packet")
            if self.strict:
                self._enter(Phase.STRICT)
        if negotiated.kex not in KEX_METHODS:
            raise KeyExchangeFailed(f"no matching key exchange method: {negotiated.kex}")
        kex.peer = peer_payload
        kex.negotiated = negotiated
        kex.skip_guess = peer.first_kex_follows and not negotiated.guess_was_right
        self.state = State.AWAIT_ECDH
        if self.is_client:
            method = KEX_METHODS[negotiated.kex]
            kex.client = method.start(self._rng)
            self._writer.write(encode_byte(MsgType.KEX_ECDH_INIT) + encode_string(kex.client.public))

    def _versions(self) -> tuple[bytes, bytes]:
        assert self._peer_version is not None
        ours = self._our_version.rstrip(b"\r\n")
        peer = self._peer_version.line
        return (ours, peer) if self.is_client else (peer, ours)

    def _kexinits(self, kex: Exchange) -> tuple[bytes, bytes]:
        assert kex.peer is not None
        return (kex.ours, kex.peer) if self.is_client else (kex.peer, kex.ours)

    def _on_kex_method(self, payload: memoryview) -> None:
        """Server, AWAIT_ECDH: any message of a kex method (30-49)."""
        kex = self._kex
        assert kex is not None
        if kex.skip_guess:
            # RFC 4253 §7: the client's packet after a wrongly guessed KEXINIT
            # is ignored, whichever method it was for.
            kex.skip_guess = False
        elif payload[0] == MsgType.KEX_ECDH_INIT:
            self._on_ecdh_init(payload)
        else:
            raise RemoteProtocolError(self._unexpected(payload[0]))

    def _on_ecdh_init(self, payload: memoryview) -> None:
        """Server: RFC 5656 §4 / RFC 8731 §3 — answer the client's value."""
        kex = self._kex
        assert kex is not None and kex.negotiated is not None
        r = Reader(payload, 1)
        q_c = r.string(4096)
        r.check_end()
        method = KEX_METHODS[kex.negotiated.kex]
        q_s, k = method.reply(q_c, self._rng)
        # negotiate() chose from _host_key_algorithms(): the table has it.
        key, k_s = self._host_keys[kex.negotiated.host_key]
        v_c, v_s = self._versions()
        i_c, i_s = self._kexinits(kex)
        h = exchange_hash(method, exchange_hash_input(v_c, v_s, i_c, i_s, k_s, q_c, q_s, k))
        # PROTOCOL.certkeys: K_S may be a certificate; the certified key
        # still signs, in its plain format.
        signature = key.sign(h, plain_algorithm(kex.negotiated.host_key))
        self._writer.write(
            encode_byte(MsgType.KEX_ECDH_REPLY)
            + encode_string(k_s)
            + encode_string(q_s)
            + encode_string(signature)
        )
        kex.keys = (k, h)
        self._send_newkeys()

    def _on_ecdh_reply(self, payload: memoryview) -> None:
        """Client: check the server's signature over H, then send NEWKEYS."""
        kex = self._kex
        assert kex is not None and kex.negotiated is not None and kex.client is not None
        r = Reader(payload, 1)
        k_s = r.string(16 * 1024)
        q_s = r.string(4096)
        signature = r.string(16 * 1024)
        r.check_end()
        host_key = public_key_from_blob(k_s)  # a plain key or a certificate
        method = KEX_METHODS[kex.negotiated.kex]
        k = kex.client.finish(q_s)
        v_c, v_s = self._versions()
        i_c, i_s = self._kexinits(kex)
        h = exchange_hash(method, exchange_hash_input(v_c, v_s, i_c, i_s, k_s, kex.client.public, q_s, k))
        if not host_key.verify(signature, h, (kex.negotiated.host_key,)):
            raise KeyExchangeFailed("incorrect signature on the key exchange hash")
        if self.server_host_key is None:
            self.server_host_key = host_key
            self._events.append(
                HostKeyReceived(
                    key=host_key, algorithm=kex.negotiated.host_key, fingerprint=host_key.fingerprint()
                )
            )
        elif host_key != self.server_host_key:
            raise KeyExchangeFailed("server host key changed during re-exchange")
        kex.keys = (k, h)
        self._send_newkeys()

    def _derived(self, kex: Exchange) -> tuple[Keys, Keys]:
        """RFC 4253 §7.2: the first H names the session for ever."""
        assert kex.keys is not None
        if self.session_id is None:
            self.session_id = kex.keys[1]
        return kex.derive(self.session_id)

    def _send_newkeys(self) -> None:
        kex = self._kex
        assert kex is not None and kex.negotiated is not None
        self._writer.write(encode_byte(MsgType.NEWKEYS))
        c2s, s2c = self._derived(kex)
        n = kex.negotiated
        cipher, mac, (iv, key, mac_key) = (
            (n.cipher_c2s, n.mac_c2s, c2s) if self.is_client else (n.cipher_s2c, n.mac_s2c, s2c)
        )
        self._writer.set_sealer(make_sealer(cipher, mac, key, iv, mac_key), reset_seq=self.strict)
        if self._kex_count == 0 and n.peer_wants_ext_info:
            # RFC 8308 §2.4: EXT_INFO goes right after our first NEWKEYS.
            self._writer.write(encode_ext_info(self.is_client))
        self.state = State.AWAIT_NEWKEYS

    def _on_newkeys(self, payload: memoryview) -> None:
        kex = self._kex
        assert kex is not None and kex.negotiated is not None
        if len(payload) != 1:
            raise RemoteProtocolError("malformed NEWKEYS")
        c2s, s2c = self._derived(kex)
        n = kex.negotiated
        cipher, mac, (iv, key, mac_key) = (
            (n.cipher_s2c, n.mac_s2c, s2c) if self.is_client else (n.cipher_c2s, n.mac_c2s, c2s)
        )
        self._reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=self.strict)
        initial = self._kex_count == 0
        if initial:
            self._enter(Phase.ESTABLISHED)
        self._kex_count += 1
        self._kex = None
        self.negotiated = n
        self.state = State.OPEN
        self._last_kex_at = None
        self._events.append(KexCompleted(negotiated=n, initial=initial))
        deferred, self._deferred, self._deferred_bytes = self._deferred, [], 0
        for head, data in deferred:
            self._writer.write(head, data)


# ===================================================== the dispatch table

_Handler = Callable[[Transport, memoryview], None]
_Table = dict[tuple[State, int], _Handler]
_KEX_STATES = (State.KEXINIT_SENT, State.AWAIT_ECDH, State.AWAIT_NEWKEYS)
_KEX_MESSAGES = range(20, 50)  # RFC 4250 §4.1.2
# RFC 4253 §7.1: the transport's own messages, which may come in any exchange.
_GENERIC = (MsgType.IGNORE, MsgType.DEBUG, MsgType.UNIMPLEMENTED)

# Every non-kex message once keys are in use (RFC 4253 §11, RFC 8308,
# PROTOCOL §1.9); 5, 6 and 50-255 go to the owner.
_OPEN_ROW: dict[int, _Handler] = {
    **{msg: Transport._on_upper for msg in range(256) if msg not in _KEX_MESSAGES},
    **{msg: Transport._on_reserved for msg in (0, *range(8, 20))},
    MsgType.DISCONNECT: Transport._on_disconnect,
    MsgType.IGNORE: Transport._on_ignore,
    MsgType.UNIMPLEMENTED: Transport._on_unimplemented,
    MsgType.DEBUG: Transport._on_debug,
    MsgType.EXT_INFO: Transport._on_ext_info,
    MsgType.PING: Transport._on_ping,
    MsgType.PONG: Transport._on_pong,
}


def _counted(limit: int, handler: _Handler) -> _Handler:
    """``handler`` for a non-kex message inside an exchange, at most ``limit`` per exchange."""

    def during_kex(transport: Transport, payload: memoryview) -> None:
        transport._count_chatter(limit)
        handler(transport, payload)

    return during_kex


def _kex_rows(is_client: bool) -> _Table:
    """RFC 4253 §7-8, RFC 5656 §4: each exchange message in the state that awaits it."""
    table: _Table = {
        (State.KEXINIT_SENT, MsgType.KEXINIT): Transport._on_kexinit,
        (State.AWAIT_NEWKEYS, MsgType.NEWKEYS): Transport._on_newkeys,
        **{(state, MsgType.DISCONNECT): Transport._on_disconnect for state in _KEX_STATES},
    }
    if is_client:
        table[State.AWAIT_ECDH, MsgType.KEX_ECDH_REPLY] = Transport._on_ecdh_reply
    else:
        # RFC 4253 §7: after a wrong guess the client's next packet of any
        # kex method (30-49) is skipped, so the server takes all of them.
        table.update({(State.AWAIT_ECDH, msg): Transport._on_kex_method for msg in range(30, 50)})
    return table


def _rekey_rows() -> _Table:
    """What the peer may send during a rekey (see the module docstring)."""
    # Until the peer's KEXINIT, anything: it may not have seen ours yet.
    table = {(State.KEXINIT_SENT, msg): handler for msg, handler in _OPEN_ROW.items()}
    # After it the peer is inside its own exchange. RFC 4253 §7.1 forbids it
    # SERVICE_REQUEST/ACCEPT even there, and RFC 8308 §2.4 places EXT_INFO
    # elsewhere; the rest is what OpenSSH accepts (PuTTY's CHANNEL_CLOSE).
    inside = (MsgType.SERVICE_REQUEST, MsgType.SERVICE_ACCEPT, MsgType.EXT_INFO)
    for state in (State.AWAIT_ECDH, State.AWAIT_NEWKEYS):
        table.update({(state, msg): handler for msg, handler in _OPEN_ROW.items() if msg not in inside})
    return {
        pair: _counted(MAX_PACKETS_DURING_REKEY, handler)
        for pair, handler in table.items()
        if pair[1] != MsgType.DISCONNECT  # the kex rows take it
    }


def _table(is_client: bool, phase: Phase) -> _Table:
    table = _kex_rows(is_client)
    if phase is Phase.ESTABLISHED:
        table.update({(State.OPEN, msg): handler for msg, handler in _OPEN_ROW.items()})
        table[State.OPEN, MsgType.KEXINIT] = Transport._on_peer_kexinit  # RFC 4253 §9: the peer rekeys
        table.update(_rekey_rows())
    elif phase is Phase.INITIAL:
        table.update(
            {
                (state, msg): _counted(MAX_CHATTER_DURING_KEX, _OPEN_ROW[msg])
                for state in _KEX_STATES
                for msg in _GENERIC
            }
        )
    # Strict kex: nothing but kex messages in the first exchange (PROTOCOL §1.10).
    return table


# (client?, phase) -> ((state, message) -> handler). A pair not listed is a protocol error.
_TABLES: dict[tuple[bool, Phase], _Table] = {
    (is_client, phase): _table(is_client, phase) for is_client in (True, False) for phase in Phase
}
