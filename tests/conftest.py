"""Fixtures shared across the test tree."""

from __future__ import annotations

import faulthandler
import os
import socket
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO

import pytest

# pytest-timeout fails a test after its timeout by raising in the main
# thread, which cannot happen while that thread waits in C (a lock held by
# a blocked reader, say). Past the timeout and this grace, faulthandler
# writes every thread's stack to WATCHDOG_LOG and ends the run, so a hang
# costs minutes and says where, instead of the whole CI budget.
WATCHDOG_GRACE = 60.0
WATCHDOG_LOG = Path(os.environ.get("HASHIKE_WATCHDOG_LOG", ".pytest-watchdog.log"))
_watchdog_file: list[IO[str]] = []
_reporter: list[pytest.TerminalReporter] = []


def _test_timeout(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    timeout = _test_timeout(item)
    if timeout > 0:
        if not _watchdog_file:
            _watchdog_file.append(WATCHDOG_LOG.open("w"))
        log = _watchdog_file[0]
        log.write(f"watchdog: {item.nodeid} ran past {timeout:.0f} s + {WATCHDOG_GRACE:.0f} s\n")
        log.flush()
        faulthandler.dump_traceback_later(timeout + WATCHDOG_GRACE, exit=True, file=log)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        if _watchdog_file:  # empty again: the file has text only after a hang
            _watchdog_file[0].seek(0)
            _watchdog_file[0].truncate()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Print a failure when it happens, not only in the summary at the end:
    a run cut short (the watchdog, CI's time limit) still says what failed."""
    if report.failed:
        for reporter in _reporter:
            reporter.write_line("")
            reporter.write_line(f"FAILED at once: {report.nodeid} ({report.when})")
            for line in report.longreprtext.splitlines()[-40:]:
                reporter.write_line(f"    {line}")


def pytest_configure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        _reporter.append(reporter)


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[str]:
    """OpenSSH's ssh-agent on a private socket; yields the socket path once
    the agent accepts connections (the socket file exists a moment before)."""
    path = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded by the deadline
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("ssh-agent did not start") from None
                time.sleep(0.01)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)
