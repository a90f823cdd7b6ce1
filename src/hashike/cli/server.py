"""``hashiked``: the server, with sshd's option syntax where it applies.

It runs in the foreground, prints one line once it is listening (addresses,
port, host key fingerprints) and logs to stderr: ``-d`` adds debug lines.
Every startup failure is one line and exit status 255, as with sshd.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hashike.aio.keepalive import KeepaliveOptions
from hashike.aio.keys_command import KeysCommand
from hashike.aio.listen import BindError
from hashike.aio.server import Server, ServerOptions
from hashike.aio.server_auth import PasswordFileError, load_password_file
from hashike.aio.server_stats import snapshot_of
from hashike.aio.server_status import Snapshot, StatusError, StatusServer
from hashike.aio.service import Notifier, ServiceError, listen_sockets
from hashike.config.sshd_config import (
    DEFAULT_LISTEN_HOSTS,
    ConfigError,
    ServerSettings,
    auth_methods,
    forwarding_policy,
    listen_endpoints,
    parse_server_config,
    session_policy,
    transport_config,
)
from hashike.keys.keypair import (
    KeyFileError,
    generate_private_key,
    load_private_key,
    load_public_key_file,
    write_private_key,
)
from hashike.keys.textfile import read_bounded
from hashike.proto.certs import Certificate
from hashike.proto.config import TransportConfig
from hashike.proto.hostkey import PrivateKey

from .usage import UsageParser
from .workers import ReloadError, Supervisor, serve_worker, worker_channel, worker_count

__all__ = ["main"]

EXIT_FAILURE = 255
EXIT_USAGE = 1  # sshd's, for a usage error
DEFAULT_HOST_KEY = Path("~/.hashike/ssh_host_ed25519_key")
MAX_BANNER = 64 * 1024  # the core's limit on a banner's text

log = logging.getLogger("hashike.server")


class _Fatal(Exception):
    """A startup failure: one line for the user, exit 255."""


def _parser() -> UsageParser:
    # sshd's usage(): its version, then the usage text, exit 1.
    p = UsageParser(
        status=EXIT_USAGE,
        preamble=TransportConfig().software_version,
        prog="hashiked",
        add_help=False,
        usage="hashiked [-d] [-f config_file] [-h host_key_file] [-O ctl_cmd] [-o option] [-p port]",
        description="hashike's SSH server. Options follow sshd(8); it runs in the foreground "
        "and, unlike sshd, listens on loopback only unless ListenAddress says otherwise.",
        epilog="With no host key, hashiked creates ~/.hashike/ssh_host_ed25519_key on first start.",
    )
    p.add_argument("-d", dest="debug", action="count", default=0, help="debug output to stderr (repeatable)")
    p.add_argument(
        "-f", dest="config", metavar="config_file", help="read sshd_config keywords from this file"
    )
    p.add_argument(
        "-h",
        dest="host_keys",
        metavar="host_key_file",
        action="append",
        default=[],
        help="host key (repeatable)",
    )
    p.add_argument(
        "-o",
        dest="options",
        metavar="option",
        action="append",
        default=[],
        help="Keyword=value, as in sshd_config",
    )
    p.add_argument(
        "-O",
        dest="ctl_cmd",
        metavar="ctl_cmd",
        choices=["status"],
        help="status: ask the running hashiked on its StatusSocket, and exit",
    )
    p.add_argument(
        "-p", dest="port", metavar="port", help="port to listen on (default 22; 0 picks a free one)"
    )
    p.add_argument("--help", action="help", help="show this help and exit")
    return p


def _load_host_keys(settings: ServerSettings, extra: list[str]) -> list[PrivateKey]:
    paths = [*extra, *settings.host_key_files]
    if not paths:
        default = DEFAULT_HOST_KEY.expanduser()
        if not default.exists():
            default.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private_key(generate_private_key("ssh-ed25519", comment="hashiked host key"), default)
            log.warning("generated a new ed25519 host key: %s", default)
        paths = [str(default)]
    keys = []
    for path in paths:
        try:
            keys.append(load_private_key(os.path.expanduser(path)))
        except KeyFileError as exc:
            raise _Fatal(f"Unable to load host key: {exc}") from None
    return keys


def _read_banner(path: str) -> str:
    try:
        data, more = read_bounded(os.path.expanduser(path), MAX_BANNER)
    except OSError as exc:
        raise _Fatal(f"Banner {path}: {exc.strerror or exc}") from None
    if more:
        raise _Fatal(f"Banner {path}: larger than {MAX_BANNER} bytes")
    return data.decode("utf-8", "replace")


def _check_password_file(path: str) -> None:
    """Read the PasswordFile once at startup, so a missing file is a startup
    error rather than a surprise at the first login (it is read again at
    every attempt, so edits apply without a restart)."""
    warnings: list[tuple[int, str]] = []
    try:
        load_password_file(path, warnings)
    except PasswordFileError as exc:
        raise _Fatal(str(exc)) from None
    for lineno, message in warnings:
        log.warning("%s line %d: %s: ignored", path, lineno, message)


def _keys_command(settings: ServerSettings) -> KeysCommand | None:
    if not settings.authorized_keys_command:
        return None
    return KeysCommand(argv=settings.authorized_keys_command, user=settings.authorized_keys_command_user)


def _server_options(settings: ServerSettings) -> ServerOptions:
    """The runtime's options for these settings; files named by them
    (PasswordFile, Banner) are read now. Raises _Fatal."""
    methods = auth_methods(settings)
    password_file = None if settings.password_file is None else os.path.expanduser(settings.password_file)
    if password_file is not None:
        _check_password_file(password_file)
    if settings.password_authentication and password_file is None:
        log.warning("PasswordAuthentication yes has no effect without a PasswordFile")
    if not methods:
        log.warning("no authentication method is enabled: nobody can log in")
    return ServerOptions(
        transport=transport_config(settings),
        login_grace_time=settings.login_grace_time,
        max_startups=settings.max_startups,
        per_source_max_startups=settings.per_source_max_startups,
        per_source_net_block_size=settings.per_source_net_block_size,
        penalties=settings.per_source_penalties,
        penalty_exempt=settings.per_source_penalty_exempt_list,
        auth_methods=methods,
        max_auth_tries=settings.max_auth_tries,
        authorized_keys_files=settings.authorized_keys_files,
        password_file=password_file,
        trusted_user_ca_keys=settings.trusted_user_ca_keys,
        revoked_keys=None if settings.revoked_keys is None else os.path.expanduser(settings.revoked_keys),
        keys_command=_keys_command(settings),
        authorized_principals_file=settings.authorized_principals_file,
        allow_users=settings.allow_users or None,
        banner=None if settings.banner is None else _read_banner(settings.banner),
        forwarding=forwarding_policy(settings),
        sessions=session_policy(settings),
        keepalive=KeepaliveOptions(
            settings.client_alive_interval,
            # sshd: "a zero ClientAliveCountMax disables connection termination".
            settings.client_alive_count_max or None,
            settings.tcp_keep_alive,
        ),
        privilege_separation=settings.privilege_separation,
    )


def _load_host_certificates(settings: ServerSettings, keys: list[PrivateKey]) -> tuple[Certificate, ...]:
    """HostCertificate: each must certify one of the host keys. One that
    cannot be used is logged and skipped, in sshd's words, as sshd does."""
    found = []
    for path in settings.host_certificate_files:
        try:
            cert = load_public_key_file(os.path.expanduser(path))
        except KeyFileError as exc:
            log.error('Could not load host certificate "%s": %s', path, exc)
            continue
        if not isinstance(cert, Certificate):
            log.error("Certificate file is not a certificate: %s", path)
        elif not any(key.public_key == cert.key for key in keys):
            log.error("No matching private key for certificate: %s", path)
        else:
            log.debug("host certificate: %s %s", cert.key_type, path)
            found.append(cert)
    return tuple(found)


