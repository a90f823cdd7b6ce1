"""The client side of sessions without sockets or sshd: the escape state
machine, the channel streams, and Process/run() against a scripted server
that is a real channel core wired to the client's in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest

from hashike.aio.pump import CorePump, Route
from hashike.aio.session_client import (
    DRAIN_LIMIT,
    ChannelReader,
    Process,
    SessionRequestFailed,
    run,
    start_process,
)
from hashike.cli.escape import Escape, EscapeReader, help_text
from hashike.proto.channels import Channels
from hashike.proto.constants import OpenFailureReason
from hashike.proto.errors import ChannelOpenFailed, ConnectionClosed
from hashike.proto.events import (
    ChannelData,
    ChannelEofReceived,
    ChannelEvent,
    ChannelOpenRequested,
    ChannelRequestReceived,
    ChannelWindowOpened,
    Disconnected,
)
from hashike.proto.session import (
    ExitSignal,
    decode_env,
    decode_exec,
    decode_pty_req,
    decode_signal,
    decode_window_change,
    encode_exit_signal,
    encode_exit_status,
)

# ---------------------------------------------------------------- escapes


def feed_all(reader: EscapeReader, *chunks: bytes) -> list[bytes | Escape]:
    """Feed chunks one by one; merge adjacent bytes so splits do not matter."""
    out: list[bytes | Escape] = []
    for chunk in chunks:
        for action in reader.feed(chunk):
            if isinstance(action, bytes) and out and isinstance(out[-1], bytes):
                out[-1] += action
            else:
                out.append(action)
    return out


def every_split(data: bytes) -> list[tuple[bytes, ...]]:
    """data as one chunk, byte by byte, and cut at each position."""
    splits: list[tuple[bytes, ...]] = [(data,), tuple(data[i : i + 1] for i in range(len(data)))]
    splits += [(data[:i], data[i:]) for i in range(1, len(data))]
    return splits


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (b"~.", [Escape.DISCONNECT]),  # at the very start
        (b"ls\r~.", [b"ls\r", Escape.DISCONNECT]),
        (b"ls\n~.", [b"ls\n", Escape.DISCONNECT]),
        (b"ls\r~.dropped", [b"ls\r", Escape.DISCONNECT]),  # nothing after ~. is sent
        (b"a~.", [b"a~."]),  # not after a newline: plain text
        (b"\r~~", [b"\r~"]),  # ~~ sends one
        (b"\r~~.", [b"\r~."]),  # ... and the line is no longer at its start
        (b"\r~x", [b"\r~x"]),  # any other: both
        (b"\r~\r~.", [b"\r~\r", Escape.DISCONNECT]),  # ~ then newline: a new line starts
        (b"\r~?", [b"\r", Escape.HELP]),
        (b"\r~#", [b"\r", Escape.LIST_CONNECTIONS]),
        (b"\r~R", [b"\r", Escape.REKEY]),
        (b"\r~B", [b"\r", Escape.BREAK]),
        (b"\r~\x1a", [b"\r", Escape.SUSPEND]),
        (b"\r~?~.", [b"\r", Escape.HELP, Escape.DISCONNECT]),  # still at line start after a command
        (b"\r~#x~.", [b"\r", Escape.LIST_CONNECTIONS, b"x~."]),
        (b"~?ab\n~#cd", [Escape.HELP, b"ab\n", Escape.LIST_CONNECTIONS, b"cd"]),
        (b"x\n\n~~~.", [b"x\n\n~~."]),
        (b"no escapes at all", [b"no escapes at all"]),
        (b"", []),
    ],
)
def test_escape_sequences(typed: bytes, expected: list[bytes | Escape]) -> None:
    for chunks in every_split(typed) if typed else [(typed,)]:
        assert feed_all(EscapeReader("~"), *chunks) == expected, chunks


def test_escape_split_across_reads_is_held() -> None:
    reader = EscapeReader()
    assert reader.feed(b"echo hi\r~") == [b"echo hi\r"]
    assert reader.pending
    assert reader.feed(b"") == []
    assert reader.pending
    assert reader.feed(b".") == [Escape.DISCONNECT]
    assert not reader.pending


def test_escape_state_carries_the_line_start_across_reads() -> None:
    reader = EscapeReader()
    assert reader.feed(b"abc") == [b"abc"]
    assert reader.feed(b"~.") == [b"~."]  # "abc~." is one line
    assert reader.feed(b"\r") == [b"\r"]
    assert reader.feed(b"~.") == [Escape.DISCONNECT]


def test_escape_none_passes_everything() -> None:
    reader = EscapeReader(None)
    assert reader.feed(b"~.\r~.") == [b"~.\r~."]
    assert reader.feed(b"") == []


def test_custom_escape_character() -> None:
    reader = EscapeReader("%")
    assert feed_all(reader, b"~.\r%%", b"\r%.") == [b"~.\r%\r", Escape.DISCONNECT]
    ctrl = EscapeReader("\x1d")  # -e '^]'
    assert feed_all(ctrl, b"\x1d?\x1d.") == [Escape.HELP, Escape.DISCONNECT]


def test_long_input_is_passed_through_in_few_pieces() -> None:
    data = (b"x" * 1000 + b"~y\n") * 100  # escape chars that are not at line start
    out = EscapeReader().feed(data)
    assert out == [data]


def test_help_text_names_the_escape_character() -> None:
    text = help_text("~")
    assert text.startswith("Supported escape sequences:\r\n")
    assert " ~.   - terminate connection (and any multiplexed sessions)\r\n" in text
    assert " ~#   - list forwarded connections\r\n" in text
    assert " ~~   - send the escape character by typing it twice\r\n" in text
    assert text.endswith("(Note that escapes are only recognized immediately after newline.)\r\n")
    assert " ^].   - terminate" in help_text("\x1d")  # a control character is shown as ^X
    assert "\r" not in help_text("%", "\n")


# ---------------------------------------------------------------- ChannelReader


async def test_reader_acknowledges_only_what_is_read() -> None:
    acked: list[int] = []
    reader = ChannelReader(acked.append)
    reader.feed_data(b"hello ")
    reader.feed_data(b"world\nsecond line\n")
    assert acked == [] and len(reader) == 24
    assert await reader.read(3) == b"hel"
    assert await reader.readline() == b"lo world\n"
    assert sum(acked) == 12
    assert await reader.readexactly(6) == b"second"
    reader.feed_data(b"tail")
    reader.feed_eof()
    assert [line async for line in reader] == [b" line\n", b"tail"]
    assert reader.at_eof()
    assert sum(acked) == 28
    assert await reader.read() == b""


async def test_reader_waits_and_splits() -> None:
    reader = ChannelReader(lambda n: None)
    task = asyncio.ensure_future(reader.readuntil(b"\r\n"))
    for piece in (b"ab", b"c\r", b"\nrest"):
        await asyncio.sleep(0)
        assert not task.done()
        reader.feed_data(piece)
    assert await task == b"abc\r\n"
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await reader.readexactly(10)
    assert info.value.partial == b"rest"


async def test_reader_read_all_until_eof() -> None:
    reader = ChannelReader(lambda n: None)
    task = asyncio.ensure_future(reader.read())
    reader.feed_data(b"a")
    await asyncio.sleep(0)
    reader.feed_data(b"b")
    reader.feed_eof()
    assert await task == b"ab"
    with pytest.raises(asyncio.IncompleteReadError):
        await reader.readuntil(b"x")


# ---------------------------------------------------------------- a scripted server


def _collect(outbox: list[bytes]) -> Callable[[bytes, bytes | memoryview], None]:
    """A Channels send function that keeps each whole message."""
    return lambda head, data: outbox.append(bytes(head) + bytes(data))


class FakeServer:
    """The server end: a real channel core; ``react()`` answers its events.
    Commands: "echo TEXT" (TEXT on stdout, "err" on stderr, exit 0),
    "exit N", "cat" (echoes stdin until EOF), "flood N" (N bytes of stdout),
    "sink" (reads stdin without giving window back), "kill" (exit-signal TERM),
    "hold" (nothing until told)."""

    def __init__(self) -> None:
        self.events: list[ChannelEvent] = []
        self.outbox: list[bytes] = []
        self.channels = Channels(_collect(self.outbox), self.events)
        self.refuse_open = False
        self.pty_ok = True
        self.exec_ok = True
        self.requests: list[tuple[str, bool, bytes]] = []
        self.program: dict[int, str] = {}
        self.pending: dict[int, bytes] = {}  # output waiting for window
        self.finish_after_pending: set[int] = set()
        self.received: dict[int, int] = {}

    def react(self) -> None:
        while self.events:
            events, self.events[:] = list(self.events), []
            for event in events:
                self._event(event)

    def _event(self, event: ChannelEvent) -> None:
        ch = self.channels
        if isinstance(event, ChannelOpenRequested):
            if self.refuse_open:
                ch.reject_open(event.channel_id, OpenFailureReason.ADMINISTRATIVELY_PROHIBITED, "no sessions")
            else:
                ch.accept_open(event.channel_id)
        elif isinstance(event, ChannelRequestReceived):
            self.requests.append((event.name, event.want_reply, event.extra))
            ok = {"pty-req": self.pty_ok, "exec": self.exec_ok, "shell": self.exec_ok}.get(event.name, True)
            if event.want_reply:
                ch.reply_request(event.channel_id, ok)
            if ok and event.name in ("exec", "shell"):
                command = decode_exec(event.extra) if event.name == "exec" else "shell"
                self.program[event.channel_id] = command
                self._start(event.channel_id, command)
        elif isinstance(event, ChannelData):
            cid = event.channel_id
            self.received[cid] = self.received.get(cid, 0) + len(event.data)
            if self.program.get(cid) == "cat":
                self.output(cid, bytes(event.data))
                ch.acknowledge(cid, len(event.data))
            elif self.program.get(cid) != "sink":
                ch.acknowledge(cid, len(event.data))
        elif isinstance(event, ChannelEofReceived):
            if self.program.get(event.channel_id) == "cat":
                self.finish_after_pending.add(event.channel_id)
                self._maybe_finish(event.channel_id)
        elif isinstance(event, ChannelWindowOpened):
            self._flush_pending(event.channel_id)

    def _start(self, cid: int, command: str) -> None:
        word, _, arg = command.partition(" ")
        if word == "echo":
            self.output(cid, arg.encode() + b"\n")
            self.channels.send_data(cid, b"err\n", 1)
            self.finish(cid, 0)
        elif word == "exit":
            self.finish(cid, int(arg))
        elif word == "flood":
            self.output(cid, bytes(range(256)) * (int(arg) // 256))
            self.finish_after_pending.add(cid)
            self._maybe_finish(cid)
        elif word == "kill":
            self.finish(cid, None)

    def output(self, cid: int, data: bytes) -> None:
        self.pending[cid] = self.pending.get(cid, b"") + data
        self._flush_pending(cid)

    def _flush_pending(self, cid: int) -> None:
        data = self.pending.get(cid, b"")
        if data and cid in self.channels:
            n = self.channels.send_data(cid, data)
            self.pending[cid] = data[n:]
        self._maybe_finish(cid)

    def _maybe_finish(self, cid: int) -> None:
        if cid in self.finish_after_pending and not self.pending.get(cid):
            self.finish_after_pending.discard(cid)
            self.finish(cid, 0)

    def finish(self, cid: int, status: int | None) -> None:
        """exit-status (or exit-signal TERM), EOF, CLOSE: what sshd sends."""
        if status is None:
            sig = ExitSignal(signal="TERM", core_dumped=False, message="")
            self.channels.send_request(cid, "exit-signal", False, encode_exit_signal(sig))
        else:
            self.channels.send_request(cid, "exit-status", False, encode_exit_status(status))
        self.channels.send_eof(cid)
        self.channels.close(cid)


class _FakeCore:
    def __init__(self) -> None:
        self.closed = False
        self.events: list[Any] = []
        self.outbox: list[bytes] = []
        self.channels = Channels(_collect(self.outbox), self.events)
        self.transport = SimpleNamespace(send_blocked=False)

    def events_received(self) -> list[Any]:
        events, self.events[:] = list(self.events), []
        self.channels.recycle()
        return events

    def data_to_send(self) -> bytes:
        return b""


class LoopbackPump(CorePump[Any]):
    """A client pump whose "socket" is the fake server, message by message."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__(cast(Any, _FakeCore()))
        self.server = server
        self._busy = False

    def side_routes(self) -> dict[type, Route]:
        return {}  # the fake core emits channel events only

    def flush(self) -> None:
        if self._busy:
            return  # the loop below picks it up
        self._busy = True
        core, server = self.core, self.server
        try:
            for _ in range(100_000):  # bounded: the exchange settles long before
                if not core.outbox and not server.outbox:
                    break
                while core.outbox:
                    message = core.outbox.pop(0)
                    server.channels.handle(message[0], memoryview(message))
                server.react()
                while server.outbox:
                    message = server.outbox.pop(0)
                    core.channels.handle(message[0], memoryview(message))
                self._dispatch_events()
        finally:
            self._busy = False

    def lose_connection(self) -> None:
        self.disconnect = Disconnected(reason=11, description="gone", by_peer=True)
        self.core.closed = True
        self._close_bridges()


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def pump(server: FakeServer) -> LoopbackPump:
    return LoopbackPump(server)


