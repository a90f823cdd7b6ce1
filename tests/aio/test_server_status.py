"""The status socket's runtime in-process (aio/server_status.py): a reply
trimmed to its bound, a stale socket replaced and a live one refused, and the
supervisor's gathering from workers, one of them gone."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from hashike.aio.server_status import (
    WORKER_MESSAGE,
    StatusError,
    StatusServer,
    answer_on,
    gather,
    query,
    reply_for,
)
from hashike.proto import server_status as ss

WAIT = 10.0


def test_a_reply_too_large_keeps_the_oldest_connections_and_says_so() -> None:
    document = {"schema": 1, "connections": [{"user": "u" * 1000, "n": i} for i in range(1000)]}
    reply = reply_for(document)
    assert isinstance(reply, ss.StatusReply)
    assert len(reply.document.encode()) <= ss.MAX_DOCUMENT
    trimmed = json.loads(reply.document)
    assert trimmed["truncated"] is True
    assert 0 < len(trimmed["connections"]) < 1000
    assert [c["n"] for c in trimmed["connections"]] == list(range(len(trimmed["connections"])))


async def _document() -> dict[str, Any]:
    return {"schema": 1, "connections": [{"user": "alice"}]}


async def test_query_a_stale_socket_is_replaced_a_live_one_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "s")
    (tmp_path / "run").mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a dead server's
    server = StatusServer(path, _document)
    await server.start()
    try:
        assert await asyncio.wait_for(query(path), WAIT) == await _document()
        with pytest.raises(StatusError, match="another server is listening on it"):
            await StatusServer(path, _document).start()
    finally:
        server.close()
    assert not Path(path).exists()
    with pytest.raises(StatusError, match="No such file or directory"):
        await query(path)


async def test_gather_merges_workers_and_lists_one_that_is_gone() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    gone, gone_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    gone_theirs.close()
    answered = loop.create_future()

    def worker() -> None:  # as serve_worker's message(): the message, then one descriptor
        data, fds, _, _ = socket.recv_fds(theirs, 512, 1)
        assert data == WORKER_MESSAGE and len(fds) == 1
        answered.set_result(loop.create_task(answer_on(socket.socket(fileno=fds[0]), _document)))

    loop.add_reader(theirs, worker)
    try:
        document = await asyncio.wait_for(gather([(11, ours), (12, gone)]), WAIT)
        await asyncio.wait_for(await answered, WAIT)
    finally:
        loop.remove_reader(theirs)
        for sock in (ours, theirs, gone):
            sock.close()
    assert document["workers"] == [11, 12]
    assert document["connections"] == [{"user": "alice"}]
    (error,) = document["errors"]
    assert error["pid"] == 12 and error["error"].startswith("worker channel: ")
