"""Algorithm names and the transport settings both sides of the core take.

The defaults follow the brief's security rules: no CBC, no SHA-1, no
non-EtM MACs, strict kex always on. Names that are *supported* but not
*default* can be enabled by configuration (``+name`` in sshd/ssh syntax).
"""

from __future__ import annotations

from dataclasses import dataclass

from hashike.proto.certs import CERT_ALGORITHMS

__all__ = [
    "DEFAULT_CIPHERS",
    "DEFAULT_HOST_KEY_ALGORITHMS",
    "DEFAULT_KEX",
    "DEFAULT_MACS",
    "HOST_CERTIFICATE_ALGORITHMS",
    "SUPPORTED_CIPHERS",
    "SUPPORTED_HOST_KEY_ALGORITHMS",
    "SUPPORTED_KEX",
    "SUPPORTED_MACS",
    "TransportConfig",
    "apply_algorithm_spec",
]

DEFAULT_KEX: tuple[str, ...] = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)
SUPPORTED_KEX: tuple[str, ...] = (*DEFAULT_KEX, "ecdh-sha2-nistp256")

# Certificate algorithms first, as OpenSSH orders them (PROTOCOL.certkeys): a
# server only offers those it holds a certificate for, and a client that
# cannot verify the certificate falls back to the plain key inside it.
HOST_CERTIFICATE_ALGORITHMS: tuple[str, ...] = tuple(CERT_ALGORITHMS)
# The plain signature algorithms (also what server-sig-algs lists).
SUPPORTED_HOST_KEY_ALGORITHMS: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
DEFAULT_HOST_KEY_ALGORITHMS = (*HOST_CERTIFICATE_ALGORITHMS, *SUPPORTED_HOST_KEY_ALGORITHMS)

# AES-GCM first: one primitive call per packet, against four for the SSH
# flavour of ChaCha20-Poly1305, which is slow at small packets.
DEFAULT_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
SUPPORTED_CIPHERS = DEFAULT_CIPHERS

DEFAULT_MACS: tuple[str, ...] = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
SUPPORTED_MACS = DEFAULT_MACS

GiB = 1 << 30


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """What one side offers and how it behaves; shared by client and server."""

    kex_algorithms: tuple[str, ...] = DEFAULT_KEX
    host_key_algorithms: tuple[str, ...] = DEFAULT_HOST_KEY_ALGORITHMS
    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    macs: tuple[str, ...] = DEFAULT_MACS
    # RFC 4253 §9 recommends rekeying after 1 GB or 1 hour.
    rekey_bytes: int = GiB
    rekey_seconds: float = 3600.0
    # Our identification line's software version (RFC 4253 §4.2).
    software_version: str = "hashike_0.1"


def apply_algorithm_spec(spec: str, defaults: tuple[str, ...], supported: tuple[str, ...]) -> tuple[str, ...]:
    """Apply an ssh_config/sshd_config algorithm list: ``a,b``, ``+a`` (append),
    ``-a`` (remove) or ``^a`` (prepend), as ssh_config(5) documents.

    Raises ValueError naming the first unsupported algorithm.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("empty algorithm list")
    mode = spec[0] if spec[0] in "+-^" else ""
    names = [n for n in (spec[1:] if mode else spec).split(",") if n]
    if mode != "-":
        for name in names:
            if name not in supported:
                raise ValueError(f"unsupported algorithm '{name}'")
    if mode == "+":
        return (*defaults, *(n for n in names if n not in defaults))
    if mode == "^":
        return (*names, *(n for n in defaults if n not in names))
    if mode == "-":
        result = tuple(n for n in defaults if n not in names)
        if not result:
            raise ValueError("algorithm list is empty after removals")
        return result
    return tuple(dict.fromkeys(names))