async def test_run_returns_status_and_streams(pump: LoopbackPump) -> None:
    result = await run(pump, "echo hello")
    assert (result.exit_status, result.exit_signal) == (0, None)
    assert (result.stdout, result.stderr) == (b"hello\n", b"err\n")
    assert (await run(pump, "exit 3")).exit_status == 3
    assert not pump.bridges  # every session handler is gone with its channel


async def test_exit_signal(pump: LoopbackPump) -> None:
    result = await run(pump, "kill")
    assert (result.exit_status, result.exit_signal) == (None, "TERM")
    process = await start_process(pump, "kill")
    assert await process.wait() == -15
    assert process.exit_signal_info is not None and process.exit_signal_info.signal == "TERM"


async def test_cat_echoes_more_than_a_window_both_ways(pump: LoopbackPump) -> None:
    data = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 7)  # 5 MiB: beyond the 2 MiB window
    result = await run(pump, "cat", input=data)
    assert result.exit_status == 0
    assert result.stdout == data


async def test_output_window_is_granted_only_as_the_application_reads(
    pump: LoopbackPump, server: FakeServer
) -> None:
    size = 8 * 1024 * 1024
    process = await start_process(pump, f"flood {size}")
    for _ in range(20):
        await asyncio.sleep(0)
    window = pump.core.channels.window
    assert window <= len(process.stdout) < size  # the server is stuck on the window
    assert len(server.pending[process.channel_id]) >= size - len(process.stdout)
    total = 0
    for _ in range(size):  # bounded
        chunk = await process.stdout.read(65536)
        if not chunk:
            break
        assert len(process.stdout) <= window  # never more than one window buffered
        total += len(chunk)
    assert total == size
    assert await process.wait() == 0


