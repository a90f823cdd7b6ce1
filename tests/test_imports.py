"""The one import direction, checked by what an import really loads.

lint-imports checks hashike's own import statements; these tests import a
layer in a fresh interpreter and look at ``sys.modules``, so they also see
what the standard library and ``cryptography`` pull in on their own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A fresh interpreter imports the module named in argv[1] and prints every
# module then loaded, one per line.
_PROBE = "import importlib, sys\nimportlib.import_module(sys.argv[1])\nprint('\\n'.join(sys.modules))\n"


def loaded_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        # What a user's interpreter loads: not coverage's start-up (CI measures
        # child processes through these variables, and coverage loads socket).
        env={k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))},
    )
    assert result.returncode == 0, result.stderr
    modules = set(result.stdout.split())
    assert module in modules
    return modules


@pytest.mark.parametrize("module", ["hashike.proto", "hashike.proto.connection"])
def test_the_core_loads_no_event_loop_sockets_or_randomness(module: str) -> None:
    # The sans-IO core: the runtime owns the loop and the sockets, and
    # randomness is injected (rng=). (``time`` and ``random`` cannot be
    # checked here: the interpreter and cryptography load them themselves.)
    assert loaded_by(module) & {"asyncio", "socket", "secrets"} == set()


@pytest.mark.parametrize(
    "module", ["hashike.config.sshd_config", "hashike.config.policy", "hashike.config.ssh_config"]
)
def test_parsing_config_loads_no_event_loop_or_child_processes(module: str) -> None:
    assert loaded_by(module) & {"asyncio", "subprocess"} == set()


@pytest.mark.parametrize("module", ["hashike.config.sshd_config", "hashike.config.policy"])
def test_parsing_server_config_loads_no_terminal_handling(module: str) -> None:
    # The server's policy is plain data: the session runtime (ptys, termios)
    # stays in hashike.aio.
    assert "termios" not in loaded_by(module)


def test_the_probe_sees_what_the_runtime_loads() -> None:
    """The checks above can fail: the runtime does load what the core must not."""
    assert {"asyncio", "socket", "secrets"} <= loaded_by("hashike.aio.client")
