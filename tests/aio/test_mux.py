"""The control socket's runtime (aio/mux.py) in-process: a master with a
recording handler, and the mux client against it. What is refused: a peer of
another uid, a request before the hello, a socket that others may use or that
is not a socket, a directory others may write to, a path a master holds."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hashike.aio.mux import MuxClient, MuxError, MuxServer, check_socket_path, listen_mux
from hashike.aio.session_client import Process
from hashike.proto import mux
from hashike.proto.wire import encode_string, encode_uint32

WAIT = 20.0


@dataclass
class Recorder:
    requests: list[mux.ForwardRequest] = field(default_factory=list)
    sessions: list[mux.NewSession] = field(default_factory=list)
    terminated: bool = False
    stopped: bool = False
    allow: bool = True  # what permit() answers (ControlMaster ask)
    asked: list[object] = field(default_factory=list)
    status_size: int = 0

    async def permit(self, request: object) -> bool:
        self.asked.append(request)
        return self.allow

    async def session(self, request: mux.NewSession, fds: list[int]) -> Process | str:
        self.sessions.append(request)
        return "Session open refused by peer"

    async def forward(self, request: mux.ForwardRequest) -> mux.MuxMessage:
        self.requests.append(request)
        return mux.RemotePort(request_id=request.request_id, port=40001)

    def terminate(self) -> None:
        self.terminated = True

    def stop_listening(self) -> None:
        self.stopped = True

    def status(self) -> dict[str, Any]:
        return {"schema": 1, "forwards": [], "big": "x" * self.status_size}


@pytest.fixture
def directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hm", dir="/tmp")
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


@pytest.fixture
async def master(directory: str) -> AsyncIterator[tuple[MuxServer, Recorder]]:
    handler = Recorder()
    server = await listen_mux(os.path.join(directory, "m"), handler)
    try:
        yield server, handler
    finally:
        server.close()


async def raw_exchange(path: str, data: bytes) -> bytes:
    """Send ``data`` and read all the master says until it closes (a close
    with our bytes unread is a reset: the end too)."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    said = b""
    try:
        async with asyncio.timeout(WAIT):
            while chunk := await reader.read(1 << 16):
                said += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return said


async def test_requests_answered(master: tuple[MuxServer, Recorder]) -> None:
    server, handler = master
    assert os.stat(server.path).st_mode & 0o777 == 0o600
    async with MuxClient.connect(server.path) as client:
        alive = await client.request(mux.AliveCheck(request_id=client.request_id()))
        assert alive == mux.AliveReply(request_id=0, pid=os.getpid())
        fwd = mux.ForwardRequest(
            request_id=client.request_id(), kind=mux.ForwardKind.REMOTE, listen_host="",
            listen_port=0, connect_host="h", connect_port=1,
        )  # fmt: skip
        assert await client.request(fwd) == mux.RemotePort(request_id=1, port=40001)
        assert handler.requests == [fwd]
        assert server.clients == 1
        stop = await client.request(mux.StopListening(request_id=client.request_id()))
        assert stop == mux.Ok(request_id=2) and handler.stopped
        assert not os.path.exists(server.path) and not server.listening
        end = await client.request(mux.Terminate(request_id=client.request_id()))
        assert end == mux.Ok(request_id=3) and handler.terminated


async def test_status_answered_with_json(master: tuple[MuxServer, Recorder]) -> None:
    server, handler = master
    async with MuxClient.connect(server.path) as client:
        reply = await client.request(mux.StatusRequest(request_id=client.request_id()))
        assert isinstance(reply, mux.StatusReply) and reply.request_id == 0
        assert json.loads(reply.document) == {"schema": 1, "forwards": [], "big": ""}
        handler.status_size = mux.MAX_STATUS  # too big for one frame: refused, not cut
        big = await client.request(mux.StatusRequest(request_id=client.request_id()))
        assert big == mux.Failure(request_id=1, reason="status too large")


SESSION = mux.NewSession(
    request_id=6, want_tty=False, want_x11=False, want_agent=False, subsystem=False,
    escape_char=None, term="", command="echo hi",
)  # fmt: skip


def replies(said: bytes) -> list[mux.MuxMessage | None]:
    decoder = mux.MuxDecoder()
    decoder.feed(said)
    found = [decoder.next()]
    while found[-1] is not None:
        found.append(decoder.next())
    return found


async def test_unknown_requests_and_stdio_forwarding_refused(master: tuple[MuxServer, Recorder]) -> None:
    server, _ = master
    proxy = encode_string(encode_uint32(0x1000000F) + encode_uint32(5))  # MUX_C_PROXY
    stdio = mux.NewStdioForward(request_id=7, host="h", port=1)
    said = await raw_exchange(server.path, mux.encode(mux.Hello()) + proxy + mux.encode(stdio))
    assert replies(said) == [
        mux.Hello(),
        mux.Failure(request_id=5, reason="unsupported request"),
        mux.Failure(request_id=7, reason="not supported"),
        None,  # and the connection closed
    ]


