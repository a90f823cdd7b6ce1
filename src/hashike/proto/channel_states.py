"""The states of a channel (RFC 4254 §5), what the peer may send about a
channel in each, and the snapshot :meth:`Channels.channel` returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hashike.proto.constants import MsgType

__all__ = ["CHANNEL_MESSAGES", "PEER_MAY_SEND", "Channel", "ChannelState"]


class ChannelState(enum.Enum):
    OPENING = "opening"  # we sent CHANNEL_OPEN, no answer yet
    PENDING = "pending"  # the peer sent CHANNEL_OPEN, the runtime has not answered
    OPEN = "open"
    CLOSING = "closing"  # we sent CHANNEL_CLOSE, the peer's has not arrived

    __hash__ = object.__hash__  # as transport.State's: looked up per packet


# Messages about a channel the peer may send in each of our states (RFC 4254
# §5). PENDING is the peer's own open that we have not answered: it may send
# nothing on it yet (it has no id of ours to name). In CLOSING, what races our
# CLOSE is still checked, then dropped (§5.3).
_ESTABLISHED = frozenset(
    (
        MsgType.CHANNEL_WINDOW_ADJUST,
        MsgType.CHANNEL_DATA,
        MsgType.CHANNEL_EXTENDED_DATA,
        MsgType.CHANNEL_EOF,
        MsgType.CHANNEL_CLOSE,
        MsgType.CHANNEL_REQUEST,
        MsgType.CHANNEL_SUCCESS,
        MsgType.CHANNEL_FAILURE,
    )
)
# Every message the channel table handles (RFC 4254 §4, §5); the rest of the
# connection protocol's range is unassigned (RFC 4250 §4.1.2).
CHANNEL_MESSAGES = (
    frozenset(
        (MsgType.GLOBAL_REQUEST, MsgType.REQUEST_SUCCESS, MsgType.REQUEST_FAILURE, MsgType.CHANNEL_OPEN)
    )
    | _ESTABLISHED
    | frozenset((MsgType.CHANNEL_OPEN_CONFIRMATION, MsgType.CHANNEL_OPEN_FAILURE))
)
PEER_MAY_SEND: dict[ChannelState, frozenset[int]] = {
    ChannelState.OPENING: frozenset((MsgType.CHANNEL_OPEN_CONFIRMATION, MsgType.CHANNEL_OPEN_FAILURE)),
    ChannelState.PENDING: frozenset(),
    ChannelState.OPEN: _ESTABLISHED,
    ChannelState.CLOSING: _ESTABLISHED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    """A snapshot of one channel, from :meth:`Channels.channel`."""

    channel_id: int
    kind: str
    state: ChannelState
    remote_id: int | None  # None until the peer confirmed our open
    local_window: int  # what the peer may still send us
    remote_window: int  # what we may still send the peer
    local_max_packet: int
    remote_max_packet: int
    eof_sent: bool
    eof_received: bool
    close_sent: bool
