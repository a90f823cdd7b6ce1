"""RFC 4254 §6 session channel requests: encoders for the client, bounded
decoders for the server, and the terminal-mode encoding of §8.

Each decoder takes the request-specific bytes (``ChannelRequestReceived.extra``)
and ends with ``check_end()``; a malformed request raises DecodeError, which
the runtime answers with CHANNEL_FAILURE.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashike.proto.errors import DecodeError
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_string, encode_uint32

__all__ = [
    "ExitSignal",
    "PtyRequest",
    "decode_env",
    "decode_exec",
    "decode_exit_signal",
    "decode_exit_status",
    "decode_modes",
    "decode_pty_req",
    "decode_signal",
    "decode_subsystem",
    "decode_window_change",
    "encode_env",
    "encode_exec",
    "encode_exit_signal",
    "encode_exit_status",
    "encode_modes",
    "encode_pty_req",
    "encode_signal",
    "encode_window_change",
]

MAX_COMMAND = 64 * 1024  # generous for a shell command line
MAX_TERM = 256
MAX_MODES = 1024  # bytes of encoded terminal modes
MAX_DIMENSION = 0xFFFF  # larger sizes are refused rather than passed to ioctl


@dataclass(frozen=True, slots=True, kw_only=True)
class PtyRequest:
    """RFC 4254 §6.2: terminal type, size in characters and pixels, modes
    (opcode -> value, RFC 4254 §8)."""

    term: str
    columns: int
    rows: int
    width_px: int = 0
    height_px: int = 0
    modes: dict[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitSignal:
    """RFC 4254 §6.10: the signal name without "SIG", as "TERM"."""

    signal: str
    core_dumped: bool
    message: str


def _dims(r: Reader) -> tuple[int, int, int, int]:
    values = (r.uint32(), r.uint32(), r.uint32(), r.uint32())
    if any(v > MAX_DIMENSION for v in values):
        raise DecodeError("terminal dimensions out of range")
    return values


def encode_modes(modes: dict[int, int]) -> bytes:
    """RFC 4254 §8: opcode byte, uint32 argument, ..., TTY_OP_END (0)."""
    return b"".join(encode_byte(op) + encode_uint32(value) for op, value in modes.items()) + b"\x00"


def decode_modes(data: bytes) -> dict[int, int]:
    """Opcodes 1-159 carry a uint32; parsing stops at TTY_OP_END or at an
    opcode of 160 and above, whose arguments are undefined (RFC 4254 §8)."""
    r = Reader(data)
    modes: dict[int, int] = {}
    while r.remaining:
        op = r.byte()
        if op == 0 or op >= 160:
            break
        modes[op] = r.uint32()
    return modes


def encode_pty_req(req: PtyRequest) -> bytes:
    return (
        encode_string(req.term)
        + b"".join(encode_uint32(v) for v in (req.columns, req.rows, req.width_px, req.height_px))
        + encode_string(encode_modes(req.modes))
    )


def decode_pty_req(extra: bytes) -> PtyRequest:
    r = Reader(extra)
    term = r.ascii(MAX_TERM)
    columns, rows, width, height = _dims(r)
    modes = decode_modes(r.string(MAX_MODES))
    r.check_end()
    return PtyRequest(term=term, columns=columns, rows=rows, width_px=width, height_px=height, modes=modes)


def encode_window_change(columns: int, rows: int, width_px: int = 0, height_px: int = 0) -> bytes:
    """RFC 4254 §6.7."""
    return b"".join(encode_uint32(v) for v in (columns, rows, width_px, height_px))


def decode_window_change(extra: bytes) -> tuple[int, int, int, int]:
    r = Reader(extra)
    dims = _dims(r)
    r.check_end()
    return dims


def encode_env(name: str, value: str) -> bytes:
    """RFC 4254 §6.4."""
    return encode_string(name) + encode_string(value)


def decode_env(extra: bytes) -> tuple[str, str]:
    r = Reader(extra)
    name = r.text(1024)
    value = r.text(MAX_COMMAND)
    r.check_end()
    return name, value


def encode_exec(command: str) -> bytes:
    """RFC 4254 §6.5: also the form of "subsystem"."""
    return encode_string(command)


def decode_exec(extra: bytes) -> str:
    r = Reader(extra)
    command = r.text(MAX_COMMAND)
    r.check_end()
    return command


def decode_subsystem(extra: bytes) -> str:
    r = Reader(extra)
    name = r.ascii(256)
    r.check_end()
    return name


def encode_signal(name: str) -> bytes:
    """RFC 4254 §6.9: the name without "SIG"."""
    return encode_string(name)


def decode_signal(extra: bytes) -> str:
    r = Reader(extra)
    name = r.ascii(32)
    r.check_end()
    return name


def encode_exit_status(status: int) -> bytes:
    """RFC 4254 §6.10."""
    return encode_uint32(status & 0xFFFFFFFF)


def decode_exit_status(extra: bytes) -> int:
    r = Reader(extra)
    status = r.uint32()
    r.check_end()
    return status


def encode_exit_signal(sig: ExitSignal) -> bytes:
    return (
        encode_string(sig.signal)
        + encode_bool(sig.core_dumped)
        + encode_string(sig.message)
        + encode_string("")
    )


def decode_exit_signal(extra: bytes) -> ExitSignal:
    r = Reader(extra)
    name = r.ascii(32)
    core = r.boolean()
    message = r.text(1024)
    r.string(64)  # language tag
    r.check_end()
    return ExitSignal(signal=name, core_dumped=core, message=message)
