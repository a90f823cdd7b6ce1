"""-M, -S and -O on the command line: ssh's refusals, and forwards encoded
for the mux protocol as ssh's mux client sends them (and read back by our
master the same way)."""

from __future__ import annotations

import os
import tempfile

import pytest

from hashike.cli.client import main
from hashike.cli.control import _as_forward, forward_request
from hashike.config.forward import parse_forward
from hashike.proto import mux

SOCKET = mux.SOCKET_PORT


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["-F", "none", *argv, "127.0.0.1"])
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["-O", "bogus", "-S", "/tmp/x"], "Invalid multiplex command."),
        (["-O", "check"], 'No ControlPath specified for "-O" command'),
        (["-O", "check", "-S", "none"], 'No ControlPath specified for "-O" command'),
    ],
)
def test_control_command_refusals(capsys: pytest.CaptureFixture[str], argv: list[str], line: str) -> None:
    assert run(capsys, *argv) == (255, line + "\n")


def test_socket_of_others_refused(capsys: pytest.CaptureFixture[str]) -> None:
    directory = tempfile.mkdtemp(prefix="hx", dir="/tmp")
    path = os.path.join(directory, "not-a-socket")
    try:
        open(path, "w").close()
        os.chmod(path, 0o600)
        assert run(capsys, "-S", path, "-O", "exit") == (
            255,
            f"Bad owner or permissions on control socket {path}\n",
        )
    finally:
        os.unlink(path)
        os.rmdir(directory)


@pytest.mark.parametrize(
    ("kind", "spec", "fields"),
    [
        ("local", "4000:wisdom:110", (mux.ForwardKind.LOCAL, "", 4000, "wisdom", 110)),
        ("local", "*:4000:wisdom:110", (mux.ForwardKind.LOCAL, "*", 4000, "wisdom", 110)),
        ("local", ":4000:wisdom:110", (mux.ForwardKind.LOCAL, "*", 4000, "wisdom", 110)),
        ("local", "/tmp/l:/tmp/r", (mux.ForwardKind.LOCAL, "/tmp/l", SOCKET, "/tmp/r", SOCKET)),
        ("dynamic", "localhost:1080", (mux.ForwardKind.DYNAMIC, "localhost", 1080, "", 0)),
        ("remote", "0:127.0.0.1:80", (mux.ForwardKind.REMOTE, "", 0, "127.0.0.1", 80)),
        ("remote", "8080", (mux.ForwardKind.REMOTE, "", 8080, "", 0)),
    ],
)  # fmt: skip
def test_forward_encoding(kind: str, spec: str, fields: tuple[object, ...]) -> None:
    fwd = parse_forward(kind, spec)  # type: ignore[arg-type]
    request = forward_request(fwd, 3, cancel=False)
    got = (request.kind, request.listen_host, request.listen_port, request.connect_host, request.connect_port)
    assert got == fields
    back = _as_forward(request)
    assert back is not None
    # What the master reads is the forward as given ("" and "*" both every address).
    assert back.kind == fwd.kind and back.connect_host == fwd.connect_host
    assert back.listen_port == fwd.listen_port and back.connect_socket == fwd.connect_socket


@pytest.mark.parametrize(
    ("kind", "listen", "connect"),
    [
        (mux.ForwardKind.DYNAMIC, ("/tmp/s", mux.SOCKET_PORT), ("", 0)),  # dynamic on a socket
        (mux.ForwardKind.LOCAL, ("", 4000), ("", 0)),  # local without a target
        (mux.ForwardKind.LOCAL, ("", 4000), ("h", 0)),  # local to port 0
    ],
)
def test_invalid_forwards(kind: mux.ForwardKind, listen: tuple[str, int], connect: tuple[str, int]) -> None:
    request = mux.ForwardRequest(
        request_id=1, kind=kind, listen_host=listen[0], listen_port=listen[1],
        connect_host=connect[0], connect_port=connect[1],
    )  # fmt: skip
    assert _as_forward(request) is None