async def test_session_descriptors(master: tuple[MuxServer, Recorder]) -> None:
    """A session's three descriptors ride on a byte each (SCM_RIGHTS); the
    handler gets the request once they are all there."""
    server, handler = master
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT)
        sock.connect(server.path)
        sock.sendall(mux.encode(mux.Hello()) + mux.encode(SESSION))
        read_end, write_end = os.pipe()
        try:
            for fd in (read_end, write_end, write_end):
                socket.send_fds(sock, [b"\0"], [fd])
        finally:
            os.close(read_end)
            os.close(write_end)
        said = await asyncio.to_thread(read_all, sock)
    assert replies(said) == [
        mux.Hello(),
        mux.Failure(request_id=6, reason="Session open refused by peer"),
        None,
    ]
    assert handler.sessions == [SESSION]


async def test_session_without_descriptors_refused(master: tuple[MuxServer, Recorder]) -> None:
    server, handler = master
    said = await raw_exchange(server.path, mux.encode(mux.Hello()) + mux.encode(SESSION) + b"\0\0\0")
    assert replies(said) == [
        mux.Hello(),
        mux.Failure(request_id=6, reason="did not receive file descriptors"),
        None,
    ]
    assert handler.sessions == []


def read_all(sock: socket.socket) -> bytes:
    said = b""
    while chunk := sock.recv(1 << 16):
        said += chunk
    return said


async def test_request_before_hello_closes(master: tuple[MuxServer, Recorder]) -> None:
    server, _ = master
    said = await raw_exchange(server.path, mux.encode(mux.AliveCheck(request_id=0)))
    assert said == mux.encode(mux.Hello())  # our hello, then nothing


async def test_hostile_length_closes(master: tuple[MuxServer, Recorder]) -> None:
    server, _ = master
    said = await raw_exchange(server.path, encode_uint32(0xFFFFFFF0) + b"x" * 100)
    assert said == mux.encode(mux.Hello())


async def test_peer_of_another_uid_refused(
    master: tuple[MuxServer, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SO_PEERCRED says the peer is us; the master is made to be someone
    else, so the peer's uid differs: no hello, the connection closed."""
    server, _ = master
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    assert await raw_exchange(server.path, mux.encode(mux.Hello())) == b""
    assert server.clients == 0


async def test_socket_path_checked(directory: str) -> None:
    path = os.path.join(directory, "s")
    with pytest.raises(MuxError, match=r"^Control socket connect\(.*\): No such file or directory$"):
        check_socket_path(path)
    open(path, "w").close()
    with pytest.raises(MuxError, match=r"^Bad owner or permissions on control socket"):
        check_socket_path(path)
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)
        os.chmod(path, 0o660)
        with pytest.raises(MuxError, match=r"^Bad owner or permissions on control socket"):
            check_socket_path(path)


async def test_master_refuses_shared_directory_and_taken_path(directory: str) -> None:
    os.chmod(directory, 0o777)  # others may write, no sticky bit: they could swap the socket
    with pytest.raises(MuxError, match=f"^Bad owner or permissions on {directory}$"):
        await listen_mux(os.path.join(directory, "m"), Recorder())
    os.chmod(directory, 0o700)
    first = await listen_mux(os.path.join(directory, "m"), Recorder())
    try:
        with pytest.raises(MuxError, match=r"already exists, disabling multiplexing$"):
            await listen_mux(first.path, Recorder())
        assert os.listdir(directory) == ["m"]  # no temporary name left behind
        async with MuxClient.connect(first.path) as client:  # the first still answers
            assert isinstance(await client.request(mux.AliveCheck(request_id=0)), mux.AliveReply)
    finally:
        first.close()


async def test_refused_requests_are_permission_denied(master: tuple[MuxServer, Recorder]) -> None:
    """What permit() refuses (the user said no) gets MUX_S_PERMISSION_DENIED
    and is not carried out; alive checks are never asked; a refused session
    ends the connection, its descriptors being still in the stream."""
    server, handler = master
    handler.allow = False
    fwd = mux.ForwardRequest(
        request_id=3, kind=mux.ForwardKind.LOCAL, listen_host="", listen_port=1,
        connect_host="h", connect_port=2,
    )  # fmt: skip
    requests = (mux.Hello(), mux.AliveCheck(request_id=2), fwd, mux.Terminate(request_id=4), SESSION)
    wire = b"".join(mux.encode(m) for m in requests)
    said = await raw_exchange(server.path, wire)
    assert replies(said) == [
        mux.Hello(),
        mux.AliveReply(request_id=2, pid=os.getpid()),
        mux.PermissionDenied(request_id=3, reason="Permission denied"),
        mux.PermissionDenied(request_id=4, reason="Permission denied"),
        mux.PermissionDenied(request_id=6, reason="Permission denied"),
        None,
    ]
    assert handler.asked == [fwd, mux.Terminate(request_id=4), SESSION]
    assert handler.requests == [] and not handler.terminated and handler.sessions == []
