"""Cipher and MAC pairs that the packet layer cannot build are refused."""

from __future__ import annotations

import pytest

from hashike.proto.ciphers import make_opener, make_sealer

KEY, IV, MAC_KEY = bytes(32), bytes(16), bytes(64)


@pytest.mark.parametrize(
    ("cipher", "mac"),
    [
        ("aes128-ctr", None),  # CTR needs a MAC (RFC 4253 §6.4)
        ("aes128-ctr", "hmac-sha1"),  # no SHA-1, no non-EtM MAC
        ("aes256-cbc", "hmac-sha2-256-etm@openssh.com"),  # no CBC
        ("none", None),
    ],
)
def test_unsupported_pairs_are_refused(cipher: str, mac: str | None) -> None:
    for make in (make_sealer, make_opener):
        with pytest.raises(ValueError, match=f"unsupported cipher/MAC pair {cipher}/{mac}"):
            make(cipher, mac, KEY, IV, MAC_KEY)
