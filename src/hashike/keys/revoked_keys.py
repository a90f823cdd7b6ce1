"""sshd's RevokedKeys file: an OpenSSH KRL (``ssh-keygen -k``) or a list of
public keys, one a line, as sshd_config(5) describes it.

The file is read bounded at each check, so that a new list applies without a
restart. A KRL is recognised by its magic and parsed by
:func:`hashike.proto.krl.parse_krl`; anything else is a key list, where a
certificate is revoked if its own key or its CA's key is listed (sshd's
sshkey_in_file with the CA checked). A file that cannot be read or parsed
revokes every key: sshd, too, refuses a login it cannot check.
"""

from __future__ import annotations

import os

from hashike.keys.textfile import iter_lines, read_bounded
from hashike.proto.certs import Certificate, public_key_from_openssh_line
from hashike.proto.hostkey import KeyFormatError, PublicKey
from hashike.proto.krl import KRL_MAGIC, MAX_KRL_SIZE, KRLFormatError, parse_krl

__all__ = ["RevocationCheckError", "is_revoked"]


class RevocationCheckError(Exception):
    """The revoked keys file cannot be read or understood."""


def _listed(data: bytes, key: PublicKey) -> bool:
    wanted = {key.blob}
    if isinstance(key, Certificate):
        wanted |= {key.key.blob, key.signature_key.blob}
    for raw in iter_lines(data):
        line = raw.decode("utf-8", "replace").strip()
        if not line or line.startswith("#"):
            continue
        try:
            listed = public_key_from_openssh_line(line)[0]
        except KeyFormatError:
            continue  # sshd skips lines it cannot read
        if listed.blob in wanted or (isinstance(listed, Certificate) and listed.key.blob in wanted):
            return True
    return False


def is_revoked(path: str | os.PathLike[str], key: PublicKey) -> bool:
    """Does the RevokedKeys file at ``path`` revoke ``key``? Raises
    :class:`RevocationCheckError` when it cannot tell (the caller refuses)."""
    try:
        data, more = read_bounded(path, MAX_KRL_SIZE)
    except OSError as exc:
        raise RevocationCheckError(exc.strerror or str(exc)) from exc
    if more:
        raise RevocationCheckError(f"larger than {MAX_KRL_SIZE} bytes")
    if data.startswith(KRL_MAGIC):
        try:
            return parse_krl(data).revokes(key)
        except KRLFormatError as exc:
            raise RevocationCheckError(str(exc)) from exc
    return _listed(data, key)
