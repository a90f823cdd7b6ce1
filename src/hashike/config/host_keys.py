"""The client's host key algorithms for one destination, as ssh orders them.

ssh(1) puts first, in its default HostKeyAlgorithms, the algorithms of the
keys known_hosts already holds for the host, and every certificate algorithm
when a ``@cert-authority`` line names it (sshconnect2.c order_hostkeyalgs),
so that the server offers what the client can verify. A HostKeyAlgorithms
the user configured is kept as written.
"""

from __future__ import annotations

from dataclasses import replace

from hashike.config.ssh_config import ClientSettings, transport_config
from hashike.keys.known_hosts import order_host_key_algorithms
from hashike.proto.config import DEFAULT_HOST_KEY_ALGORITHMS, TransportConfig

__all__ = ["host_transport_config"]


def host_transport_config(settings: ClientSettings) -> TransportConfig:
    """The core's TransportConfig for ``settings``, host key algorithms in ssh's order."""
    config = transport_config(settings)
    if settings.host_key_algorithms != DEFAULT_HOST_KEY_ALGORITHMS:
        return config
    files = [*settings.global_known_hosts_files, *settings.user_known_hosts_files]
    host = settings.host_key_alias or settings.hostname
    order = order_host_key_algorithms(config.host_key_algorithms, host, settings.port, files)
    return replace(config, host_key_algorithms=order)
