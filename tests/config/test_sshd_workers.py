"""``Workers`` and ``WorkerDrainTimeout`` (hashiked's, see hashike.cli.workers)."""

from __future__ import annotations

import os

import pytest

from hashike.cli.workers import worker_count
from hashike.config.sshd_config import ConfigError, parse_server_config


def test_default_is_one_worker_per_core() -> None:
    settings = parse_server_config(None, [])
    assert (settings.workers, settings.worker_drain_timeout) == (0, 3600)
    assert worker_count(settings) == len(os.sched_getaffinity(0))


def test_one_is_one_process_and_auto_one_per_core() -> None:
    assert worker_count(parse_server_config(None, ["Workers 1"])) == 1
    settings = parse_server_config(None, ["Workers auto", "WorkerDrainTimeout 1m30s"])
    assert worker_count(settings) == len(os.sched_getaffinity(0))
    assert settings.worker_drain_timeout == 90


@pytest.mark.parametrize("value", ["0", "257", "two", "\u00b2"])
def test_bad_workers(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"Invalid Workers '{value}'\.$"):
        parse_server_config(None, [f"Workers {value}"])


def test_bad_drain_timeout() -> None:
    with pytest.raises(ConfigError, match=r"Invalid WorkerDrainTimeout 'soon'\.$"):
        parse_server_config(None, ["WorkerDrainTimeout soon"])