async def test_stdin_respects_the_peer_window(pump: LoopbackPump, server: FakeServer) -> None:
    process = await start_process(pump, "sink")
    cid = process.channel_id
    peer_window = pump.core.channels.channel(cid).remote_window
    process.stdin.write(b"x" * (peer_window + 3 * DRAIN_LIMIT))
    drain = asyncio.ensure_future(process.stdin.drain())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not drain.done()
    assert server.received[server_id(server)] == peer_window  # exactly the window, no more
    assert process.stdin.get_write_buffer_size() == 3 * DRAIN_LIMIT
    # The server consumes it all: window comes back, the queue goes, drain returns.
    server.channels.acknowledge(server_id(server), peer_window)
    server.react()
    pump.flush()
    await asyncio.wait_for(drain, 10)
    assert process.stdin.get_write_buffer_size() <= DRAIN_LIMIT
    process.close()
    await process.wait()


def server_id(server: FakeServer) -> int:
    (cid,) = server.program
    return cid


async def test_requests_sent_in_order(pump: LoopbackPump, server: FakeServer) -> None:
    process = await start_process(
        pump, "exit 0", term="xterm", size=(100, 40), modes={53: 0}, env={"LANG": "C.UTF-8"}
    )
    assert process.pty
    await process.wait()
    names = [(name, want) for name, want, _ in server.requests]
    assert names == [("pty-req", True), ("env", False), ("exec", True)]
    pty = decode_pty_req(server.requests[0][2])
    assert (pty.term, pty.columns, pty.rows, pty.modes) == ("xterm", 100, 40, {53: 0})
    assert decode_env(server.requests[1][2]) == ("LANG", "C.UTF-8")
    assert decode_exec(server.requests[2][2]) == "exit 0"


