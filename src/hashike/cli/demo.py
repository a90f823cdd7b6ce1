"""``python -m hashike.cli.demo``: the README's first command.

It starts hashike's own server on a free loopback port with a fresh host key,
connects hashike's client to it, and shows what happened: the algorithms
negotiated, the host key checked, and the user authentication service
reached. When OpenSSH's ``ssh`` is installed, it does the same with ssh, to
show the two interoperate. Later issues grow this into the guide's
port-forwarding scenario.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import tempfile

from hashike.aio.client import connect
from hashike.aio.server import listen
from hashike.keys.keypair import generate_private_key

__all__ = ["main"]


async def _openssh(port: int) -> list[str]:
    """ssh -vvv against our server: the lines that show the handshake."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return ["(OpenSSH's ssh is not installed: skipped)"]
    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(
            ssh,
            "-F", "/dev/null", "-vvv", "-p", str(port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={tmp}/known_hosts", "-o", "IdentitiesOnly=yes",
            "-o", "IdentityFile=none", "-o", "IdentityAgent=none",
            "127.0.0.1", "true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    wanted = re.compile(
        r"kex: algorithm|kex: host key|server->client cipher|Server host key|SERVICE_ACCEPT|Permission"
    )
    return [line for line in err.decode(errors="replace").splitlines() if wanted.search(line)]


async def _run() -> int:
    key = generate_private_key("ssh-ed25519", comment="hashike demo host key")
    print("1. hashiked: a fresh ed25519 host key")
    print(f"   {key.public_key.fingerprint()}")
    async with await listen("127.0.0.1", 0, host_keys=[key]) as server:
        print(f"2. hashiked listening on 127.0.0.1 port {server.port}")

        def check(server_key: object) -> bool:
            return server_key == key.public_key

        lines: list[str] = []
        async with await connect("127.0.0.1", server.port, check_host_key=check, log=lines.append) as client:
            n = client.negotiated
            print(f"3. hashike -> hashiked: connected from {client.local_address}")
            for line in lines:
                print(f"   {line}")
            print(f"   ciphers: {n.cipher_c2s} / {n.cipher_s2c}, strict kex: {'yes' if n.strict else 'no'}")
            print("   host key matches the one generated in step 1")
            print("   reached user authentication: the ssh-userauth service was accepted")
        print("4. OpenSSH ssh -> hashiked (ssh -vvv, selected lines):")
        for line in await _openssh(server.port):
            print(f"   {line}")
    print("Done. (User authentication and forwarding come with the next issues.)")
    return 0


def main() -> int:
    try:
        return asyncio.run(_run())
    except (TimeoutError, OSError) as exc:
        print(f"hashike demo: {exc}", file=sys.stderr)
        return 255


if __name__ == "__main__":
    sys.exit(main())
