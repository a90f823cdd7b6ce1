"""Silent exit (issue 13): every end of a connection our client did not ask
for prints one line that says why."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hashike.cli.client import _report_remote_close
from hashike.proto.constants import DisconnectReason
from hashike.proto.events import Disconnected


def report(capsys: pytest.CaptureFixture[str], event: Disconnected) -> str:
    client = SimpleNamespace(
        disconnect_event=event, remote_address=("127.0.0.1", 2222), keepalive=SimpleNamespace(timed_out=False)
    )
    settings = SimpleNamespace(hostname="example", port=2222)
    _report_remote_close(client, settings)  # type: ignore[arg-type]
    return capsys.readouterr().err


def test_silent_exit_a_protocol_error_we_detected_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    # Data beyond the window, a window-adjust overflow, a host key change at
    # rekey: the client ended the connection and exited 255 saying nothing.
    event = Disconnected(
        reason=DisconnectReason.PROTOCOL_ERROR,
        description="channel 0: WINDOW_ADJUST overflows the window\x1b[2J",
        by_peer=False,
    )
    assert report(capsys, event) == (
        "Disconnecting 127.0.0.1 port 2222: channel 0: WINDOW_ADJUST overflows the window\\x1b[2J\n"
    )


def test_silent_exit_every_end_says_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    by_server = Disconnected(
        reason=DisconnectReason.CONNECTION_LOST, description="Connection closed", by_peer=True, eof=True
    )
    assert report(capsys, by_server) == "Connection to example closed by remote host.\n"
    by_user = Disconnected(
        reason=DisconnectReason.BY_APPLICATION, description="disconnected by user", by_peer=False
    )
    assert report(capsys, by_user) == ""  # ~. or the session's end: nothing to explain


def test_silent_exit_a_servers_disconnect_is_said_in_ssh_words(capsys: pytest.CaptureFixture[str]) -> None:
    """ssh's two lines for the server's DISCONNECT (packet.c), its text escaped:
    a forged second line cannot reach the terminal."""
    event = Disconnected(
        reason=DisconnectReason.BY_APPLICATION, description="bye\nAccepted \x1b[2J", by_peer=True
    )
    assert report(capsys, event) == (
        "Received disconnect from 127.0.0.1 port 2222:11: bye\\nAccepted \\x1b[2J\n"
        "Disconnected from 127.0.0.1 port 2222\n"
    )
