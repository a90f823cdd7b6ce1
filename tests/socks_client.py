"""A minimal SOCKS client for the tests: the request bytes of each protocol
and a helper that runs a CONNECT over asyncio streams."""

from __future__ import annotations

import asyncio
import ipaddress

__all__ = [
    "HOSTILE_HANDSHAKES",
    "HOSTILE_IDS",
    "socks4_request",
    "socks5_connect",
    "socks5_greeting",
    "socks5_request",
]


def socks5_greeting(*methods: int) -> bytes:
    offered = methods or (0,)
    return bytes((5, len(offered), *offered))


def socks5_request(host: str, port: int, command: int = 1) -> bytes:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode()
        dst = bytes((3, len(name))) + name
    else:
        dst = bytes((1 if address.version == 4 else 4,)) + address.packed
    return bytes((5, command, 0)) + dst + port.to_bytes(2, "big")


def socks4_request(
    host: str, port: int, *, by_name: bool = False, user: bytes = b"", command: int = 1
) -> bytes:
    """SOCKS4 (an IPv4 address) or, ``by_name``, SOCKS4A (0.0.0.1 and the name)."""
    ip = b"\0\0\0\1" if by_name else ipaddress.IPv4Address(host).packed
    tail = host.encode() + b"\0" if by_name else b""
    return bytes((4, command)) + port.to_bytes(2, "big") + ip + user + b"\0" + tail


async def socks5_connect(
    proxy_port: int, host: str, port: int
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """Greet, ask for CONNECT; (the reply code, the streams)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(socks5_greeting())
    assert await asyncio.wait_for(reader.readexactly(2), 30) == b"\x05\x00"
    writer.write(socks5_request(host, port))
    reply = await asyncio.wait_for(reader.readexactly(10), 30)
    assert reply[0] == 5 and reply[2:] == b"\0\1\0\0\0\0\0\0"
    return reply[1], reader, writer


# Handshakes a SOCKS server must refuse, each with the answer it owes (empty
# where there is nothing to answer in): for -D and for reverse dynamic -R.
HOSTILE_HANDSHAKES = [
    (b"\x06\x01\x00", b""),  # no such version: nothing to answer in
    (socks5_greeting(2), b"\x05\xff"),  # no method we accept
    (
        socks5_greeting() + socks5_request("127.0.0.1", 80, command=2),
        b"\x05\x00\x05\x07\x00\x01" + bytes(6),
    ),
    (socks4_request("127.0.0.1", 80, command=2), b"\x00\x5b" + bytes(6)),
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 300, b"\x00\x5b" + bytes(6)),  # endless user id
    (b"\x05\x02\x00", b""),  # EOF in the middle of the greeting
]
HOSTILE_IDS = ["version", "methods", "socks5-bind", "socks4-bind", "huge-userid", "truncated"]
