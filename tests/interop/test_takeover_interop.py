"""RemoteForwardTakeover between processes (issue 10's test 6): a hashike
holding ``-R PORT`` is stopped (SIGSTOP: its connection stays open, it says
nothing); a second hashike with the same key asks hashiked for the same
port, and gets it at once, without waiting for ClientAlive*."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import DEADLINE
from tests.interop.test_keepalive import hashiked_pair, stopped
from tests.interop.test_remote_forward import answers, hashike_argv, start


@contextmanager
def tag_server(tag: bytes) -> Iterator[int]:
    """Answers every connection with ``tag``, then closes it."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(tag)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def who_answers(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        data = b""
        while chunk := sock.recv(64):
            data += chunk
        return data


def test_a_stopped_clients_port_moves_to_its_successor(tmp_path: Path) -> None:
    server, daemon = hashiked_pair(tmp_path, "RemoteForwardTakeover=yes")
    remote = free_port()
    with tag_server(b"first") as first_target, tag_server(b"second") as second_target:
        first = start(hashike_argv(server, "-R", f"{remote}:127.0.0.1:{first_target}"))
        second = None
        try:
            assert answers(remote), first.stderr
            assert who_answers(remote) == b"first"
            with stopped([first.process.pid]):
                argv = hashike_argv(
                    server,
                    "-v",
                    "-o",
                    "ExitOnForwardFailure=yes",
                    "-R",
                    f"{remote}:127.0.0.1:{second_target}",
                )
                second = start(argv)
                # Asked while the first still holds the port: granted at once.
                assert second.wait_for(f"remote forward success for: listen localhost:{remote},"), (
                    second.stderr
                )
                assert second.process.poll() is None, second.stderr  # ExitOnForwardFailure did not fire
                assert who_answers(remote) == b"second"
            log = daemon.log_text()
            assert f"remote forward localhost port {remote} taken over from an earlier connection" in log, log
            daemon.assert_healthy()
        finally:
            first.stop()
            if second is not None:
                second.stop()
            daemon.stop()
