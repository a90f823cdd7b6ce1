"""sshd_config's keepalive keywords: ClientAliveInterval, ClientAliveCountMax
and TCPKeepAlive, their sshd defaults and messages, and the runtime options
hashiked makes of them."""

from __future__ import annotations

import pytest

from hashike.aio.keepalive import KeepaliveOptions
from hashike.cli.server import _server_options
from hashike.config.sshd_config import COMMAND_LINE, ConfigError, parse_server_config


def test_defaults_are_sshds() -> None:
    settings = parse_server_config(None)
    assert (settings.client_alive_interval, settings.client_alive_count_max) == (0, 3)
    assert settings.tcp_keep_alive
    assert _server_options(settings).keepalive == KeepaliveOptions(0, 3, True)


def test_values_and_first_wins() -> None:
    settings = parse_server_config(
        None,
        ["ClientAliveInterval 2m", "ClientAliveCountMax 5", "TCPKeepAlive no", "ClientAliveInterval 9"],
    )
    assert (settings.client_alive_interval, settings.client_alive_count_max) == (120, 5)
    assert _server_options(settings).keepalive == KeepaliveOptions(120, 5, False)


def test_count_max_zero_probes_without_disconnecting() -> None:
    # sshd_config(5): "Setting a zero ClientAliveCountMax disables connection termination."
    settings = parse_server_config(None, ["ClientAliveInterval 15", "ClientAliveCountMax 0"])
    assert _server_options(settings).keepalive == KeepaliveOptions(15, None, True)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ClientAliveInterval 1x", "invalid time value."),
        ("ClientAliveCountMax -1", "ClientAliveCountMax integer value invalid."),
        ("ClientAliveCountMax 99999999999", "ClientAliveCountMax integer value invalid."),
        ("TCPKeepAlive maybe", 'unsupported option "maybe".'),
    ],
)
def test_bad_values(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_server_config(None, [line])
    assert str(caught.value).startswith(f"{COMMAND_LINE} line 0: ")
    assert message in str(caught.value)