async def test_window_change_and_signal(pump: LoopbackPump, server: FakeServer) -> None:
    process = await start_process(pump, None, term="vt100")
    process.change_terminal_size(132, 50)
    process.send_signal("SIGINT")
    process.send_signal(15)
    process.send_break()
    assert server.requests[-1] == ("break", False, (1000).to_bytes(4, "big"))  # RFC 4335
    tail = server.requests[-4:-1]
    assert [(n, w) for n, w, _ in tail] == [("window-change", False), ("signal", False), ("signal", False)]
    assert decode_window_change(tail[0][2]) == (132, 50, 0, 0)
    assert [decode_signal(extra) for _, _, extra in tail[1:]] == ["INT", "TERM"]
    assert server.requests[1][0] == "shell"
    process.close()
    assert await process.wait() == 255  # closed without an exit status, as ssh reports it


async def test_refusals(pump: LoopbackPump, server: FakeServer) -> None:
    server.exec_ok = False
    with pytest.raises(SessionRequestFailed, match=r"^exec request failed on channel 0$"):
        await start_process(pump, "exit 0")
    with pytest.raises(SessionRequestFailed, match=r"^shell request failed on channel \d$"):
        await start_process(pump, None)
    server.exec_ok, server.pty_ok = True, False
    process = await start_process(pump, "exit 4", term="xterm")
    assert not process.pty  # the session goes on without one, as with ssh
    assert await process.wait() == 4
    server.refuse_open = True
    with pytest.raises(ChannelOpenFailed):
        await start_process(pump, "exit 0")


