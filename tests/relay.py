"""``python relay.py HOST PORT``: stdin to a TCP connection, the connection to
stdout (a ProxyCommand for tests, in the manner of ``nc HOST PORT``)."""

from __future__ import annotations

import os
import socket
import sys
import threading


def main() -> None:
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))

    def upstream() -> None:
        while data := os.read(0, 65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    while data := conn.recv(65536):
        os.write(1, data)


if __name__ == "__main__":
    main()
