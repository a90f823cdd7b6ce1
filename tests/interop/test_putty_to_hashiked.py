"""PuTTY's ``plink`` -> the ``hashiked`` command.

plink never prompts here: the host key is given with ``-hostkey`` (its SHA256
fingerprint), the user key is a ``.ppk`` that ``puttygen`` made from an
OpenSSH key, and ``-batch`` turns any prompt into a failure. plink has no
command-line option for its rekey limit, so it comes from a saved session
(``-load``) in a private HOME: PuTTY on Unix keeps sessions as
``~/.putty/sessions/NAME``, one ``Key=value`` a line.

Both programs come from Debian (``putty-tools``, installed by
scripts/install.sh). Without them the tests skip, unless
``HASHIKE_REQUIRE_INTEROP=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import find_binary, interop_required
from tests.interop.test_forward_openssh_to_hashiked import Hashiked, keygen, public_line, start_hashiked

pytestmark = pytest.mark.interop

DEADLINE = 60.0  # one plink run
RUNS = 20
REKEY_BYTES = "64K"
SESSION = "hashike-rekey"


def require_putty() -> dict[str, str]:
    """Paths of plink and puttygen; skip without them, or fail when interop is required."""
    paths = {name: shutil.which(name) for name in ("plink", "puttygen")}
    missing = sorted(name for name, path in paths.items() if path is None)
    if missing:
        message = f"PuTTY programs not found: {', '.join(missing)} (Debian: putty-tools)"
        if interop_required():
            pytest.fail(f"HASHIKE_REQUIRE_INTEROP is set but {message}", pytrace=False)
        pytest.skip(message)
    return {name: path for name, path in paths.items() if path is not None}


def fingerprint(key: Path) -> str:
    """``SHA256:...`` of a public key, as ``ssh-keygen -l`` prints it (and ``-hostkey`` takes it)."""
    binary = find_binary("ssh-keygen")
    assert binary is not None
    out = subprocess.run(
        [binary, "-l", "-E", "sha256", "-f", f"{key}.pub"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.split()[1]


@pytest.fixture
def putty_home(tmp_path: Path) -> Path:
    """A HOME whose saved session ``SESSION`` sets PuTTY's rekey limit."""
    sessions = tmp_path / "home" / ".putty" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / SESSION).write_text(f"RekeyBytes={REKEY_BYTES}\n")
    return tmp_path / "home"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Hashiked]:
    host_key = keygen(tmp_path / "host_ed25519")
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(client_key) + "\n")
    running = start_hashiked(tmp_path / "hashiked", host_key, authorized)
    try:
        yield running
    finally:
        running.stop()


def plink_argv(plink: str, server: Hashiked, ppk: Path, *command: str) -> list[str]:
    return [
        plink, "-load", SESSION, "-ssh", "-batch", "-v", "-noagent",
        "-P", str(server.port),
        "-l", pwd.getpwuid(os.geteuid()).pw_name,
        "-hostkey", fingerprint(server.host_key),
        "-i", str(ppk),
        "127.0.0.1", *command,
    ]  # fmt: skip


def test_plink_cat_through_its_rekeys(server: Hashiked, putty_home: Path, tmp_path: Path) -> None:
    # Issue 13, defect 10: PuTTY sends CHANNEL_CLOSE after its own
    # KEX_ECDH_INIT, before its NEWKEYS. hashiked ended 3-13 runs in 20 with
    # "unexpected message 97 during key exchange"; OpenSSH carries on.
    paths = require_putty()
    ppk = tmp_path / "id_ed25519.ppk"
    subprocess.run(
        [paths["puttygen"], str(tmp_path / "id_ed25519"), "-O", "private", "-o", str(ppk)],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    argv = plink_argv(paths["plink"], server, ppk, "cat")
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"} | {"HOME": str(putty_home)}
    data = os.urandom(1 << 20)  # 16 of PuTTY's rekeys each way
    for run in range(RUNS):
        done = subprocess.run(argv, input=data, capture_output=True, timeout=DEADLINE, env=env, check=False)
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 0, (run, stderr, server.log_text())
        assert done.stdout == data, run
        assert "Initiating key re-exchange" in stderr, stderr  # the saved session took effect
    log = server.log_text()
    assert "during key exchange" not in log, log
    server.assert_healthy()
