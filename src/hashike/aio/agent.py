"""The client side of the ssh-agent protocol (draft-miller-ssh-agent §3, §4.4,
§4.5), over the Unix socket in ``SSH_AUTH_SOCK``.

Only what authentication needs: list the agent's keys and ask it to sign.
Every reply is bounded before it is read, and a key blob the agent sends that
hashike cannot parse is skipped rather than trusted.
"""

from __future__ import annotations

import asyncio
import os
import struct

from hashike.proto.certs import plain_algorithm, public_key_from_blob
from hashike.proto.errors import DecodeError, SSHError
from hashike.proto.hostkey import KeyFormatError, PublicKey
from hashike.proto.wire import Reader, encode_byte, encode_string, encode_uint32

__all__ = ["AgentClient", "AgentError"]

# Message numbers (draft-miller-ssh-agent §6.1) and sign flags (§4.5.1).
SSH_AGENT_FAILURE = 5
SSH_AGENTC_REQUEST_IDENTITIES = 11
SSH_AGENT_IDENTITIES_ANSWER = 12
SSH_AGENTC_SIGN_REQUEST = 13
SSH_AGENT_SIGN_RESPONSE = 14
SSH_AGENT_RSA_SHA2_256 = 2
SSH_AGENT_RSA_SHA2_512 = 4

MAX_REPLY = 256 * 1024  # OpenSSH's agent caps messages the same way
MAX_KEYS = 1024
TIMEOUT = 30.0


class AgentError(SSHError):
    """The agent could not be reached, refused, or answered nonsense."""


class AgentClient:
    """One connection to an ssh-agent. Use as ``async with``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, path: str | None = None) -> AgentClient:
        path = path or os.environ.get("SSH_AUTH_SOCK")
        if not path:
            raise AgentError("SSH_AUTH_SOCK is not set")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise AgentError(f"Error connecting to agent: {exc.strerror or exc}") from None
        return cls(reader, writer)

    async def _call(self, request: bytes) -> tuple[int, Reader]:
        async with self._lock:
            try:
                self._writer.write(encode_uint32(len(request)) + request)
                await self._writer.drain()
                (length,) = struct.unpack(">I", await asyncio.wait_for(self._reader.readexactly(4), TIMEOUT))
                if not 1 <= length <= MAX_REPLY:
                    raise AgentError(f"agent reply of {length} bytes")
                body = await asyncio.wait_for(self._reader.readexactly(length), TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                raise AgentError(f"agent connection failed: {exc}") from None
        return body[0], Reader(body, 1)

    async def identities(self) -> list[tuple[PublicKey, str]]:
        """The keys the agent holds, with their comments, in the agent's order."""
        kind, r = await self._call(encode_byte(SSH_AGENTC_REQUEST_IDENTITIES))
        if kind != SSH_AGENT_IDENTITIES_ANSWER:
            raise AgentError("agent refused to list its keys")
        keys: list[tuple[PublicKey, str]] = []
        try:
            count = r.uint32()
            if count > MAX_KEYS:
                raise AgentError(f"agent lists {count} keys")
            for _ in range(count):
                blob = r.string()
                comment = r.string().decode("utf-8", "replace")
                try:
                    keys.append((public_key_from_blob(blob), comment))
                except KeyFormatError:
                    continue  # a key type we do not speak (e.g. a security key)
            r.check_end()
        except DecodeError as exc:
            raise AgentError(f"malformed agent reply: {exc}") from None
        return keys

    async def sign(self, key: PublicKey, data: bytes, algorithm: str) -> bytes:
        """The agent's signature blob over ``data`` with ``algorithm``."""
        # A certificate signs as its key does: the flags name the plain algorithm.
        flags = {"rsa-sha2-256": SSH_AGENT_RSA_SHA2_256, "rsa-sha2-512": SSH_AGENT_RSA_SHA2_512}.get(
            plain_algorithm(algorithm), 0
        )
        request = encode_byte(SSH_AGENTC_SIGN_REQUEST) + encode_string(key.blob) + encode_string(data)
        kind, r = await self._call(request + encode_uint32(flags))
        if kind != SSH_AGENT_SIGN_RESPONSE:
            raise AgentError("agent refused operation")
        try:
            signature = r.string()
            r.check_end()
        except DecodeError as exc:
            raise AgentError(f"malformed agent reply: {exc}") from None
        return signature

    def close(self) -> None:
        self._writer.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