def _check_privileges(settings: ServerSettings) -> None:
    """PrivilegeSeparation switches to the logged-in user's account: only root can."""
    if settings.privilege_separation and os.geteuid() != 0:
        raise _Fatal(f"PrivilegeSeparation yes needs root; hashiked runs as uid {os.geteuid()}")


def _full_options(settings: ServerSettings, keys: list[PrivateKey]) -> ServerOptions:
    return replace(_server_options(settings), host_certificates=_load_host_certificates(settings, keys))


def _reloader(args: argparse.Namespace, overrides: list[str]) -> Callable[[], tuple[ServerOptions, int]]:
    """SIGHUP's check of the configuration and host keys (cli/workers.py)."""

    def reload() -> tuple[ServerOptions, int]:
        try:
            settings = parse_server_config(args.config, overrides)
            _check_privileges(settings)
            return _full_options(settings, _load_host_keys(settings, args.host_keys)), worker_count(settings)
        except (ConfigError, _Fatal, KeyFileError, ValueError) as exc:
            raise ReloadError(str(exc)) from None

    return reload


async def _serve(
    settings: ServerSettings,
    keys: list[PrivateKey],
    argv: list[str],
    reload: Callable[[], tuple[ServerOptions, int]],
) -> None:
    channel = worker_channel()
    if channel is not None:
        await serve_worker(
            channel, Server(keys, _full_options(settings, keys)), settings.worker_drain_timeout
        )
        return
    options = _full_options(settings, keys)
    endpoints = list(listen_endpoints(settings))
    count = worker_count(settings)
    server: Server | Supervisor = (
        Server(keys, options) if count == 1 else Supervisor(argv, options, count, reload)
    )
    status = await _status_socket(settings, server)
    notifier = Notifier.from_environment()
    try:
        handed = listen_sockets()  # systemd's socket activation, instead of ListenAddress
    except ServiceError as exc:
        raise _Fatal(str(exc)) from None
    if handed:
        await server.adopt(handed)
    else:
        await _bind(server, settings, endpoints)
    where = " and ".join(f"{host} port {port}" for host, port in server.sockets)
    fingerprints = ", ".join(f"{k.public_key.fingerprint()} ({k.key_type})" for k in keys)
    print(f"hashiked: listening on {where}; host key {fingerprints}", flush=True)
    notifier.ready(f"listening on {where}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = loop.create_task(_watchdog(notifier))
    await stop.wait()
    watchdog.cancel()
    notifier.stopping("shutting down")
    if status is not None:
        status.close()
    server.close()
    await server.wait_closed()


async def _status_socket(settings: ServerSettings, server: Server | Supervisor) -> StatusServer | None:
    """StatusSocket, listening before the server does; the supervisor's asks its workers."""
    if settings.status_socket is None:
        return None
    snapshot: Snapshot
    if isinstance(server, Supervisor):
        snapshot = server.status
    else:
        snapshot = server.snapshot = snapshot_of(server)
    status = StatusServer(os.path.expanduser(settings.status_socket), snapshot)
    try:
        await status.start()
    except StatusError as exc:
        raise _Fatal(str(exc)) from None
    return status


async def _bind(
    server: Server | Supervisor, settings: ServerSettings, endpoints: list[tuple[str, int]]
) -> None:
    # The default ::1 is skipped on a machine without IPv6; anything the user
    # asked for is required.
    optional = () if settings.listen_addresses else DEFAULT_LISTEN_HOSTS[1:]
    try:
        await server.start(endpoints, optional=optional)
    except BindError as exc:
        hint = ""
        if exc.errno == errno.EACCES and exc.port < 1024:
            hint = f" Ports below 1024 need root; use a port of 1024 or more, e.g. -p {exc.port + 40000}."
        raise _Fatal(f"{exc}{hint}") from None


async def _watchdog(notifier: Notifier) -> None:
    """WatchdogSec: the event loop proves it runs, twice per period (sd_watchdog_enabled(3))."""
    if notifier.watchdog is None:
        return
    while True:  # until cancelled at shutdown
        notifier.alive()
        await asyncio.sleep(notifier.watchdog / 2)


class _Formatter(logging.Formatter):
    """sshd's stderr style: ``debug1: ...`` for debug lines, plain otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"debug1: {text}" if record.levelno <= logging.DEBUG else text


def _control(settings: ServerSettings) -> int:
    """``-O status``: the running server's status, from its StatusSocket."""
    from .server_status import show_server

    if settings.status_socket is None:
        raise _Fatal("-O status: no StatusSocket in the configuration")
    return show_server(
        os.path.expanduser(settings.status_socket), as_json=False, watch=False, prog="hashiked"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("hashike")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    overrides = list(args.options)
    if args.port is not None:
        overrides.insert(0, f"Port {args.port}")
    try:
        settings = parse_server_config(args.config, overrides)
        if args.ctl_cmd is not None:
            return _control(settings)
        _check_privileges(settings)
        keys = _load_host_keys(settings, args.host_keys)
        argv = sys.argv[1:] if argv is None else argv
        asyncio.run(_serve(settings, keys, argv, _reloader(args, overrides)))
    except (ConfigError, _Fatal, KeyFileError) as exc:
        print(f"hashiked: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
