"""A tiny POP3 server (RFC 1939 subset) standing in for the guide's mail
server, for the demo and the tests: a greeting, USER, PASS, STAT, LIST,
RETR, QUIT. It holds one mailbox in memory; passwords travel in plain text,
which is exactly why the guide tunnels it through SSH."""

from __future__ import annotations

import asyncio
import contextlib
import sys

__all__ = ["GREETING", "MESSAGES", "Pop3Server", "start_pop3"]

GREETING = b"+OK POP3 wisdom server ready"
MESSAGES = (
    b"From: guide@example.org\r\nSubject: Welcome\r\n\r\nPort forwarding works.\r\n",
    b"From: guide@example.org\r\nSubject: Second\r\n\r\nThe tunnel lives as long as the login.\r\n",
)
MAX_LINE = 512  # RFC 1939 §3: commands are at most 255 octets; be generous


class Pop3Server:
    def __init__(self, user: str, password: str) -> None:
        self.server: asyncio.Server | None = None
        self.user = user
        self.password = password
        self.sessions = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        user: str | None = None
        authed = False
        writer.write(GREETING + b"\r\n")
        try:
            while line := await reader.readline():
                if len(line) > MAX_LINE:
                    writer.write(b"-ERR line too long\r\n")
                    break
                verb, _, arg = line.decode("ascii", "replace").strip().partition(" ")
                verb = verb.upper()
                if verb == "QUIT":
                    writer.write(b"+OK bye\r\n")
                    break
                if verb == "USER":
                    user = arg
                    writer.write(b"+OK\r\n")
                elif verb == "PASS":
                    authed = user == self.user and arg == self.password
                    writer.write(
                        b"+OK maildrop locked and ready\r\n" if authed else b"-ERR invalid password\r\n"
                    )
                elif not authed:
                    writer.write(b"-ERR not authenticated\r\n")
                elif verb == "STAT":
                    writer.write(f"+OK {len(MESSAGES)} {sum(map(len, MESSAGES))}\r\n".encode())
                elif verb == "LIST":
                    writer.write(f"+OK {len(MESSAGES)} messages\r\n".encode())
                    for i, message in enumerate(MESSAGES, 1):
                        writer.write(f"{i} {len(message)}\r\n".encode())
                    writer.write(b".\r\n")
                elif verb == "RETR" and arg.isdigit() and 1 <= int(arg) <= len(MESSAGES):
                    message = MESSAGES[int(arg) - 1]
                    writer.write(f"+OK {len(message)} octets\r\n".encode() + message + b".\r\n")
                else:
                    writer.write(b"-ERR unknown command\r\n")
                await writer.drain()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def start_pop3(
    host: str = "127.0.0.1", port: int = 0, *, user: str = "a70099a", password: str = "secret"
) -> Pop3Server:
    """Listen on ``host``:``port`` (0 picks a free port)."""
    pop3 = Pop3Server(user, password)
    pop3.server = await asyncio.start_server(pop3._serve, host, port)
    return pop3


def main() -> None:
    """``python -m hashike.cli.pop3 [port]``: serve on 127.0.0.1, print the port."""

    async def run() -> None:
        pop3 = await start_pop3(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
        print(pop3.port, flush=True)
        assert pop3.server is not None
        await pop3.server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