async def test_connection_lost(pump: LoopbackPump) -> None:
    process = await start_process(pump, "hold")
    reading = asyncio.ensure_future(process.stdout.read())
    pump.lose_connection()
    assert await reading == b""
    with pytest.raises(ConnectionClosed):
        await process.wait()
    process.stdin.write(b"dropped")
    with pytest.raises(ConnectionResetError):
        await process.stdin.drain()
    with pytest.raises(ConnectionClosed):
        await start_process(pump, "exit 0")


async def test_write_after_eof_is_an_error(pump: LoopbackPump) -> None:
    process: Process = await start_process(pump, "cat")
    process.stdin.write(b"abc")
    process.stdin.write_eof()
    with pytest.raises(RuntimeError):
        process.stdin.write(b"more")
    assert await process.stdout.read() == b"abc"
    assert await process.wait() == 0


# ---------------------------------------------------------------- the CLI's pieces


@pytest.mark.parametrize(
    ("argv", "destination", "command", "tty"),
    [
        (["host"], "host", [], None),
        (["-t", "host"], "host", [], "yes"),
        (["-tt", "host", "tty"], "host", ["tty"], "force"),
        (["-t", "-t", "-T", "host"], "host", [], "no"),
        (["host", "-t", "ls", "-t"], "host", ["ls", "-t"], "yes"),  # options up to the command
        (["host", "-p", "2222", "-tt", "--", "-x"], "host", ["-x"], "force"),
        (["-T", "host", "-t"], "host", [], "yes"),  # ssh: the last one wins
    ],
)
def test_command_line(argv: list[str], destination: str, command: list[str], tty: str | None) -> None:
    from hashike.cli.client import _parse_args

    args = _parse_args(argv)
    assert (args.destination, args.command, args.tty) == (destination, command, tty)


@pytest.mark.parametrize(
    ("request_tty", "has_command", "stdin_tty", "want", "warned"),
    [
        ("auto", False, True, True, False),
        ("auto", True, True, False, False),
        ("auto", False, False, False, True),  # ssh host < file
        ("yes", True, True, True, False),
        ("yes", True, False, False, True),
        ("force", True, False, True, False),
        ("no", False, True, False, False),
    ],
)
def test_when_a_pty_is_requested(
    request_tty: str, has_command: bool, stdin_tty: bool, want: bool, warned: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from hashike.cli.client import _want_pty

    assert _want_pty(request_tty, has_command, stdin_tty) is want
    warning = "Pseudo-terminal will not be allocated because stdin is not a terminal.\n"
    assert capsys.readouterr().err == (warning if warned else "")


def test_terminal_modes_and_raw_mode_restore() -> None:
    import os
    import termios

    from hashike.cli.terminal import RawMode, terminal_modes, terminal_size

    master, slave = os.openpty()
    try:
        modes = terminal_modes(slave)
        attrs = termios.tcgetattr(slave)
        assert modes[53] == int(bool(attrs[3] & termios.ECHO))  # RFC 4254 §8: ECHO is 53
        assert modes[1] == attrs[6][termios.VINTR][0]  # VINTR, ^C
        assert modes[128] > 0 and modes[129] > 0  # speeds in baud
        assert terminal_size(slave) is not None
        with RawMode(slave) as raw:
            assert raw.active
            assert terminal_modes(slave)[53] == 0 and terminal_modes(slave)[51] == 0  # no ECHO, ICANON
        assert termios.tcgetattr(slave) == attrs
        null = os.open(os.devnull, os.O_RDONLY)
        assert not RawMode(null).enter()  # not a terminal: nothing done
        os.close(null)
        assert terminal_modes(-1) == {} and terminal_size(-1) is None
    finally:
        os.close(master)
        os.close(slave)
