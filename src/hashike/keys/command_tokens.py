"""sshd's tokens in an AuthorizedKeysCommand line (sshd_config(5) TOKENS):
``%u`` the login name, ``%h`` the home directory, ``%t`` the key type,
``%k`` the key in base64, ``%f`` its fingerprint, ``%%`` a percent sign.
A command without arguments gets the login name as its only one."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from hashike.proto.hostkey import PublicKey

__all__ = ["check_tokens", "expand_command"]

_TOKENS = frozenset("uhtkf%")
_TOKEN = re.compile(r"%(.)", re.S)


def check_tokens(argv: Sequence[str]) -> None:
    """ValueError naming a token sshd would not expand here (checked at startup)."""
    for arg in argv:
        index = 0
        while (index := arg.find("%", index)) >= 0:
            token = arg[index + 1 : index + 2]
            if token not in _TOKENS:
                raise ValueError(f"AuthorizedKeysCommand: unknown token %{token} in {arg!r}")
            index += 2


def expand_command(argv: Sequence[str], *, user: str, home: str, key: PublicKey) -> list[str]:
    """The command line with the tokens replaced."""
    check_tokens(argv)
    values = {
        "u": user,
        "h": home,
        "t": key.key_type,
        "k": base64.b64encode(key.blob).decode("ascii"),
        "f": key.fingerprint(),
        "%": "%",
    }
    # One pass, so that no value is itself expanded.
    expanded = [_TOKEN.sub(lambda match: values[match.group(1)], arg) for arg in argv]
    return expanded if len(expanded) > 1 else [*expanded, user]
