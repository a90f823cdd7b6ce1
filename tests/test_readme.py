"""The README's library example runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_library_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "kex: mlkem768x25519-sha256" in result.stdout
    assert re.search(r"forwarding port \d+", result.stdout)
    assert "SSH-2.0-hashike" in result.stdout
    assert re.search(r"remote port \d+ b'SSH-2.0-hashike", result.stdout), result.stdout
    assert "through the tunnel: b'hop\\n'" in result.stdout, result.stdout
