"""``hashike``: the client, with OpenSSH's option syntax and messages.

    hashike [-46gNTtv] [-E log_file] [-F configfile] [-i identity_file]
            [-L address] [-l login_name] [-o option] [-p port] destination [command]

Every failure is one line on stderr and exit status 255, as with ssh:
``hashike: connect to host wisdom port 22: Connection refused``,
``Host key verification failed.``, ``alice@wisdom: Permission denied (publickey).``
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hashike.aio.agent import AgentClient, AgentError
from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, Identity, file_identity
from hashike.aio.forward import ForwardListener, Target
from hashike.config.forward import ForwardSpecError, parse_forward
from hashike.config.ssh_config import ClientSettings, ConfigError, parse_client_config, transport_config
from hashike.keys.keypair import KeyFileError, PublicKey
from hashike.keys.known_hosts import evaluate_host_key
from hashike.proto.errors import AuthenticationFailed, ConnectionClosed, HostKeyNotVerified

from .logs import setup_logging
from .terminal import ask, ask_async

__all__ = ["main"]

EXIT_FAILURE = 255
PROG = "hashike"
log = logging.getLogger("hashike.client")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        usage="hashike [-46gNTtv] [-E log_file] [-F configfile] [-i identity_file]\n"
        "               [-L address] [-l login_name] [-o option] [-p port] destination [command]",
        description="hashike's SSH client. Options, ~/.ssh/config and messages follow ssh(1).",
        epilog="Example, the guide's POP tunnel: hashike -N -L 40000:localhost:110 user@mailhost",
    )
    p.add_argument("-4", dest="family", action="store_const", const="inet", help="IPv4 addresses only")
    p.add_argument("-6", dest="family", action="store_const", const="inet6", help="IPv6 addresses only")
    p.add_argument(
        "-E", dest="log_file", metavar="log_file", help="append debug logs to log_file, not stderr"
    )
    p.add_argument(
        "-F", dest="config", metavar="configfile", help="configuration file (default ~/.ssh/config)"
    )
    p.add_argument(
        "-f", dest="background", action="store_true", help="go to the background after authentication"
    )
    p.add_argument(
        "-g", dest="gateway", action="store_true", help="let remote hosts connect to local forwards"
    )
    p.add_argument(
        "-i", dest="identities", metavar="identity_file", action="append", default=[], help="private key"
    )
    p.add_argument(
        "-L", dest="local", metavar="address", action="append", default=[],
        help="[bind_address:]port:host:hostport, and the socket forms: forward a local port",
    )  # fmt: skip
    p.add_argument("-l", dest="login", metavar="login_name", help="user to log in as")
    p.add_argument("-N", dest="no_command", action="store_true", help="no remote command: forwarding only")
    p.add_argument("-o", dest="options", metavar="option", action="append", default=[], help="Keyword=value")
    p.add_argument("-p", dest="port", metavar="port", type=int, help="port on the remote host")
    p.add_argument("-T", dest="tty", action="store_const", const="no", help="no pseudo-terminal")
    p.add_argument("-t", dest="tty", action="store_const", const="yes", help="force a pseudo-terminal")
    p.add_argument("-v", dest="verbose", action="count", default=0, help="debug messages (repeat for more)")
    p.add_argument("destination", help="[user@]hostname")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run on the remote host")
    return p


class _Fatal(Exception):
    """One line for the user, exit 255."""


@dataclass(slots=True)
class _HostKeyChecker:
    settings: ClientSettings
    auth: AuthSettings

    async def __call__(self, key: PublicKey) -> bool:
        s = self.settings
        prompt = None if s.batch_mode else (lambda text: ask(text, echo=True))
        verdict = await asyncio.to_thread(
            evaluate_host_key,
            s.host_key_alias or s.hostname,
            s.port,
            key,
            strict=s.strict_host_key_checking,
            known_hosts_files=s.user_known_hosts_files,
            global_known_hosts_files=s.global_known_hosts_files,
            err=sys.stderr,
            prompt=prompt,
            hash_known_hosts=s.hash_known_hosts,
        )
        if verdict.accepted and verdict.restricted:
            # ssh: with a changed key and StrictHostKeyChecking=no, no password
            # may be sent to what may be an impostor.
            print("Password authentication is disabled to avoid man-in-the-middle attacks.", file=sys.stderr)
            print(
                "Keyboard-interactive authentication is disabled to avoid man-in-the-middle attacks.",
                file=sys.stderr,
            )
            self.auth.methods = tuple(m for m in self.auth.methods if m == "publickey")
        return verdict.accepted


def _split_destination(destination: str, login: str | None) -> tuple[str, str | None]:
    user, at, host = destination.rpartition("@")
    return (host, login or user) if at else (destination, login)


async def _identities(settings: ClientSettings, agent: AgentClient | None) -> list[Identity]:
    found: list[Identity] = []
    if agent is not None and not settings.identities_only:
        try:
            found += [Identity(key, f"agent: {comment}") for key, comment in await agent.identities()]
        except AgentError as exc:
            log.debug("agent: %s", exc)
    for path in settings.identity_files:
        try:
            identity = await file_identity(path, ask_async)
        except KeyFileError as exc:
            print(str(exc), file=sys.stderr)  # ssh warns and goes on
            continue
        if identity is None:
            if not settings.identity_files_default:
                print(
                    f"Warning: Identity file {path} not accessible: No such file or directory.",
                    file=sys.stderr,
                )
            continue
        found.append(identity)
    return found


async def _agent(settings: ClientSettings) -> AgentClient | None:
    path = settings.identity_agent if settings.identity_agent is not None else os.environ.get("SSH_AUTH_SOCK")
    if not path or path == "none":
        return None
    try:
        return await AgentClient.connect(path)
    except AgentError as exc:
        log.debug("%s", exc)
        return None


def _methods(settings: ClientSettings) -> tuple[str, ...]:
    enabled = {
        "publickey": settings.pubkey_authentication,
        "keyboard-interactive": settings.kbd_interactive_authentication,
        "password": settings.password_authentication,
    }
    return tuple(m for m in settings.preferred_authentications if enabled.get(m, False))


async def _connect(settings: ClientSettings) -> SSHClient:
    agent = await _agent(settings)
    auth = AuthSettings(
        username=settings.user,
        identities=await _identities(settings, agent) if settings.pubkey_authentication else (),
        agent=agent,
        prompt=None if settings.batch_mode else ask_async,
        methods=_methods(settings),
        password_prompts=settings.number_of_password_prompts,
        host_label=settings.hostname,
        log=lambda line: log.debug("%s", line),
        notice=lambda line: print(line, file=sys.stderr),
    )
    family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(settings.address_family, socket.AF_UNSPEC)
    host, port = settings.hostname, settings.port
    try:
        return await connect(
            host,
            port,
            check_host_key=_HostKeyChecker(settings, auth),
            config=transport_config(settings),
            family=family,
            timeout=settings.connect_timeout,
            log=lambda line: log.debug("%s", line),
            auth=auth,
        )
    except socket.gaierror as exc:
        raise _Fatal(f"{PROG}: Could not resolve hostname {host}: {exc.strerror}") from None
    except TimeoutError:
        raise _Fatal(f"{PROG}: connect to host {host} port {port}: Connection timed out") from None
    except HostKeyNotVerified:
        raise _Fatal("") from None  # evaluate_host_key already said why
    except (AuthenticationFailed, ConnectionClosed) as exc:
        raise _Fatal(str(exc)) from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise _Fatal(f"{PROG}: connect to host {host} port {port}: {reason}") from None


def _bind_label(host: str | None, port: int | None, path: str | None) -> str:
    if path is not None:
        return path
    return f"[{'127.0.0.1' if host is None else host or '0.0.0.0'}]:{port}"


async def _start_forwards(client: SSHClient, settings: ClientSettings) -> list[ForwardListener]:
    """Set up every -L; a failure is reported as ssh reports it and is fatal
    only under ExitOnForwardFailure."""
    listeners = []
    for fwd in settings.local_forwards:
        host = fwd.listen_host
        if host in ("", "*") and not settings.gateway_ports:
            host = None  # ssh: without GatewayPorts, -L binds loopback only
        target = Target(fwd.connect_host, fwd.connect_port, fwd.connect_socket)
        try:
            listener = await client.forward_local_to(
                host, fwd.listen_port, target, listen_socket=fwd.listen_socket
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            label = _bind_label(host, fwd.listen_port, fwd.listen_socket)
            port = fwd.listen_port or 0
            if exc.errno == errno.EACCES and 0 < port < 1024:
                print(
                    f"bind {label}: Permission denied. Privileged ports can only be forwarded by root; "
                    f"use a port of 1024 or more, e.g. -L {40000 + port}:{target}.",
                    file=sys.stderr,
                )
            else:
                print(f"bind {label}: {reason}", file=sys.stderr)
                print(f"channel_setup_fwd_listener_tcpip: cannot listen to port: {port}", file=sys.stderr)
            if settings.exit_on_forward_failure:
                raise _Fatal("Could not request local forwarding.") from None
            print("Could not request local forwarding.", file=sys.stderr)
            continue
        bound = _bind_label(host, listener.port, fwd.listen_socket)
        log.debug("Local connections to %s forwarded to remote address %s", bound, target)
        listeners.append(listener)
    return listeners


def _background() -> None:
    """-f: ssh goes to the background once authenticated and forwarding is
    set up. The parent exits 0 at once; the child carries on the connection."""
    if os.fork():
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)


async def _session(
    settings: ClientSettings, no_command: bool, command: Sequence[str], background: bool
) -> int:
    # Handlers first: a TERM during login must still end us cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    client = await _connect(settings)
    host, port = settings.hostname, settings.port
    log.debug('Authenticated to %s ([%s]:%d) using "%s".', host, host, port, client.auth_method)
    listeners = await _start_forwards(client, settings)
    if not no_command:
        print(
            f"{PROG}: remote commands and shells are not implemented yet; "
            "keeping the connection up as -N would.",
            file=sys.stderr,
        )
    if background:
        _background()
    closed = asyncio.ensure_future(client.wait_closed())
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({closed, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    for listener in listeners:
        listener.close()
    if not closed.done():
        client.close()
        await client.wait_closed()
        return 0
    event = client.disconnect_event
    if event is not None and event.by_peer:
        print(f"Connection to {settings.hostname} closed by remote host.", file=sys.stderr)
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO, args.log_file)
    host, user = _split_destination(args.destination, args.login)
    options = list(args.options)
    if args.family:
        options.append(f"AddressFamily={args.family}")
    if args.gateway:
        options.append("GatewayPorts=yes")
    try:
        forwards = [parse_forward("local", spec) for spec in args.local]
        settings = parse_client_config(
            host,
            config_file=args.config,
            options=options,
            user=user,
            port=args.port,
            identity_files=args.identities,
            forwards=forwards,
        )
        return asyncio.run(_session(settings, args.no_command, args.command, args.background))
    except (ConfigError, ForwardSpecError) as exc:
        print(f"{PROG}: {exc}" if not str(exc).startswith(("Bad ", "/")) else str(exc), file=sys.stderr)
        return EXIT_FAILURE
    except _Fatal as exc:
        if str(exc):
            print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
