"""RFC 4254 §6 session request codecs: round trips, bounds, hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashike.proto.errors import DecodeError
from hashike.proto.session import (
    ExitSignal,
    PtyRequest,
    decode_env,
    decode_exec,
    decode_exit_signal,
    decode_exit_status,
    decode_modes,
    decode_pty_req,
    decode_signal,
    decode_subsystem,
    decode_window_change,
    encode_env,
    encode_exec,
    encode_exit_signal,
    encode_exit_status,
    encode_modes,
    encode_pty_req,
    encode_signal,
    encode_window_change,
)
from hashike.proto.wire import encode_uint32


def test_round_trips() -> None:
    pty = PtyRequest(
        term="xterm-256color", columns=132, rows=43, width_px=0, height_px=0, modes={53: 1, 128: 38400}
    )
    assert decode_pty_req(encode_pty_req(pty)) == pty
    assert decode_window_change(encode_window_change(80, 24)) == (80, 24, 0, 0)
    assert decode_env(encode_env("LANG", "C.UTF-8")) == ("LANG", "C.UTF-8")
    assert decode_exec(encode_exec("exit 3")) == "exit 3"
    assert decode_subsystem(encode_exec("sftp")) == "sftp"
    assert decode_signal(encode_signal("TERM")) == "TERM"
    assert decode_exit_status(encode_exit_status(3)) == 3
    sig = ExitSignal(signal="KILL", core_dumped=False, message="killed")
    assert decode_exit_signal(encode_exit_signal(sig)) == sig


def test_modes_stop_at_end_and_at_undefined_opcodes() -> None:
    # RFC 4254 §8: opcodes >= 160 have undefined arguments: stop there.
    assert decode_modes(encode_modes({1: 3}) + b"junk") == {1: 3}
    assert decode_modes(b"\x01" + encode_uint32(3) + b"\xa0whatever") == {1: 3}


def test_huge_dimensions_are_refused() -> None:
    with pytest.raises(DecodeError):
        decode_window_change(encode_window_change(70000, 24))


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(DecodeError):
        decode_exec(encode_exec("ls") + b"x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_hostile_bytes_only_raise_decode_error(data: bytes) -> None:
    for decode in (
        decode_pty_req,
        decode_window_change,
        decode_env,
        decode_exec,
        decode_subsystem,
        decode_signal,
        decode_exit_status,
        decode_exit_signal,
        decode_modes,
    ):
        with contextlib.suppress(DecodeError):
            decode(data)
